//! `config/topics.yaml`: asset classes, their exchanges, the data types and topic defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::calendar::TradingSessions;
use crate::schema::BuiltinSchema;
use crate::subscription::Subscription;
use crate::topic::{DataType, TopicName, is_valid_segment};

/// The raw file, exactly as documented. Unknown keys are errors so typos cannot hide.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopicsFile {
    #[serde(deserialize_with = "unique_keys")]
    asset_classes: BTreeMap<String, AssetClassSpec>,
    #[serde(deserialize_with = "unique_keys")]
    data_types: BTreeMap<String, DataTypeSpec>,
    defaults: Defaults,
    schema_registry: SchemaRegistryPolicy,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssetClassSpec {
    pub description: String,
    #[serde(deserialize_with = "unique_keys")]
    pub exchanges: BTreeMap<String, ExchangeSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    pub name: String,
    pub partitions: u32,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// IANA time zone: session boundaries and exchange-local bars use it.
    pub timezone: String,
    pub trading_hours: TradingHours,
    pub description: String,
    /// The exchange's trading calendar (closed weekdays, holidays, early closes): a YAML
    /// file, relative to topics.yaml. Without one every day has a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
}

impl ExchangeSpec {
    /// The parsed time zone (validated at load, so this cannot fail on a loaded config).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().expect("validated at load")
    }
}

/// Regular session in exchange-local time, `HH:MM`; `close` may be `24:00`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TradingHours {
    pub open: String,
    pub close: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataTypeSpec {
    pub description: String,
    /// Record field whose value is the Kafka message key (and so picks the partition).
    pub partition_key: String,
    /// Avro schema name under `schemas/` (`trade` → `schemas/trade.avsc`).
    pub schema_name: String,
    /// Overrides the exchange's partition count for this data type (e.g. 1 for a
    /// compacted reference-data topic).
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Kafka topic configs applied to every topic of this data type.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
}

/// A Kafka topic config value; YAML may spell numbers and booleans bare.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ConfigValue {
    String(String),
    Int(i64),
    Bool(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::String(s) => f.write_str(s),
            ConfigValue::Int(i) => write!(f, "{i}"),
            ConfigValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub replication_factor: u16,
    pub min_insync_replicas: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryPolicy {
    pub compatibility: Compatibility,
    /// Placeholders: `{asset_class}`, `{data_type}`, `{exchange}`.
    pub subject_pattern: String,
}

/// Everything needed to create or check one Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: TopicName,
    pub partitions: u32,
    pub replication_factor: u16,
    /// Kafka topic configs, including `min.insync.replicas` from the defaults.
    pub configs: BTreeMap<String, String>,
    /// Schema Registry subject for the record values.
    pub subject: String,
    pub schema_name: String,
    pub partition_key: String,
}

/// A validated `topics.yaml`.
#[derive(Debug, Clone)]
pub struct TopicsConfig {
    file: PathBuf,
    asset_classes: BTreeMap<String, AssetClassSpec>,
    data_types: BTreeMap<DataType, DataTypeSpec>,
    defaults: Defaults,
    schema_registry: SchemaRegistryPolicy,
    /// exchange code → asset class; exchange codes are unique across asset classes so a
    /// topic's exchange segment alone identifies the venue.
    exchange_index: BTreeMap<String, String>,
    /// exchange code → its trading sessions (hours and calendar).
    sessions: BTreeMap<String, TradingSessions>,
}

const MAX_PARTITIONS: u32 = 10_000;
const SUBJECT_PLACEHOLDERS: [&str; 3] = ["{asset_class}", "{data_type}", "{exchange}"];

impl TopicsConfig {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = ConfigError::read_file(path)?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `file` is only used to locate errors.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawTopicsFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Parse {
                file: file.to_path_buf(),
                key: if key == "." { "(root)".into() } else { key },
                message: e.into_inner().to_string(),
            }
        })?;
        Validator { file }.validate(raw)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn asset_classes(&self) -> &BTreeMap<String, AssetClassSpec> {
        &self.asset_classes
    }

    /// Every exchange code with its time zone.
    pub fn timezones(&self) -> BTreeMap<String, chrono_tz::Tz> {
        self.asset_classes
            .values()
            .flat_map(|ac| {
                ac.exchanges
                    .iter()
                    .map(|(code, ex)| (code.clone(), ex.tz()))
            })
            .collect()
    }

    /// Every exchange code with its trading sessions.
    pub fn sessions(&self) -> &BTreeMap<String, TradingSessions> {
        &self.sessions
    }

    pub fn data_types(&self) -> &BTreeMap<DataType, DataTypeSpec> {
        &self.data_types
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    pub fn schema_registry(&self) -> &SchemaRegistryPolicy {
        &self.schema_registry
    }

    /// The exchange with this code and the asset class it belongs to.
    pub fn exchange(&self, code: &str) -> Option<(&str, &ExchangeSpec)> {
        let ac = self.exchange_index.get(code)?;
        Some((ac.as_str(), &self.asset_classes[ac].exchanges[code]))
    }

    /// Every topic the configuration defines, sorted by name.
    pub fn all_topics(&self) -> Vec<TopicName> {
        let mut out = Vec::new();
        for (ac, spec) in &self.asset_classes {
            for ex in spec.exchanges.keys() {
                for dt in self.data_types.keys() {
                    out.push(TopicName::new(ac, *dt, ex).expect("validated segments"));
                }
            }
        }
        out.sort();
        out
    }

    /// True if the configuration defines this exact topic.
    pub fn contains(&self, topic: &TopicName) -> bool {
        self.exchange_index
            .get(topic.exchange())
            .map(String::as_str)
            == Some(topic.asset_class())
            && self.data_types.contains_key(&topic.data_type())
    }

    /// The topic's full specification, or `None` if the configuration does not define it.
    pub fn topic_spec(&self, topic: &TopicName) -> Option<TopicSpec> {
        if !self.contains(topic) {
            return None;
        }
        let exchange = &self.asset_classes[topic.asset_class()].exchanges[topic.exchange()];
        let dt = &self.data_types[&topic.data_type()];
        let mut configs: BTreeMap<String, String> = dt
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        configs
            .entry("min.insync.replicas".into())
            .or_insert_with(|| self.defaults.min_insync_replicas.to_string());
        Some(TopicSpec {
            name: topic.clone(),
            partitions: dt.partitions.unwrap_or(exchange.partitions),
            replication_factor: self.defaults.replication_factor,
            configs,
            subject: self.subject(topic),
            schema_name: dt.schema_name.clone(),
            partition_key: dt.partition_key.clone(),
        })
    }

    /// Specifications of every configured topic, sorted by name.
    pub fn topic_specs(&self) -> Vec<TopicSpec> {
        self.all_topics()
            .iter()
            .map(|t| self.topic_spec(t).expect("configured topic"))
            .collect()
    }

    /// Schema Registry subject for a topic's values.
    pub fn subject(&self, topic: &TopicName) -> String {
        self.schema_registry
            .subject_pattern
            .replace("{asset_class}", topic.asset_class())
            .replace("{data_type}", topic.data_type().as_str())
            .replace("{exchange}", topic.exchange())
    }

    /// Resolves a subscription to concrete topics: sorted, without duplicates. Naming an
    /// exchange, asset class or topic the configuration does not define is an error, so a
    /// typo cannot silently subscribe to nothing.
    pub fn resolve(&self, subscription: &Subscription) -> Result<Vec<TopicName>, UnknownTopic> {
        let out: BTreeSet<TopicName> = match subscription {
            Subscription::Topics(list) => {
                for t in list {
                    if !self.contains(t) {
                        return Err(UnknownTopic::Topic(t.to_string()));
                    }
                }
                list.iter().cloned().collect()
            }
            Subscription::Filter(f) => {
                for ac in &f.asset_classes {
                    if !self.asset_classes.contains_key(ac) {
                        return Err(UnknownTopic::AssetClass(ac.clone()));
                    }
                }
                for ex in &f.exchanges {
                    if !self.exchange_index.contains_key(ex) {
                        return Err(UnknownTopic::Exchange(ex.clone()));
                    }
                }
                for dt in &f.data_types {
                    if !self.data_types.contains_key(dt) {
                        return Err(UnknownTopic::DataType(dt.to_string()));
                    }
                }
                self.all_topics()
                    .into_iter()
                    .filter(|t| f.matches(t))
                    .collect()
            }
        };
        Ok(out.into_iter().collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownTopic {
    #[error("asset class `{0}` is not in topics.yaml")]
    AssetClass(String),
    #[error("exchange `{0}` is not in topics.yaml")]
    Exchange(String),
    #[error("data type `{0}` is not in topics.yaml")]
    DataType(String),
    #[error("topic `{0}` is not defined by topics.yaml")]
    Topic(String),
}

struct Validator<'a> {
    file: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: String, expected: &str, found: impl std::fmt::Display) -> ConfigError {
        ConfigError::invalid(self.file, key, expected, found.to_string())
    }

    fn validate(&self, raw: RawTopicsFile) -> Result<TopicsConfig, ConfigError> {
        if raw.asset_classes.is_empty() {
            return Err(self.err("asset_classes".into(), "at least one asset class", "none"));
        }
        let mut exchange_index = BTreeMap::new();
        let mut sessions = BTreeMap::new();
        for (ac, spec) in &raw.asset_classes {
            let key = format!("asset_classes.{ac}");
            if !is_valid_segment(ac) {
                return Err(self.err(
                    key,
                    "an asset class name of lower-case letters, digits and `_`",
                    format!("`{ac}`"),
                ));
            }
            if spec.exchanges.is_empty() {
                return Err(self.err(format!("{key}.exchanges"), "at least one exchange", "none"));
            }
            for (ex, exchange) in &spec.exchanges {
                let key = format!("{key}.exchanges.{ex}");
                if !is_valid_segment(ex) {
                    return Err(self.err(
                        key,
                        "an exchange code of lower-case letters, digits and `_`, starting with a letter",
                        format!("`{ex}`"),
                    ));
                }
                if let Some(other) = exchange_index.insert(ex.clone(), ac.clone()) {
                    return Err(self.err(
                        key,
                        "exchange codes unique across asset classes",
                        format!("`{ex}` also under asset_classes.{other}"),
                    ));
                }
                let hours = self.validate_exchange(&key, exchange)?;
                sessions.insert(
                    ex.clone(),
                    TradingSessions::load(
                        self.file,
                        &format!("{key}.calendar"),
                        (exchange.tz(), hours.0, hours.1),
                        exchange.calendar.as_deref(),
                    )?,
                );
            }
        }

        let mut data_types = BTreeMap::new();
        for (name, spec) in raw.data_types {
            let key = format!("data_types.{name}");
            let Ok(dt) = name.parse::<DataType>() else {
                return Err(self.err(
                    key,
                    "a data type K2 knows (trades, quotes, reference_data)",
                    format!("`{name}`"),
                ));
            };
            self.validate_data_type(&key, &spec)?;
            data_types.insert(dt, spec);
        }
        if data_types.is_empty() {
            return Err(self.err("data_types".into(), "at least one data type", "none"));
        }

        let d = &raw.defaults;
        if d.replication_factor == 0 {
            return Err(self.err("defaults.replication_factor".into(), "at least 1", 0));
        }
        if d.min_insync_replicas == 0 || d.min_insync_replicas > d.replication_factor {
            return Err(self.err(
                "defaults.min_insync_replicas".into(),
                "between 1 and defaults.replication_factor",
                d.min_insync_replicas,
            ));
        }

        let pattern = &raw.schema_registry.subject_pattern;
        let stripped = SUBJECT_PLACEHOLDERS
            .iter()
            .fold(pattern.clone(), |s, p| s.replace(p, ""));
        if pattern.trim().is_empty() || stripped.contains('{') || stripped.contains('}') {
            return Err(self.err(
                "schema_registry.subject_pattern".into(),
                "a subject using only {asset_class}, {data_type} and {exchange}",
                format!("`{pattern}`"),
            ));
        }

        Ok(TopicsConfig {
            file: self.file.to_path_buf(),
            asset_classes: raw.asset_classes,
            data_types,
            defaults: raw.defaults,
            schema_registry: raw.schema_registry,
            exchange_index,
            sessions,
        })
    }

    /// The exchange checked; its regular hours as minutes after local midnight.
    fn validate_exchange(&self, key: &str, ex: &ExchangeSpec) -> Result<(u32, u32), ConfigError> {
        self.validate_partitions(&format!("{key}.partitions"), ex.partitions)?;
        if ex.name.trim().is_empty() {
            return Err(self.err(format!("{key}.name"), "a non-empty name", "``"));
        }
        if ex.country.len() != 2 || !ex.country.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(self.err(
                format!("{key}.country"),
                "an ISO 3166-1 alpha-2 code such as AU",
                format!("`{}`", ex.country),
            ));
        }
        if ex.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(self.err(
                format!("{key}.timezone"),
                "an IANA time zone such as Australia/Sydney",
                format!("`{}`", ex.timezone),
            ));
        }
        let open = parse_hhmm(&ex.trading_hours.open).ok_or_else(|| {
            self.err(
                format!("{key}.trading_hours.open"),
                "a time HH:MM",
                format!("`{}`", ex.trading_hours.open),
            )
        })?;
        let close = parse_hhmm(&ex.trading_hours.close).ok_or_else(|| {
            self.err(
                format!("{key}.trading_hours.close"),
                "a time HH:MM (24:00 for end of day)",
                format!("`{}`", ex.trading_hours.close),
            )
        })?;
        if close <= open {
            return Err(self.err(
                format!("{key}.trading_hours.close"),
                "a close later than the open",
                format!("`{}`", ex.trading_hours.close),
            ));
        }
        Ok((open, close))
    }

    fn validate_data_type(&self, key: &str, spec: &DataTypeSpec) -> Result<(), ConfigError> {
        if let Some(p) = spec.partitions {
            self.validate_partitions(&format!("{key}.partitions"), p)?;
        }
        let Some(schema) = BuiltinSchema::by_name(&spec.schema_name) else {
            return Err(self.err(
                format!("{key}.schema_name"),
                &format!(
                    "one of the schemas in schemas/ ({})",
                    BuiltinSchema::all().map(|s| s.name).join(", ")
                ),
                format!("`{}`", spec.schema_name),
            ));
        };
        if !schema.has_string_field(&spec.partition_key) {
            return Err(self.err(
                format!("{key}.partition_key"),
                &format!("a string field of schema `{}`", spec.schema_name),
                format!("`{}`", spec.partition_key),
            ));
        }
        for k in spec.config.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_lowercase() || c == '.') {
                return Err(self.err(
                    format!("{key}.config"),
                    "Kafka topic config names such as retention.ms",
                    format!("`{k}`"),
                ));
            }
        }
        Ok(())
    }

    fn validate_partitions(&self, key: &str, partitions: u32) -> Result<(), ConfigError> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(self.err(
                key.to_string(),
                &format!("a partition count from 1 to {MAX_PARTITIONS}"),
                partitions,
            ));
        }
        Ok(())
    }
}

/// A map that rejects a key given twice (YAML parsers keep the last one silently, which
/// would hide a copy-paste mistake such as two `asx:` entries).
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Visitor<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map with unique keys")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor(std::marker::PhantomData))
}

/// Minutes since midnight for `HH:MM`, allowing `24:00`.
fn parse_hhmm(s: &str) -> Option<u32> {
    if s == "24:00" {
        return Some(24 * 60);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some(t.signed_duration_since(NaiveTime::MIN).num_minutes() as u32)
}
