//! `config/topics.yaml`: the shipped file loads, and each kind of mistake is reported with
//! the file, the key path and what was expected.

use std::path::{Path, PathBuf};

use k2_common::config::{ConfigError, TopicsConfig};
use k2_common::subscription::Subscription;
use k2_common::topic::{DataType, TopicName};
use serde_yaml_ng::Value;

fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/topics.yaml")
}

fn shipped() -> TopicsConfig {
    TopicsConfig::load(shipped_path()).expect("shipped topics.yaml loads")
}

/// The shipped file as a YAML tree, changed by `edit`, then loaded as if it were still at
/// its own path: files it names (trading calendars) resolve next to it, whatever the
/// test's working directory.
fn load_edited(edit: impl FnOnce(&mut Value)) -> Result<TopicsConfig, ConfigError> {
    let text = std::fs::read_to_string(shipped_path()).unwrap();
    let mut v: Value = serde_yaml_ng::from_str(&text).unwrap();
    edit(&mut v);
    TopicsConfig::from_yaml(&serde_yaml_ng::to_string(&v).unwrap(), &shipped_path())
}

fn at<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.')
        .fold(v, |v, k| v.get_mut(k).unwrap_or_else(|| panic!("no {k}")))
}

fn map(v: &mut Value) -> &mut serde_yaml_ng::Mapping {
    v.as_mapping_mut().unwrap()
}

/// Asserts the error names the file and key and contains `expected`.
fn assert_error(result: Result<TopicsConfig, ConfigError>, key: &str, expected: &str) {
    let err = result.expect_err("config should be rejected");
    let msg = err.to_string();
    let file = format!("{}: ", shipped_path().display());
    assert!(msg.starts_with(&file), "no file in: {msg}");
    assert_eq!(err.key(), key, "wrong key in: {msg}");
    assert!(
        msg.contains(expected),
        "{msg:?} does not mention {expected:?}"
    );
}

#[test]
fn shipped_file_defines_asx_and_binance() {
    let c = shipped();
    let names: Vec<String> = c.all_topics().iter().map(|t| t.to_string()).collect();
    assert_eq!(
        names,
        [
            "market.crypto.quotes.binance",
            "market.crypto.reference_data.binance",
            "market.crypto.trades.binance",
            "market.equities.quotes.asx",
            "market.equities.reference_data.asx",
            "market.equities.trades.asx",
        ]
    );
    let asx_trades = c
        .topic_spec(&"market.equities.trades.asx".parse().unwrap())
        .unwrap();
    assert_eq!(asx_trades.partitions, 30);
    assert_eq!(asx_trades.subject, "market.equities.trades-value");
    assert_eq!(asx_trades.schema_name, "trade");
    assert_eq!(asx_trades.partition_key, "symbol");
    assert_eq!(asx_trades.configs["cleanup.policy"], "delete");
    assert_eq!(asx_trades.configs["min.insync.replicas"], "1");

    let binance_quotes = c
        .topic_spec(&"market.crypto.quotes.binance".parse().unwrap())
        .unwrap();
    assert_eq!(binance_quotes.partitions, 40);

    let reference = c
        .topic_spec(&"market.crypto.reference_data.binance".parse().unwrap())
        .unwrap();
    assert_eq!(reference.partitions, 1);
    assert_eq!(reference.configs["cleanup.policy"], "compact");

    let (ac, asx) = c.exchange("asx").unwrap();
    assert_eq!(ac, "equities");
    assert_eq!(asx.tz(), chrono_tz::Australia::Sydney);
}

#[test]
fn missing_file_names_the_file() {
    let err = TopicsConfig::load("/nonexistent/topics.yaml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/topics.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn malformed_yaml_names_the_file() {
    let err = TopicsConfig::from_yaml("asset_classes: [", Path::new("topics.yaml")).unwrap_err();
    assert!(err.to_string().starts_with("topics.yaml: "), "{err}");
}

#[test]
fn unknown_data_type() {
    assert_error(
        load_edited(|v| {
            let dts = map(at(v, "data_types"));
            let trades = dts.get("trades").unwrap().clone();
            dts.insert("bars".into(), trades);
        }),
        "data_types.bars",
        "expected a data type K2 knows (trades, quotes, reference_data), found `bars`",
    );
}

#[test]
fn zero_partitions() {
    assert_error(
        load_edited(|v| *at(v, "asset_classes.equities.exchanges.asx.partitions") = 0.into()),
        "asset_classes.equities.exchanges.asx.partitions",
        "expected a partition count from 1 to 10000, found 0",
    );
    assert_error(
        load_edited(|v| *at(v, "data_types.reference_data.partitions") = 0.into()),
        "data_types.reference_data.partitions",
        "found 0",
    );
}

#[test]
fn bad_exchange_code() {
    for bad in ["ASX", "as.x", "1asx", "as-x", ""] {
        assert_error(
            load_edited(|v| {
                let exs = map(at(v, "asset_classes.equities.exchanges"));
                let asx = exs.remove("asx").unwrap();
                exs.insert(bad.into(), asx);
            }),
            &format!("asset_classes.equities.exchanges.{bad}"),
            "expected an exchange code of lower-case letters",
        );
    }
}

#[test]
fn duplicate_exchange_across_asset_classes() {
    assert_error(
        load_edited(|v| {
            let asx = at(v, "asset_classes.equities.exchanges.asx").clone();
            map(at(v, "asset_classes.crypto.exchanges")).insert("asx".into(), asx);
        }),
        "asset_classes.equities.exchanges.asx",
        "expected exchange codes unique across asset classes",
    );
}

#[test]
fn duplicate_key_in_the_same_map() {
    let text = std::fs::read_to_string(shipped_path()).unwrap();
    let start = text.find("      asx:\n").unwrap();
    let end = text.find("  crypto:\n").unwrap();
    let asx_block = text[start..end].to_string();
    let text = format!("{}{asx_block}{}", &text[..end], &text[end..]);
    let err = TopicsConfig::from_yaml(&text, Path::new("topics.yaml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("topics.yaml: "), "{msg}");
    assert!(msg.contains("duplicate"), "{msg}");
}

#[test]
fn unknown_key_is_a_typo() {
    assert_error(
        load_edited(|v| {
            map(at(v, "asset_classes.equities.exchanges.asx")).insert("partitons".into(), 3.into());
        }),
        "asset_classes.equities.exchanges.asx.partitons",
        "unknown field `partitons`",
    );
}

#[test]
fn wrong_type_and_missing_key() {
    assert_error(
        load_edited(|v| *at(v, "asset_classes.equities.exchanges.asx.partitions") = "many".into()),
        "asset_classes.equities.exchanges.asx.partitions",
        "invalid type",
    );
    assert_error(
        load_edited(|v| {
            map(at(v, "asset_classes.equities.exchanges.asx")).remove("timezone");
        }),
        "asset_classes.equities.exchanges.asx",
        "missing field `timezone`",
    );
}

#[test]
fn bad_timezone_country_and_hours() {
    assert_error(
        load_edited(|v| {
            *at(v, "asset_classes.equities.exchanges.asx.timezone") = "Australia/Sidney".into()
        }),
        "asset_classes.equities.exchanges.asx.timezone",
        "expected an IANA time zone",
    );
    assert_error(
        load_edited(|v| *at(v, "asset_classes.equities.exchanges.asx.country") = "aus".into()),
        "asset_classes.equities.exchanges.asx.country",
        "ISO 3166-1",
    );
    assert_error(
        load_edited(|v| {
            *at(
                v,
                "asset_classes.equities.exchanges.asx.trading_hours.close",
            ) = "09:00".into()
        }),
        "asset_classes.equities.exchanges.asx.trading_hours.close",
        "a close later than the open",
    );
    assert_error(
        load_edited(|v| {
            *at(v, "asset_classes.equities.exchanges.asx.trading_hours.open") = "ten".into()
        }),
        "asset_classes.equities.exchanges.asx.trading_hours.open",
        "HH:MM",
    );
}

#[test]
fn schema_and_partition_key_must_exist() {
    assert_error(
        load_edited(|v| *at(v, "data_types.trades.schema_name") = "trades_v9".into()),
        "data_types.trades.schema_name",
        "one of the schemas in schemas/ (trade, quote, reference_data)",
    );
    assert_error(
        load_edited(|v| *at(v, "data_types.trades.partition_key") = "ticker".into()),
        "data_types.trades.partition_key",
        "a string field of schema `trade`",
    );
}

#[test]
fn defaults_and_registry_rules() {
    assert_error(
        load_edited(|v| *at(v, "defaults.min_insync_replicas") = 2.into()),
        "defaults.min_insync_replicas",
        "between 1 and defaults.replication_factor",
    );
    assert_error(
        load_edited(|v| *at(v, "schema_registry.subject_pattern") = "{topic}-value".into()),
        "schema_registry.subject_pattern",
        "only {asset_class}, {data_type} and {exchange}",
    );
    assert_error(
        load_edited(|v| *at(v, "schema_registry.compatibility") = "SIDEWAYS".into()),
        "schema_registry.compatibility",
        "unknown variant `SIDEWAYS`",
    );
}

#[test]
fn adding_an_exchange_is_config_only() {
    let c = load_edited(|v| {
        let mut coinbase = at(v, "asset_classes.crypto.exchanges.binance").clone();
        *coinbase.get_mut("name").unwrap() = "Coinbase".into();
        *coinbase.get_mut("country").unwrap() = "US".into();
        map(at(v, "asset_classes.crypto.exchanges")).insert("coinbase".into(), coinbase);
    })
    .unwrap();
    let crypto = c
        .resolve(&Subscription::asset_class(
            "crypto",
            &[DataType::Trades],
            &[],
        ))
        .unwrap();
    let names: Vec<String> = crypto.iter().map(|t| t.to_string()).collect();
    assert_eq!(
        names,
        [
            "market.crypto.trades.binance",
            "market.crypto.trades.coinbase"
        ]
    );
}

fn names(topics: Vec<TopicName>) -> Vec<String> {
    topics.iter().map(|t| t.to_string()).collect()
}

#[test]
fn subscription_patterns() {
    let c = shipped();
    assert_eq!(c.resolve(&Subscription::all()).unwrap().len(), 6);
    assert_eq!(
        names(c.resolve(&Subscription::exchange("ASX")).unwrap()),
        [
            "market.equities.quotes.asx",
            "market.equities.reference_data.asx",
            "market.equities.trades.asx",
        ]
    );
    assert_eq!(
        names(
            c.resolve(&Subscription::asset_class(
                "crypto",
                &[DataType::Quotes, DataType::Trades],
                &["binance"]
            ))
            .unwrap()
        ),
        [
            "market.crypto.quotes.binance",
            "market.crypto.trades.binance"
        ]
    );
    assert_eq!(
        names(
            c.resolve(&Subscription::data_type(DataType::Trades))
                .unwrap()
        ),
        ["market.crypto.trades.binance", "market.equities.trades.asx"]
    );
    let explicit = Subscription::topics([
        TopicName::new("equities", DataType::Trades, "asx").unwrap(),
        TopicName::new("crypto", DataType::Quotes, "binance").unwrap(),
        TopicName::new("equities", DataType::Trades, "asx").unwrap(),
    ]);
    assert_eq!(
        names(c.resolve(&explicit).unwrap()),
        ["market.crypto.quotes.binance", "market.equities.trades.asx"]
    );
}

#[test]
fn subscriptions_to_unknown_things_fail() {
    let c = shipped();
    assert!(c.resolve(&Subscription::exchange("nyse")).is_err());
    assert!(
        c.resolve(&Subscription::asset_class("bonds", &[], &[]))
            .is_err()
    );
    // An exchange of another asset class matches nothing: an empty list, not an error.
    assert!(
        c.resolve(&Subscription::asset_class("crypto", &[], &["asx"]))
            .unwrap()
            .is_empty()
    );
    let not_configured = TopicName::new("equities", DataType::Trades, "binance").unwrap();
    assert!(c.resolve(&Subscription::topics([not_configured])).is_err());
}
