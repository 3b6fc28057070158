//! Configuration: `config/topics.yaml` (what topics exist) and `config/k2.toml` (how this
//! process runs). Every error names the file, the key path and what was expected.

mod calendar;
mod error;
mod process;
mod secret;
mod topics;

pub use calendar::TradingSessions;
pub use error::ConfigError;
pub use process::{
    CatalogConfig, CommitPolicy, GroupProtocol, K2Config, KafkaConfig, LogConfig, LogFormat,
    MaintenanceConfig, MetricsConfig, QueryConfig, S3Config, SchemaRegistryConfig, SchemasConfig,
    SinkConfig, SubscriptionConfig, WarehouseConfig, is_config_override,
};
pub use secret::{Properties, RedactedUrl, Secret};
pub use topics::{
    AssetClassSpec, Compatibility, DataTypeSpec, Defaults, ExchangeSpec, SchemaRegistryPolicy,
    TopicSpec, TopicsConfig, TradingHours,
};
