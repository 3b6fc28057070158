//! K2's table format: everything about the Iceberg tables K2 writes that does not depend on
//! where the rows come from. The sink (which consumes Kafka), table maintenance, the admin
//! tool and the query library all read and write the tables through this crate, and none of
//! it needs a Kafka client.
//!
//! - [`layout`]: the tables — schema (from Avro, plus the lineage columns), partitioning by
//!   `day(exchange_timestamp)` and exchange, sort order — and their idempotent creation and
//!   evolution;
//! - [`lineage`]: the lineage columns every row carries and the filters built on them;
//! - [`offsets`]: the Kafka offsets a table records in its own history, which make the
//!   sink exactly-once, and how they are read back;
//! - [`writer`]: sorted, zstd Parquet data files with the properties K2 chose (ADR-21);
//! - [`retention`]: how long history is kept — a window of snapshots plus end-of-day
//!   tags — and what an expiry leaves unreferenced;
//! - [`stage`]: snapshots staged from iceberg-rust's manifest writers (append with manifest
//!   merging, replace);
//! - [`commit`]: committing staged updates through the catalog's own compare-and-swap;
//! - [`bars`]: one-minute bars folded from a day of trades, and the fingerprint that ties
//!   them to the trades files they describe.

pub mod bars;
pub mod clock;
pub mod commit;
pub mod layout;
pub mod lineage;
pub mod offsets;
pub mod retention;
pub mod stage;
pub mod writer;

#[doc(hidden)]
pub use fail as __fail;

/// True if a test armed the fail point `name` (always false without the `failpoints`
/// feature: production builds never look).
#[doc(hidden)]
pub fn __armed(name: &str) -> bool {
    cfg!(feature = "failpoints") && fail::list().iter().any(|(n, _)| n == name)
}

/// A named point where a test can make this process stop (`FAILPOINTS=<name>=sleep(60000)`,
/// then kill -9): logged when reached, so the test knows where it stopped. Inert unless the
/// `failpoints` feature is on (only the tests turn it on) and `FAILPOINTS` arms it.
#[macro_export]
macro_rules! fail_point {
    ($name:literal) => {
        if $crate::__armed($name) {
            ::tracing::info!(fail_point = $name, "at a fail point");
        }
        $crate::__fail::fail_point!($name);
    };
    ($name:literal, $e:expr) => {
        $crate::__fail::fail_point!($name, $e);
    };
}
