//! `config/k2.toml`: defaults, path resolution, environment overrides, redaction, errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Jail;
use k2_common::config::{CatalogConfig, ConfigError, K2Config};

fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/k2.toml")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs `f` with only the given K2_* variables set (figment's Jail isolates the
/// environment and serialises tests that touch it).
// The closure's error type is figment's, not ours.
#[allow(clippy::result_large_err)]
fn with_env(
    vars: &[(&str, &str)],
    f: impl FnOnce() -> Result<K2Config, ConfigError>,
) -> Result<K2Config, ConfigError> {
    let mut out = None;
    Jail::expect_with(|jail| {
        for (k, _) in std::env::vars() {
            if k.starts_with("K2_") {
                // Register with the jail (so it is restored afterwards), then remove.
                jail.set_env(&k, "");
                // SAFETY: Jail holds a global lock; no other thread reads the environment.
                unsafe { std::env::remove_var(&k) };
            }
        }
        for (k, v) in vars {
            jail.set_env(k, v);
        }
        out = Some(f());
        Ok(())
    });
    out.unwrap()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("k2.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn shipped_config_is_the_embedded_default() {
    let c = with_env(&[], || K2Config::load(shipped_path())).unwrap();
    let root = repo_root();
    // Exactly, not up to `..`: these paths end up in every table location and file URI.
    assert_eq!(c.state_dir, root.join(".k2"));
    assert_eq!(c.topics_file, root.join("config/topics.yaml"));
    assert_eq!(c.schemas.dir, root.join("schemas"));
    assert_eq!(c.kafka.group_id, "k2-iceberg-writer");
    assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:9092");
    let CatalogConfig::Sql { uri, name, .. } = &c.catalog else {
        panic!("default catalog is sql")
    };
    assert_eq!(name, "k2");
    let db = uri.expose().strip_prefix("sqlite:").unwrap();
    assert!(db.ends_with("catalog.db?mode=rwc"), "{db}");
    assert_eq!(
        Path::new(db.split('?').next().unwrap()),
        root.join(".k2/catalog.db")
    );
    let wh = c.warehouse.location.strip_prefix("file://").unwrap();
    assert_eq!(Path::new(wh), root.join(".k2/warehouse"));
    assert_eq!(c.sink.commit.max_records, 500_000);
    assert_eq!(c.sink.commit.max_bytes.as_u64(), 128 * 1024 * 1024);
    assert_eq!(c.sink.commit.interval, Duration::from_secs(10));
    assert_eq!(c.sink.dead_letter_topic, "market.dlq");
    assert!(c.schema_registry.is_none());
    assert_eq!(c.schemas.ids().len(), 3);
    assert!(c.schemas.ids()[&1].ends_with("schemas/trade.avsc"));
}

#[test]
fn paths_are_absolute_and_clean() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    std::fs::create_dir(base.join("config")).unwrap();
    let p = write_config(
        &base.join("config"),
        "state_dir = \"../state/./here/..\"\ntopics_file = \"./../config/topics.yaml\"\n\
         [warehouse]\nlocation = \"file:///srv/a/../w\"\n[catalog]\ntype = \"sql\"\n\
         uri = \"sqlite:sub/../k2.db\"\n",
    );
    let c = with_env(&[], || K2Config::load(&p)).unwrap();
    assert_eq!(c.state_dir, base.join("state"));
    assert_eq!(c.topics_file, base.join("config/topics.yaml"));
    assert_eq!(c.warehouse.location, "file:///srv/w");
    let CatalogConfig::Sql { uri, .. } = &c.catalog else {
        panic!()
    };
    assert_eq!(
        uri.expose(),
        format!("sqlite:{}?mode=rwc", base.join("state/k2.db").display())
    );
    // A relative warehouse, under the state directory.
    let p = write_config(
        &base.join("config"),
        "state_dir = \"../s\"\n[warehouse]\nlocation = \"x/../wh\"\n",
    );
    let c = with_env(&[], || K2Config::load(&p)).unwrap();
    assert_eq!(
        c.warehouse.location,
        format!("file://{}", base.join("s/wh").display())
    );
}

#[test]
fn state_dir_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "state_dir = \"/srv/k2-state\"\n");
    let c = with_env(&[], || K2Config::load(&p)).unwrap();
    assert_eq!(c.state_dir, Path::new("/srv/k2-state"));
    assert_eq!(c.warehouse.location, "file:///srv/k2-state/warehouse");
    let CatalogConfig::Sql { uri, .. } = &c.catalog else {
        panic!()
    };
    assert_eq!(uri.expose(), "sqlite:/srv/k2-state/catalog.db?mode=rwc");
}

#[test]
fn environment_overrides_any_key() {
    let c = with_env(
        &[
            ("K2_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092"),
            ("K2_SINK__COMMIT__INTERVAL", "1s"),
            ("K2_SINK__COMMIT__MAX_RECORDS", "1000"),
            ("K2_STATE_DIR", "/tmp/k2-elsewhere"),
            ("K2_SCHEMA_REGISTRY__URL", "http://127.0.0.1:8081"),
            // Property names contain dots, so they are given as an inline table.
            ("K2_KAFKA__PROPERTIES", r#"{"sasl.username"="k2"}"#),
            // Script variables that are not config keys are ignored.
            ("K2_CACHE", "/root/.cache/k2"),
        ],
        || K2Config::load(shipped_path()),
    )
    .unwrap();
    assert_eq!(c.kafka.bootstrap_servers, "broker-a:9092,broker-b:9092");
    assert_eq!(c.sink.commit.interval, Duration::from_secs(1));
    assert_eq!(c.sink.commit.max_records, 1000);
    assert_eq!(c.state_dir, Path::new("/tmp/k2-elsewhere"));
    assert_eq!(c.schema_registry.unwrap().url, "http://127.0.0.1:8081");
    assert_eq!(c.kafka.properties.get("sasl.username"), Some("k2"));
}

#[test]
fn secrets_are_redacted_in_print_and_debug() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        r#"
[kafka.properties]
"sasl.username" = "k2"
"sasl.password" = "kafka-secret"

[catalog]
type = "sql"
uri = "postgres://k2:pg-secret@127.0.0.1:5432/catalog"

[warehouse]
location = "s3://warehouse/k2"
[warehouse.s3]
endpoint = "http://127.0.0.1:9000"
path_style = true
access_key_id = "AKID"
secret_access_key = "s3-secret"
"#,
    );
    let c = with_env(&[], || K2Config::load(&p)).unwrap();
    let printed = c.to_redacted_toml();
    let debugged = format!("{c:?}");
    for secret in ["kafka-secret", "pg-secret", "s3-secret"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        assert!(!debugged.contains(secret), "{secret} in Debug");
    }
    assert!(
        printed.contains("AKID") && printed.contains("<redacted>"),
        "{printed}"
    );
    assert_eq!(
        c.warehouse.s3.unwrap().secret_access_key.expose(),
        "s3-secret"
    );
}

fn assert_error(text: &str, env: &[(&str, &str)], key: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), text);
    let err = with_env(env, || K2Config::load(&p)).expect_err("config should be rejected");
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "no file in: {msg}");
    assert_eq!(err.key(), key, "wrong key in: {msg}");
    assert!(
        msg.contains(expected),
        "{msg:?} does not mention {expected:?}"
    );
}

#[test]
fn errors_name_file_key_and_expectation() {
    assert_error(
        "[kafka]\nbootstrap = \"x\"\n",
        &[],
        "kafka.bootstrap",
        "unknown field",
    );
    assert_error(
        "[sink.commit]\nmax_records = \"lots\"\n",
        &[],
        "sink.commit.max_records",
        "invalid type",
    );
    assert_error(
        "[sink.commit]\nmax_records = 0\n",
        &[],
        "sink.commit.max_records",
        "expected at least 1, found 0",
    );
    assert_error(
        "[sink.commit]\ninterval = \"soon\"\n",
        &[],
        "sink.commit.interval",
        "",
    );
    assert_error(
        "[kafka]\ngroup_protocol = \"consumer\"\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n",
        &[],
        "kafka.properties.\"session.timeout.ms\"",
        "no such property with kafka.group_protocol = \"consumer\" \
         (use the broker's group.consumer.session.timeout.ms)",
    );
    // Settings exactly-once depends on cannot be overridden (K2's own value is accepted).
    assert_error(
        "[kafka.properties]\n\"isolation.level\" = \"read_uncommitted\"\n",
        &[],
        "kafka.properties.\"isolation.level\"",
        "expected \"read_committed\" or nothing: K2's exactly-once depends on it, \
         found \"read_uncommitted\"",
    );
    assert_error(
        "[kafka.properties]\n\"auto.offset.reset\" = \"latest\"\n",
        &[],
        "kafka.properties.\"auto.offset.reset\"",
        "expected \"earliest\" or nothing",
    );
    assert_error(
        "[maintenance]\nmin_snapshots = 0\n",
        &[],
        "maintenance.min_snapshots",
        "expected at least 1",
    );
    // The window's count cannot be below what is kept whatever the age.
    assert_error(
        "[maintenance]\nmax_snapshots = 5\nmin_snapshots = 6\n",
        &[],
        "maintenance.max_snapshots",
        "expected at least maintenance.min_snapshots (6)",
    );
    // A window shorter than the commit interval would expire each snapshot before the next.
    assert_error(
        "[sink.commit]\ninterval = \"1m\"\n[maintenance]\nsnapshot_retention = \"30s\"\n",
        &[],
        "maintenance.snapshot_retention",
        "expected a window at least as long as sink.commit.interval (1m)",
    );
    // End-of-day tags outlive the window they stand in for.
    assert_error(
        "[maintenance]\nsnapshot_retention = \"2days\"\ntag_max_age = \"1day\"\n",
        &[],
        "maintenance.tag_max_age",
        "expected at least maintenance.snapshot_retention (2days)",
    );
    assert_error(
        "[maintenance]\norphan_min_age = \"1s\"\n",
        &[],
        "maintenance.orphan_min_age",
        "expected a duration of at least 2s",
    );
    assert_error(
        "[kafka]\ngroup_protocol = \"eager\"\n",
        &[],
        "kafka.group_protocol",
        "unknown variant",
    );
    assert_error(
        "[catalog]\ntype = \"hive\"\nuri = \"thrift://x\"\n",
        &[],
        "catalog.type",
        "unknown variant: found `hive`",
    );
    assert_error(
        "[catalog]\ntype = \"sql\"\nuri = \"mysql://x\"\n",
        &[],
        "catalog.uri",
        "expected sqlite:<path> or postgres://",
    );
    assert_error(
        "[warehouse]\nlocation = \"gs://bucket\"\n",
        &[],
        "warehouse.location",
        "s3://bucket/prefix",
    );
    assert_error(
        "[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n",
        &[],
        "kafka.properties.\"enable.auto.commit\"",
        "K2 sets it itself",
    );
    assert_error("[kafka\n", &[], "(root)", "");
}

#[test]
fn bad_environment_values_are_located_too() {
    assert_error(
        "",
        &[("K2_SINK__COMMIT__MAX_RECORDS", "many")],
        "sink.commit.max_records",
        "environment",
    );
}

#[test]
fn missing_file_is_named() {
    let err = with_env(&[], || K2Config::load("/nonexistent/k2.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/k2.toml: cannot read"),
        "{err}"
    );
}
