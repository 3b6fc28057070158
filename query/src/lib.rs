//! k2-query: questions over K2's Iceberg tables with DuckDB, pinned to snapshots.
//!
//! The route (docs/decisions.md, ADR-11): iceberg-rust plans each scan from the Iceberg
//! metadata of the pinned snapshot (partition pruning by day and exchange, file pruning by
//! column statistics), and DuckDB reads exactly the planned Parquet files with
//! `read_parquet`. No DuckDB extension is needed for local warehouses, and the result is
//! the same for every table format detail DuckDB's own Iceberg reader might handle
//! differently.
//!
//! [`Lakehouse`] connects to the catalog; [`Pin`] says which instant to read;
//! [`Session`] is a read-only DuckDB connection with views `trades`, `quotes`,
//! `reference_data`, `sequence_events` and `bars_1m` bound to the pinned snapshots; [`ohlcv`] builds
//! bars, from the one-minute bars table where it holds what the pinned trades hold
//! ([`bars`]); [`markouts`] marks each trade to the market some time later; [`rows`] turns
//! results into typed rows.

pub mod bars;
pub mod error;
pub mod instant;
pub mod lakehouse;
pub mod markouts;
pub mod ohlcv;
pub mod plan;
pub mod questions;
pub mod range;
pub mod rows;
pub mod session;
pub mod snapshot;
mod storage;
pub mod trading_session;

pub use bars::OhlcvSources;
pub use error::{QueryError, Result};
pub use lakehouse::Lakehouse;
pub use markouts::{Horizon, MarkoutPrice, MarkoutRequest};
pub use ohlcv::{Bar, Fill, Interval, OhlcvRequest, TimeZoneChoice};
pub use range::Range;
pub use session::Session;
pub use snapshot::{Pin, Pinned, SnapshotInfo};
pub use trading_session::SessionChoice;

/// Tables the query module knows, in `market_data`.
pub use k2_common::data_type::TABLES;
