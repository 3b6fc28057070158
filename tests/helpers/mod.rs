//! Helpers shared by K2's integration tests. Every test runs against the real local
//! services that `scripts/services` starts on 127.0.0.1; a test that needs a service
//! starts it through that script or fails loudly, never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod asx;
pub mod docker;
pub mod engines;
pub mod feed;
pub mod poison;
pub mod registry;
pub mod services;
pub mod sink;
pub mod tables;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

/// The broker the tests use: `127.0.0.1:$K2_KAFKA_PORT` (`scripts/test` gives the tests a
/// broker of their own on 19092, started empty each run), else the default 9092.
pub static BOOTSTRAP: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("127.0.0.1:{}", env_or("K2_KAFKA_PORT", 9092u16)));

/// Loading a config reads `K2_*` variables; tests that set them take this lock.
pub static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A fresh environment (ASX on 3 partitions, 2 s commits) with the ASX sample replayed
/// into it by `k2-feed replay` plus `extra` arguments; the feed's output.
pub fn replay_asx(extra: &[&str]) -> (TestEnv, Output) {
    let env = TestEnv::ready(3, 1, "2s");
    let dir = asx_dir();
    let mut args = vec![
        "replay",
        "--asx-dir",
        dir.to_str().unwrap(),
        "--exchange",
        &env.asx,
    ];
    args.extend_from_slice(extra);
    let out = env.run("k2-feed", &args);
    assert!(out.status.success(), "k2-feed replay: {}", stderr(&out));
    (env, out)
}

/// A small multi-threaded runtime for a test's async calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The real ASX sample (read in place, never copied into the repo): `K2_ASX_DIR`, else
/// `shared/data/asx-2014` beside the checkout or beside any of its parent directories.
pub fn asx_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("K2_ASX_DIR") {
        return PathBuf::from(dir);
    }
    let root = repo_root();
    root.ancestors()
        .map(|a| a.join("shared/data/asx-2014"))
        .find(|d| d.join("FORMAT.md").exists())
        .unwrap_or_else(|| {
            panic!(
                "the ASX sample was not found beside {} or its parents: set K2_ASX_DIR",
                root.display()
            )
        })
}

/// Starts the local services (idempotent). Panics with the script's output if it fails.
pub fn ensure_services() {
    static START: Once = Once::new();
    START.call_once(|| {
        let out = Command::new(repo_root().join("scripts/services"))
            .arg("up")
            .output()
            .expect("run scripts/services up");
        assert!(
            out.status.success(),
            "scripts/services up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The local S3 server's credentials (scripts/services.d/s3.sh).
pub const S3_ACCESS_KEY: &str = "k2";
pub const S3_SECRET_KEY: &str = "k2-secret-key";

/// `$var` parsed, or `default` when it is unset or does not parse (ports of the local
/// services, sizes of the crash test).
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The shared S3 server's port: `$K2_S3_PORT` (default 9000).
pub fn s3_port() -> u16 {
    env_or("K2_S3_PORT", 9000u16)
}

/// `[warehouse.s3]` for the local S3 server on `port`, with these credentials.
fn s3_settings(port: u16, access_key: &str, secret_key: &str) -> String {
    format!(
        "[warehouse.s3]\nendpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\n\
         path_style = true\naccess_key_id = \"{access_key}\"\nsecret_access_key = \"{secret_key}\"\n"
    )
}

/// Creates an S3 table bucket (what SeaweedFS's REST catalog serves) on the SeaweedFS whose
/// S3 port is `s3_port`.
pub fn create_table_bucket(s3_port: u16, name: &str) {
    let text = services::weed_shell(
        s3_port,
        &format!("s3tables.bucket -create -name {name} -account admin"),
    );
    assert!(
        text.contains(&format!("bucket/{name}")),
        "creating table bucket {name} failed:\n{text}"
    );
}

/// Path of a workspace binary (or `examples/NAME`) built in the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: build the workspace binaries first (cargo build --workspace --bins)",
                path.display()
            )
        });
    let newest = newest_source(&repo_root(), name);
    assert!(
        built >= newest,
        "{} is older than the sources: rebuild it (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Modification time of the newest source or schema the binary is built from.
fn newest_source(root: &Path, binary: &str) -> std::time::SystemTime {
    fn walk(dir: &Path, newest: &mut std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "toml" || x == "avsc")
                && let Ok(t) = e.metadata().and_then(|m| m.modified())
                && t > *newest
            {
                *newest = t;
            }
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    // Sources that change the binary when edited (tests and manifests may change without
    // the binary being relinked). Examples (`examples/NAME`) are the query module's.
    let own = match binary.strip_prefix("examples/") {
        Some(_) => vec!["query/src".to_string(), "query/examples".to_string()],
        // k2-admin also links the maintenance crate, which links the sink's writer.
        None if binary == "k2-admin" => ["admin/src", "maintain/src", "sink/src"]
            .map(String::from)
            .to_vec(),
        None => vec![format!(
            "{}/src",
            binary.strip_prefix("k2-").unwrap_or(binary)
        )],
    };
    for dir in ["common/src".to_string(), "schemas".to_string()]
        .iter()
        .chain(&own)
    {
        walk(&root.join(dir), &mut newest);
    }
    newest
}

/// A name unique to this test run, usable as a topic segment.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A private configuration: the shipped topics.yaml with exchange codes made unique (so
/// tests sharing the broker never see each other's topics), a private state directory and
/// dead-letter topic.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub topics: PathBuf,
    pub asx: String,
    pub binance: String,
    pub dead_letter_topic: String,
    pub group: String,
    /// Environment variables for every process [`TestEnv::run`] and [`TestEnv::spawn`] start.
    pub vars: Vec<(String, String)>,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let asx = unique("asx");
        let binance = unique("bnc");
        let dead_letter_topic = format!("market.dlq.{}", unique("t"));
        let group = unique("group");
        let shipped = std::fs::read_to_string(repo_root().join("config/topics.yaml")).unwrap();
        let topics_text = shipped
            .replace("      asx:\n", &format!("      {asx}:\n"))
            .replace("      binance:\n", &format!("      {binance}:\n"))
            .replace(
                "calendar: calendars/",
                &format!("calendar: {}/config/calendars/", repo_root().display()),
            );
        let topics = dir.path().join("topics.yaml");
        std::fs::write(&topics, topics_text).unwrap();
        let config = dir.path().join("k2.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\ntopics_file = \"topics.yaml\"\n\
                 [schemas]\ndir = \"{schemas}\"\n\
                 [kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n\
                 [sink]\ndead_letter_topic = \"{dead_letter_topic}\"\n\
                 [metrics]\naddress = \"127.0.0.1:0\"\n\
                 [log]\nformat = \"text\"\n",
                schemas = repo_root().join("schemas").display(),
                bootstrap = BOOTSTRAP.as_str(),
            ),
        )
        .unwrap();
        TestEnv {
            dir,
            config,
            topics,
            asx,
            binance,
            dead_letter_topic,
            group,
            vars: Vec::new(),
        }
    }

    /// The usual start of a test: services up, a fresh environment with these partition
    /// counts and commit interval, its topics created.
    pub fn ready(asx: usize, binance: usize, commit_interval: &str) -> Self {
        ensure_services();
        let mut env = TestEnv::new();
        env.set_partitions(asx, binance);
        env.var("K2_SINK__COMMIT__INTERVAL", commit_interval);
        env.create_topics();
        env
    }

    /// Sets the partition counts of the two exchanges (the shipped 30/40 make tests slow).
    pub fn set_partitions(&self, asx: usize, binance: usize) {
        self.edit_topics(|t| {
            t.replace("partitions: 30", &format!("partitions: {asx}"))
                .replace("partitions: 40", &format!("partitions: {binance}"))
        });
    }

    /// The broker this environment's processes use: its `K2_KAFKA__BOOTSTRAP_SERVERS`
    /// override (a private broker), else the tests' shared one.
    pub fn bootstrap(&self) -> String {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == "K2_KAFKA__BOOTSTRAP_SERVERS")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| BOOTSTRAP.clone())
    }

    /// Adds an environment variable (a `K2_*` config override) for processes started later.
    pub fn var(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    /// The effective configuration, as the binaries load it.
    pub fn k2_config(&self) -> k2_common::config::K2Config {
        let _guard = ENV_LOCK.lock().unwrap();
        k2_common::config::K2Config::load(&self.config).expect("test config loads")
    }

    /// Creates this environment's topics (and dead-letter topic) with `k2-admin`.
    pub fn create_topics(&self) {
        let out = self.run("k2-admin", &["topics", "apply"]);
        assert!(
            out.status.success(),
            "k2-admin topics apply failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Topic name of one exchange's data type in this environment.
    pub fn topic(&self, exchange: &str, data_type: &str) -> String {
        if exchange == self.binance {
            format!("market.crypto.{data_type}.{exchange}")
        } else {
            format!("market.equities.{data_type}.{exchange}")
        }
    }

    fn command(&self, binary: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin(binary));
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("K2_STATE_DIR")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Starts a workspace binary in the background; its output goes to `<dir>/<log>`.
    /// The process is killed when the handle is dropped (also when a test panics).
    pub fn spawn(&self, binary: &str, args: &[&str], log: &str) -> Spawned {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(log))
            .unwrap();
        Spawned(
            self.command(binary, args)
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {binary}: {e}")),
        )
    }

    /// Contents of a log written by [`TestEnv::spawn`].
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }

    /// Runs `k2-sink --once` (plus `args`) to completion, panicking with its log if it
    /// fails or takes longer than `timeout`.
    pub fn sink_once(&self, args: &[&str], timeout: Duration) {
        let log = format!("sink-once-{}.log", unique("r"));
        let mut all = vec!["--once"];
        all.extend_from_slice(args);
        let mut child = self.spawn("k2-sink", &all, &log);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Shown by the test harness only if the test fails.
                eprintln!("--- {log} ---\n{}", self.log(&log));
                assert!(
                    status.success(),
                    "k2-sink --once failed ({status}):\n{}",
                    self.log(&log)
                );
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "k2-sink --once did not finish in {timeout:?}:\n{}",
                    self.log(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts this environment's warehouse on the local S3 server (SeaweedFS, started by
    /// `scripts/services`) under a prefix of its own; the catalog stays the SQL one.
    pub fn use_s3_warehouse(&self) {
        self.use_s3_warehouse_at(s3_port(), S3_ACCESS_KEY, S3_SECRET_KEY);
    }

    /// [`TestEnv::use_s3_warehouse`] on the S3 server at `port`, with these credentials.
    pub fn use_s3_warehouse_at(&self, port: u16, access_key: &str, secret_key: &str) {
        let prefix = unique("wh");
        self.append_config(&format!(
            "[warehouse]\nlocation = \"s3://lakehouse/{prefix}\"\n{}",
            s3_settings(port, access_key, secret_key)
        ));
    }

    /// Puts this environment on the Iceberg REST catalog of the local SeaweedFS, in a table
    /// bucket of its own (created here), with the warehouse in that bucket.
    pub fn use_rest_catalog(&self) {
        self.use_rest_catalog_at(s3_port(), env_or("K2_ICEBERG_REST_PORT", 8181u16));
    }

    /// [`TestEnv::use_rest_catalog`] on the SeaweedFS with these S3 and REST ports.
    pub fn use_rest_catalog_at(&self, s3_port: u16, rest_port: u16) {
        let bucket = unique("t");
        create_table_bucket(s3_port, &bucket);
        self.append_config(&format!(
            "[catalog]\ntype = \"rest\"\nname = \"k2\"\nuri = \"http://127.0.0.1:{rest_port}\"\n\
             credential = \"{S3_ACCESS_KEY}:{S3_SECRET_KEY}\"\nwarehouse = \"s3://{bucket}\"\n\
             [warehouse]\nlocation = \"s3://{bucket}\"\n{s3}",
            s3 = s3_settings(s3_port, S3_ACCESS_KEY, S3_SECRET_KEY),
        ));
    }

    /// Puts this environment's catalog in a database of its own (created here) on the
    /// PostgreSQL at `port` (scripts/services.d/postgres.sh); the warehouse stays local.
    pub fn use_postgres_catalog_at(&self, port: u16) {
        let db = unique("k2cat");
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "k2",
                "-d",
                "k2",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE {db}"),
            ])
            .env("PGPASSWORD", "k2-password")
            .output()
            .expect("psql (Debian postgresql-client)");
        assert!(
            out.status.success(),
            "CREATE DATABASE {db}: {}",
            stderr(&out)
        );
        self.append_config(&format!(
            "[catalog]\ntype = \"sql\"\nname = \"k2\"\n\
             uri = \"postgres://k2:k2-password@127.0.0.1:{port}/{db}\"\n"
        ));
    }

    fn append_config(&self, toml: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(toml);
        std::fs::write(&self.config, text).unwrap();
    }

    /// Rewrites topics.yaml through `edit`.
    pub fn edit_topics(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.topics).unwrap();
        std::fs::write(&self.topics, edit(text)).unwrap();
    }

    /// Runs a workspace binary with `--config` pointing at this environment.
    pub fn run(&self, binary: &str, args: &[&str]) -> Output {
        self.command(binary, args)
            .output()
            .unwrap_or_else(|e| panic!("run {binary}: {e}"))
    }

    /// The arguments of a maintenance run that compacts every day of trades, today's
    /// included, and builds their one-minute bars.
    pub const COMPACT_TRADES: [&str; 6] = [
        "maintain",
        "compact",
        "--table",
        "trades",
        "--older-than",
        "0s",
    ];

    /// Runs [`Self::COMPACT_TRADES`], which must succeed; its output.
    pub fn compact_trades(&self) -> String {
        self.maintain(&Self::COMPACT_TRADES[1..])
    }

    /// Runs `k2-admin maintain <args>`, which must succeed; its output.
    pub fn maintain(&self, args: &[&str]) -> String {
        let mut all = vec!["maintain"];
        all.extend_from_slice(args);
        let out = self.run("k2-admin", &all);
        assert!(
            out.status.success(),
            "k2-admin {all:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }
}

/// A child process that does not outlive its test.
pub struct Spawned(pub std::process::Child);

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// The `K2_*` settings of docker-compose.yml's `x-k2` block for its REST catalog and S3
/// warehouse, pointed at the native servers: the schema registry, the REST catalog at `rest`
/// (with an OAuth2 `credential` where it asks for one), `warehouse` on the shared S3 server.
pub fn compose_k2_vars(
    rest: &str,
    warehouse: &str,
    credential: Option<&str>,
) -> Vec<(String, String)> {
    let registry = format!(
        "http://127.0.0.1:{}/apis/ccompat/v7",
        env_or("K2_REGISTRY_PORT", 8081u16)
    );
    let s3 = format!("http://127.0.0.1:{}", s3_port());
    let mut vars = vec![
        ("K2_SCHEMA_REGISTRY__URL", registry.as_str()),
        ("K2_CATALOG__TYPE", "rest"),
        ("K2_CATALOG__NAME", "k2"),
        ("K2_CATALOG__URI", rest),
        ("K2_CATALOG__WAREHOUSE", warehouse),
        ("K2_WAREHOUSE__LOCATION", warehouse),
        ("K2_WAREHOUSE__S3__ENDPOINT", s3.as_str()),
        ("K2_WAREHOUSE__S3__REGION", "us-east-1"),
        ("K2_WAREHOUSE__S3__PATH_STYLE", "true"),
        ("K2_WAREHOUSE__S3__ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("K2_WAREHOUSE__S3__SECRET_ACCESS_KEY", S3_SECRET_KEY),
    ];
    if let Some(c) = credential {
        vars.push(("K2_CATALOG__CREDENTIAL", c));
    }
    vars.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A finished process's standard output; panics with both outputs, naming `what`, if it
/// failed.
pub fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `k2-feed` arguments for the deployment tests' small feed: `count` synthetic records of
/// five symbols with a poison record every 1,000, so that dead letters are exercised too.
pub fn small_poisoned_feed(count: &str) -> [&str; 7] {
    [
        "synthetic",
        "--count",
        count,
        "--symbols",
        "5",
        "--poison-every",
        "1000",
    ]
}

/// How many poison records a `k2-feed synthetic --poison-every N` run sent (its report's
/// `poison=` figure; at least one, or the run proves nothing about dead letters).
pub fn fed_poison(out: &Output) -> u64 {
    let report = format!("{}{}", stdout(out), stderr(out));
    let poison = report
        .split("poison=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no poison= in the feed's report: {report}"));
    assert!(poison > 0, "{report}");
    poison
}

pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP.as_str())
        .create()
        .expect("admin client")
}

/// Partition count of a topic, `None` if it does not exist.
pub fn partitions(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Option<usize> {
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// One config value of a topic as the broker reports it.
pub async fn topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    key: &str,
) -> Option<String> {
    let rs = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("describe configs");
    rs.into_iter()
        .flatten()
        .next()
        .and_then(|r| r.get(key).and_then(|e| e.value.clone()))
}
