//! k2-sink: Kafka exchange topics into day-partitioned Iceberg tables, exactly once.
//!
//! Data flows one way through stages, one module each:
//! consume → decode ([`serialization`]) → check ([`validation`]) → buffer ([`buffer`]) →
//! write ([`writer`]) → commit (offsets in the table's own history, [`offsets`]) →
//! acknowledge (Kafka offset commit). Records that fail decode or check go to
//! [`dead_letters`]. Table layout lives in [`table`], metrics in [`instrumentation`].

pub mod buffer;
pub mod commit;
pub mod consumer;
pub mod dead_letters;
pub mod ingest;
pub mod instrumentation;
pub mod offsets;
pub mod sequence;
pub mod serialization;
pub mod table;
pub mod validation;
pub mod writer;
