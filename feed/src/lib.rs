//! k2-feed: exchange market data into Kafka, synthetic or replayed from the ASX sample,
//! in the Confluent wire format with the project's schemas, with optional faults.
//!
//! Events flow one way: source ([`synthetic`], [`asx`]) → [`faults`] → [`sender`]
//! (encode, pace, produce, report).

pub mod asx;
pub mod event;
pub mod faults;
pub mod sender;
pub mod synthetic;
