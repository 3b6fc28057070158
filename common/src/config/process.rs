//! `config/k2.toml`: how one K2 process runs. Every key has a default, every key can be
//! overridden by an environment variable (`K2_SECTION__KEY`, e.g.
//! `K2_KAFKA__BOOTSTRAP_SERVERS`), and relative paths resolve against the config file's
//! directory (`state_dir`, `topics_file`, `schemas.dir`) or against the state directory
//! (catalog database, warehouse), so moving all state is a one-line change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use path_clean::PathClean;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Properties, RedactedUrl, Secret};
use crate::subscription::SubscriptionFilter;

/// Environment variables with this prefix override config keys; `__` separates levels.
pub const ENV_PREFIX: &str = "K2_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K2Config {
    /// Where all local state lives: catalog database, warehouse, service data.
    pub state_dir: PathBuf,
    pub topics_file: PathBuf,
    pub schemas: SchemasConfig,
    pub kafka: KafkaConfig,
    pub subscription: SubscriptionConfig,
    pub catalog: CatalogConfig,
    pub warehouse: WarehouseConfig,
    pub schema_registry: Option<SchemaRegistryConfig>,
    pub sink: SinkConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub query: QueryConfig,
    pub maintenance: MaintenanceConfig,
    /// The file this was loaded from (not a key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for K2Config {
    fn default() -> Self {
        K2Config {
            state_dir: ".k2".into(),
            topics_file: "topics.yaml".into(),
            schemas: SchemasConfig::default(),
            kafka: KafkaConfig::default(),
            subscription: SubscriptionConfig::default(),
            catalog: CatalogConfig::default(),
            warehouse: WarehouseConfig::default(),
            schema_registry: None,
            sink: SinkConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            query: QueryConfig::default(),
            maintenance: MaintenanceConfig::default(),
            source: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// Directory of `.avsc` files (relative to the config file).
    pub dir: PathBuf,
    /// Without a Schema Registry: writer schema id → `.avsc` file under `dir`. Producers
    /// frame records with these ids and the sink resolves them here. (Keys are strings in
    /// TOML; [`SchemasConfig::ids`] parses them.)
    #[serde(rename = "ids")]
    pub id_files: BTreeMap<String, PathBuf>,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        SchemasConfig {
            dir: "../schemas".into(),
            id_files: BTreeMap::from([
                ("1".into(), "trade.avsc".into()),
                ("2".into(), "quote.avsc".into()),
                ("3".into(), "reference_data.avsc".into()),
            ]),
        }
    }
}

impl SchemasConfig {
    /// Schema id → absolute `.avsc` path (ids validated at load).
    pub fn ids(&self) -> BTreeMap<u32, PathBuf> {
        self.id_files
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, self.dir.join(v))))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    /// The consumer group protocol the sink joins with.
    pub group_protocol: GroupProtocol,
    /// Any librdkafka property, passed through as is (SASL/SSL settings go here).
    pub properties: Properties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "k2-iceberg-writer".into(),
            group_protocol: GroupProtocol::default(),
            properties: Properties::default(),
        }
    }
}

/// Kafka's consumer group protocols (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// The classic protocol: the members assign partitions among themselves
    /// (cooperative-sticky); works with every broker.
    #[default]
    Classic,
    /// KIP-848 (Kafka ≥ 4.0): the broker assigns partitions and rebalances incrementally
    /// without stopping the group; session timeout and heartbeat interval are the
    /// broker's `group.consumer.*` settings.
    Consumer,
}

impl GroupProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl KafkaConfig {
    /// Client properties common to every K2 Kafka client: bootstrap servers plus the
    /// pass-through properties (which win, so any default can be overridden).
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::from([(
            "bootstrap.servers".to_string(),
            self.bootstrap_servers.clone(),
        )]);
        for (k, v) in self.properties.iter() {
            out.insert(k.to_string(), v.to_string());
        }
        out
    }
}

/// Which topics the sink reads; empty lists mean all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionConfig {
    #[serde(flatten)]
    pub filter: SubscriptionFilter,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CatalogConfig {
    /// Iceberg SQL catalog on SQLite (`sqlite:<path>`, path relative to `state_dir`) or
    /// PostgreSQL (`postgres://...`).
    Sql {
        #[serde(default = "default_catalog_name")]
        name: String,
        uri: RedactedUrl,
        #[serde(default)]
        properties: Properties,
    },
    /// Iceberg REST catalog.
    Rest {
        #[serde(default = "default_catalog_name")]
        name: String,
        uri: String,
        /// OAuth2 client credential `id:secret`, if the catalog wants one.
        #[serde(default)]
        credential: Option<Secret>,
        /// The catalog's warehouse name (e.g. `s3://warehouse`); defaults to
        /// `warehouse.location`.
        #[serde(default)]
        warehouse: Option<String>,
        #[serde(default)]
        properties: Properties,
    },
}

fn default_catalog_name() -> String {
    "k2".into()
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig::Sql {
            name: default_catalog_name(),
            uri: RedactedUrl::new("sqlite:catalog.db"),
            properties: Properties::default(),
        }
    }
}

impl CatalogConfig {
    pub fn name(&self) -> &str {
        match self {
            CatalogConfig::Sql { name, .. } | CatalogConfig::Rest { name, .. } => name,
        }
    }

    /// Where the catalog is, for error messages (passwords redacted).
    pub fn display_uri(&self) -> String {
        match self {
            CatalogConfig::Sql { uri, .. } => uri.redacted(),
            CatalogConfig::Rest { uri, .. } => uri.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseConfig {
    /// A directory (relative to `state_dir`, or `file:///abs`) or `s3://bucket/prefix`.
    pub location: String,
    pub s3: Option<S3Config>,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig {
            location: "warehouse".into(),
            s3: None,
        }
    }
}

impl WarehouseConfig {
    pub fn is_s3(&self) -> bool {
        self.location.starts_with("s3://") || self.location.starts_with("s3a://")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server; omit for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub commit: CommitPolicy,
    pub dead_letter_topic: String,
    /// Records stamped before this instant are rejected as implausible.
    pub min_timestamp: chrono::DateTime<chrono::Utc>,
    /// Records stamped further than this ahead of the sink's clock are rejected.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Instruments whose last sequence number the sink remembers (LRU); beyond it the
    /// least recently seen is forgotten and reported `first_seen` when it returns.
    pub sequence_tracker_capacity: usize,
    /// On assignment the tracker learns each instrument's last committed sequence number
    /// from rows ingested within this window before the table's last commit.
    #[serde(with = "humantime_serde")]
    pub sequence_warmup: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            commit: CommitPolicy::default(),
            dead_letter_topic: "market.dlq".into(),
            min_timestamp: "1990-01-01T00:00:00Z".parse().expect("constant"),
            max_clock_skew: Duration::from_secs(86_400),
            sequence_tracker_capacity: 10_000,
            sequence_warmup: Duration::from_secs(600),
        }
    }
}

/// When buffered records are written and committed: whichever limit is reached first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitPolicy {
    pub max_records: u64,
    pub max_bytes: ByteSize,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            max_records: 500_000,
            max_bytes: ByteSize::mib(128),
            interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus scrape address (also `/healthz` and `/readyz`); omit to disable.
    pub address: Option<SocketAddr>,
    /// `/readyz` fails while a record has waited this long beyond `sink.commit.interval`
    /// for its commit.
    #[serde(with = "humantime_serde")]
    pub ready_commit_window: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: Some(([127, 0, 0, 1], 9464).into()),
            ready_commit_window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text for a person at a terminal, JSON for anything else (files, journald, a
    /// container's log collector).
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `k2_sink=debug,info`); `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Where DuckDB finds its extensions (`<dir>/v1.5.5/linux_amd64/httpfs.duckdb_extension`;
    /// relative to the config file's directory). Only an S3 warehouse needs one (httpfs).
    /// Unset: the directory scripts/bootstrap fills beside the linked libduckdb.
    pub duckdb_extension_dir: Option<PathBuf>,
}

/// Table maintenance (`k2-admin maintain`): how long snapshots stay readable, when an
/// unreferenced file may be deleted, when a day is closed for compaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// The window of ordinary snapshots: snapshots older than this are expired (a backtest
    /// pinned to an instant inside it still reproduces; before it, the ends of days do,
    /// through their end-of-day tags). The sink expires its own tables' snapshots by this
    /// policy as it commits; `k2-admin maintain expire` applies the same.
    #[serde(with = "humantime_serde")]
    pub snapshot_retention: Duration,
    /// The most ordinary snapshots a table keeps in that window: the window ends at
    /// whichever bound comes first. Every commit reads and rewrites the table's metadata,
    /// which holds each snapshot's offsets (~1.5 kB), so a bound in snapshots keeps that
    /// cost the same at any commit rate. The default, 360, is the 1-h window at the
    /// default 10-s interval (~550 kB of metadata); at 1-s commits it keeps 6 minutes.
    pub max_snapshots: usize,
    /// Snapshots kept whatever their age (the newest of each table).
    pub min_snapshots: usize,
    /// Tag each table's last snapshot of every UTC day (`eod-2026-12-07`), so `as_of` the
    /// end of any day keeps resolving after its ordinary snapshots have expired.
    pub end_of_day_tags: bool,
    /// How long end-of-day tags are kept (their Iceberg `max-ref-age-ms`, which every engine
    /// honours when it expires snapshots).
    #[serde(with = "humantime_serde")]
    pub tag_max_age: Duration,
    /// Files under a table that no snapshot references are deleted only once they are
    /// older than this. Writers (the sink, compaction) never commit a file older than half
    /// of it, so no file an in-flight commit is about to reference is ever deleted.
    #[serde(with = "humantime_serde")]
    pub orphan_min_age: Duration,
    /// A day partition is compacted once this long has passed since the end of its day
    /// (UTC, the partition's day): late data has stopped arriving by then.
    #[serde(with = "humantime_serde")]
    pub compact_after: Duration,
    /// Compaction rewrites a partition into files of about this size (it also bounds the
    /// rows held in memory at once: one group of input files of about this size, decoded to
    /// Arrow — several times its compressed size).
    pub target_file_size: ByteSize,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            snapshot_retention: Duration::from_secs(3600),
            max_snapshots: 360,
            min_snapshots: 10,
            end_of_day_tags: true,
            tag_max_age: Duration::from_secs(365 * 86_400),
            orphan_min_age: Duration::from_secs(3 * 86_400),
            compact_after: Duration::from_secs(6 * 3600),
            target_file_size: ByteSize::mib(256),
        }
    }
}

impl MaintenanceConfig {
    /// The oldest a data file may be when a writer commits it: half the age at which
    /// cleanup may delete unreferenced files. A writer whose files are older (a commit
    /// retried through a long outage) writes them again.
    pub fn max_uncommitted_file_age(&self) -> Duration {
        self.orphan_min_age / 2
    }
}

/// Top-level keys, so that unrelated `K2_*` variables (used by scripts) are not read as
/// configuration: derived from `K2Config` itself (its serialised fields), so a new section
/// takes its `K2_SECTION__KEY` overrides without a list to keep in step.
fn sections() -> &'static [String] {
    static SECTIONS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| match serde_json::to_value(K2Config::default()) {
            Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
            _ => Vec::new(),
        });
    &SECTIONS
}

impl K2Config {
    /// Loads `path`, applies `K2_*` environment overrides, resolves relative paths.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = ConfigError::read_file(path)?;
        Self::from_toml(&text, path)
    }

    /// The configuration in `text`, as if read from `path`: errors name `path`, relative
    /// paths resolve against its directory, `K2_*` environment overrides apply. (For
    /// settings that come from elsewhere than a file, such as the Python package's dicts.)
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // Syntax errors first, against the file alone, so the message points at the file.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError::Parse {
                file: path.to_path_buf(),
                key: "(root)".into(),
                message: e.to_string().trim().to_string(),
            });
        }
        let figment = Figment::from(Serialized::defaults(K2Config::default()))
            .merge(Toml::string(text))
            .merge(env_provider());
        let mut config: K2Config = figment.extract().map_err(|e| {
            let e = e.into_iter().next().expect("figment errors are non-empty");
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let key = e.path.join(".");
            ConfigError::Parse {
                file: if from_env {
                    PathBuf::from(format!("{} (environment K2_*)", path.display()))
                } else {
                    path.to_path_buf()
                },
                key: if key.is_empty() { "(root)".into() } else { key },
                message: e.kind.to_string(),
            }
        })?;
        config.source = Some(path.to_path_buf());
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate(path)?;
        Ok(config)
    }

    /// Makes every path absolute and clean (no `.` or `..`): K2 writes them into table
    /// locations and every file's URI, where another engine's spelling of the same file
    /// must match K2's (tools compare path prefixes). The config's own directory is
    /// resolved by the file system (it exists; a symlink there is followed), what the
    /// config adds to it lexically.
    fn resolve_paths(&mut self, base: &Path) {
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let base = base
            .canonicalize()
            .or_else(|_| std::path::absolute(base))
            .unwrap_or_else(|_| base.to_path_buf());
        let abs = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.clean()
            } else {
                base.join(p).clean()
            }
        };
        self.state_dir = abs(&self.state_dir);
        self.topics_file = abs(&self.topics_file);
        self.schemas.dir = abs(&self.schemas.dir);
        if let Some(dir) = &self.query.duckdb_extension_dir {
            self.query.duckdb_extension_dir = Some(abs(dir));
        }
        if let CatalogConfig::Sql { uri, .. } = &mut self.catalog
            && let Some(rest) = uri.expose().strip_prefix("sqlite:")
        {
            let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
            let file = file.trim_start_matches("//");
            if !file.is_empty() && file != ":memory:" {
                let p = Path::new(file);
                let p = if p.is_absolute() {
                    p.clean()
                } else {
                    self.state_dir.join(p).clean()
                };
                // rwc: create the database on first use (sqlx opens read-write only).
                let query = if query.is_empty() {
                    "mode=rwc".to_string()
                } else {
                    query.to_string()
                };
                *uri = RedactedUrl::new(format!("sqlite:{}?{query}", p.display()));
            }
        }
        let loc = &self.warehouse.location;
        if let Some(dir) = loc.strip_prefix("file://") {
            self.warehouse.location = format!("file://{}", Path::new(dir).clean().display());
        } else if !loc.contains("://") {
            let p = Path::new(loc);
            let p = if p.is_absolute() {
                p.clean()
            } else {
                self.state_dir.join(p).clean()
            };
            self.warehouse.location = format!("file://{}", p.display());
        }
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, expected: &str, found: String| {
            Err(ConfigError::invalid(file, key, expected, found))
        };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return invalid(
                "kafka.bootstrap_servers",
                "host:port[,host:port...]",
                "an empty string".into(),
            );
        }
        if self.kafka.group_id.trim().is_empty() {
            return invalid(
                "kafka.group_id",
                "a consumer group id",
                "an empty string".into(),
            );
        }
        for key in [
            "enable.auto.commit",
            "group.id",
            "bootstrap.servers",
            "group.protocol",
        ] {
            if self.kafka.properties.get(key).is_some() {
                return invalid(
                    &format!("kafka.properties.\"{key}\""),
                    "no such property: K2 sets it itself (use the kafka section's own keys)",
                    "it set".into(),
                );
            }
        }
        // Exactly-once depends on these: a partition the tables have never seen starts at
        // its beginning (not at the end, skipping what is there), and records of aborted
        // transactions are never read. Any other value is refused, not silently ignored.
        for (key, required) in [
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            ("enable.auto.offset.store", "false"),
        ] {
            if let Some(value) = self.kafka.properties.get(key)
                && value != required
            {
                return invalid(
                    &format!("kafka.properties.\"{key}\""),
                    &format!("\"{required}\" or nothing: K2's exactly-once depends on it"),
                    format!("\"{value}\""),
                );
            }
        }
        if self.kafka.group_protocol == GroupProtocol::Consumer {
            // librdkafka refuses these with the KIP-848 protocol; say so at load, naming
            // the key, rather than when the consumer is created.
            for (key, instead) in [
                (
                    "session.timeout.ms",
                    "the broker's group.consumer.session.timeout.ms",
                ),
                (
                    "heartbeat.interval.ms",
                    "the broker's group.consumer.heartbeat.interval.ms",
                ),
                ("partition.assignment.strategy", "group.remote.assignor"),
            ] {
                if self.kafka.properties.get(key).is_some() {
                    return invalid(
                        &format!("kafka.properties.\"{key}\""),
                        &format!(
                            "no such property with kafka.group_protocol = \"consumer\" \
                             (use {instead})"
                        ),
                        "it set".into(),
                    );
                }
            }
        }
        for key in self.schemas.id_files.keys() {
            if key.parse::<u32>().is_err() {
                return invalid(
                    &format!("schemas.ids.{key}"),
                    "a numeric schema id such as 1",
                    format!("`{key}`"),
                );
            }
        }
        let c = &self.sink.commit;
        if c.max_records == 0 {
            return invalid("sink.commit.max_records", "at least 1", "0".into());
        }
        if c.max_bytes.as_u64() < 1024 {
            return invalid(
                "sink.commit.max_bytes",
                "at least 1 KiB",
                c.max_bytes.to_string(),
            );
        }
        if c.interval.is_zero() {
            return invalid(
                "sink.commit.interval",
                "a positive duration such as 10s",
                "0s".into(),
            );
        }
        if self.sink.dead_letter_topic.trim().is_empty() {
            return invalid(
                "sink.dead_letter_topic",
                "a topic name",
                "an empty string".into(),
            );
        }
        let m = &self.maintenance;
        if m.snapshot_retention < c.interval {
            return invalid(
                "maintenance.snapshot_retention",
                &format!(
                    "a window at least as long as sink.commit.interval ({}): shorter, a \
                     snapshot would expire before the next one is committed",
                    humantime::format_duration(c.interval)
                ),
                humantime::format_duration(m.snapshot_retention).to_string(),
            );
        }
        if m.end_of_day_tags && m.tag_max_age < m.snapshot_retention {
            return invalid(
                "maintenance.tag_max_age",
                &format!(
                    "at least maintenance.snapshot_retention ({}): end-of-day tags outlive \
                     the window of ordinary snapshots",
                    humantime::format_duration(m.snapshot_retention)
                ),
                humantime::format_duration(m.tag_max_age).to_string(),
            );
        }
        if m.min_snapshots == 0 {
            return invalid(
                "maintenance.min_snapshots",
                "at least 1 (a table's current snapshot is always kept)",
                "0".into(),
            );
        }
        if m.max_snapshots < m.min_snapshots {
            return invalid(
                "maintenance.max_snapshots",
                &format!(
                    "at least maintenance.min_snapshots ({}): the window cannot keep fewer \
                     snapshots than are kept whatever their age",
                    m.min_snapshots
                ),
                m.max_snapshots.to_string(),
            );
        }
        if m.orphan_min_age < Duration::from_secs(2) {
            return invalid(
                "maintenance.orphan_min_age",
                "a duration of at least 2s (hours or days in production: longer than any \
                 commit takes)",
                format!("{:?}", m.orphan_min_age),
            );
        }
        if m.target_file_size.as_u64() < 1024 * 1024 {
            return invalid(
                "maintenance.target_file_size",
                "at least 1 MiB (e.g. \"256 MiB\")",
                m.target_file_size.to_string(),
            );
        }
        let loc = &self.warehouse.location;
        if !(loc.starts_with("file://") || self.warehouse.is_s3()) {
            return invalid(
                "warehouse.location",
                "a path, file:///path or s3://bucket/prefix",
                format!("`{loc}`"),
            );
        }
        match &self.catalog {
            CatalogConfig::Sql { uri, .. } => {
                let u = uri.expose();
                if !(u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://"))
                {
                    return invalid(
                        "catalog.uri",
                        "sqlite:<path> or postgres://user:password@host/db",
                        format!("`{}`", uri.redacted()),
                    );
                }
            }
            CatalogConfig::Rest { uri, .. } => {
                if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                    return invalid("catalog.uri", "an http(s):// URL", format!("`{uri}`"));
                }
            }
        }
        if let Some(r) = &self.schema_registry
            && !(r.url.starts_with("http://") || r.url.starts_with("https://"))
        {
            return invalid(
                "schema_registry.url",
                "an http(s):// URL",
                format!("`{}`", r.url),
            );
        }
        Ok(())
    }

    /// The configuration as TOML with every secret redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The state directory's subdirectory for this service or purpose.
    pub fn state_path(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }
}

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or("");
        sections().iter().any(|s| s.eq_ignore_ascii_case(top))
    })
}

/// Whether the environment variable `name` overrides a configuration key (`K2_` and a
/// top-level key such as `KAFKA__…`). Other `K2_*` variables are left to scripts and
/// command lines, so a misspelt section would be ignored silently: deployments check
/// their variables with this.
pub fn is_config_override(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX).is_some_and(|rest| {
        let top = rest.split("__").next().unwrap_or("");
        sections().iter().any(|s| s.eq_ignore_ascii_case(top))
    })
}

#[cfg(test)]
mod override_tests {
    use super::is_config_override;

    #[test]
    fn every_section_of_the_config_takes_overrides() {
        // Each top-level field of K2Config, and nothing else, is a section.
        for section in super::sections() {
            assert!(
                is_config_override(&format!("K2_{}__X", section.to_uppercase())),
                "{section}"
            );
        }
        assert!(super::sections().iter().any(|s| s == "maintenance"));
        assert!(super::sections().iter().any(|s| s == "schema_registry"));
        assert!(
            !super::sections().iter().any(|s| s == "source"),
            "not a key"
        );
    }

    #[test]
    fn only_variables_naming_a_section_are_overrides() {
        assert!(is_config_override("K2_KAFKA__BOOTSTRAP_SERVERS"));
        assert!(is_config_override("K2_STATE_DIR"));
        assert!(is_config_override("K2_WAREHOUSE__S3__ENDPOINT"));
        assert!(!is_config_override("K2_CONFIG"));
        assert!(!is_config_override("K2_KAFKAA__BOOTSTRAP_SERVERS"));
        assert!(!is_config_override("KAFKA__BOOTSTRAP_SERVERS"));
    }
}
