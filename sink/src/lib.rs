//! k2-sink: Kafka exchange topics into day-partitioned Iceberg tables, exactly once.
//!
//! Data flows one way through stages, each a type with its own state:
//! consume ([`consumer`], starting each partition where [`resume`] finds) → decode ([`decoding`], over [`decoder`]) → validate
//! ([`validation`]) → check sequences ([`sequence_check`], over [`sequence`]) → buffer
//! ([`buffer`]) → write ([`writer`]) → commit ([`commit`]: offsets in the table's own
//! history, [`offsets`], through [`pinned_catalog`]) → acknowledge (the loop in [`ingest`]
//! commits the offsets to the consumer group). What one cycle carries is in [`job`].
//! Records that fail decoding or validation go to [`dead_letters`]. Table layout lives in
//! [`table`], metrics in [`instrumentation`].

pub mod buffer;
pub mod commit;
pub mod consumer;
pub mod dead_letters;
pub mod decoder;
pub mod decoding;
pub mod ingest;
pub mod instrumentation;
pub mod job;
pub mod offsets;
pub mod pinned_catalog;
pub mod resume;
pub mod sequence;
pub mod sequence_check;
pub mod stages;
pub mod table;
pub mod validation;
pub mod writer;
