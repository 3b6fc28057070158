//! K2 administration: topics (`plan`/`apply` against the broker) and schema registration.

pub mod broker;
pub mod schemas;
pub mod topics;
