//! K2's shared foundation: configuration, topic naming and subscriptions, the Avro schemas,
//! the Schema Registry client, catalog connection, logging, serving metrics and health, and
//! the retry policy.

pub mod catalog;
pub mod config;
pub mod data_type;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod records;
pub mod registry;
pub mod report;
pub mod retry;
pub mod schema;
pub mod startup;
pub mod subscription;
pub mod topic;
pub mod warehouse;

pub use config::{ConfigError, K2Config, TopicsConfig};
pub use data_type::DataType;
pub use subscription::{Subscription, SubscriptionFilter};
pub use topic::TopicName;

/// The version every K2 binary reports (and stamps into dead letters and snapshots).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit it was built from (see `common/build.rs`).
pub const COMMIT: &str = env!("K2_COMMIT");
