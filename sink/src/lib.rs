//! k2-sink: Kafka exchange topics into day-partitioned Iceberg tables, exactly once.
//!
//! Data flows one way through stages, each a type with its own state:
//! consume ([`consumer`], starting each partition where [`resume`] finds) → decode
//! ([`decode`], over the Avro engine in [`decode::avro`]) → validate ([`validation`]) →
//! check sequences ([`check`], over the tracker in [`check::tracker`]) → buffer
//! ([`buffer`]) → write and commit ([`commit`]: one fenced append loop for every table,
//! offsets recorded in the table's own history) → acknowledge (the loop in [`ingest`]
//! commits the offsets to the consumer group). What one cycle carries is in [`job`], what
//! the loop knows of each partition in [`partition`]; [`recorded`] reads the offsets a
//! table recorded for both the rebalance callback and [`resume`]. Records that fail decoding or
//! validation go to [`dead_letters`]; metrics and health are in [`instrumentation`].
//!
//! The table format itself (layouts, Parquet files, recorded offsets) is the `k2-table`
//! crate: this crate only adds what consuming Kafka needs.

pub mod buffer;
pub mod check;
pub mod commit;
pub mod consumer;
pub mod dead_letters;
pub mod decode;
pub mod ingest;
pub mod instrumentation;
pub mod job;
pub mod once;
pub mod partition;
pub mod recorded;
pub mod resume;
pub mod stages;
pub mod validation;
