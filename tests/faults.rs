//! Faults ridden out in plain sight. A real server the sink depends on is stopped, killed,
//! restarted or made to refuse the sink while a feed runs: the object store for a minute,
//! the REST catalog, the PostgreSQL SQL catalog, the broker, the sink's S3 credentials.
//! For each: the sink recovers without a restart, `/readyz` says not ready during the fault
//! (with the reason) and ready after it, the retry metrics show what was retried, memory
//! stays bounded (consumption pauses rather than buffers), and in the end every record fed
//! is in the tables exactly once.
//!
//! Each drill runs against private instances of the servers it breaks (`scripts/services`
//! with a services dir and ports of its own), so the shared ones other tests use are never
//! touched. Sizes (`scripts/fault-drills` runs them larger): `K2_DRILL_CHUNK` records per
//! half second (default 400), `K2_DRILL_S3_OUTAGE_SECS` (60), `K2_DRILL_OUTAGE_SECS` (15,
//! the other faults).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k2_tests::services::{Service, weed_shell};
use k2_tests::sink::{
    BackgroundFeed, assert_exactly_once, http_get, metrics_address, scrape_samples, signal,
    trades_and_quotes, wait_exit, wait_for_assignment, wait_until,
};
use k2_tests::{S3_ACCESS_KEY, S3_SECRET_KEY, Spawned, TestEnv, ensure_services, env_or};

const LOG: &str = "sink.log";
/// The commit policy's record limit in the drills: an outage of any length holds at most
/// this much (plus what is in flight) before consumption pauses.
const MAX_RECORDS: u64 = 5_000;

fn chunk() -> usize {
    env_or("K2_DRILL_CHUNK", 400)
}

fn outage() -> Duration {
    Duration::from_secs(env_or("K2_DRILL_OUTAGE_SECS", 15))
}

/// What the sink showed while a fault lasted.
#[derive(Default)]
struct Seen {
    /// Every distinct `/readyz` body of a 503.
    not_ready: Vec<String>,
    max_rss: f64,
    max_buffered: f64,
    paused: bool,
}

/// A sink of `env` fed in the background, watched through its metrics address.
struct Drill {
    env: TestEnv,
    sink: Spawned,
    address: String,
    feed: BackgroundFeed,
    rss_before: f64,
}

fn sample(address: &str, name: &str) -> f64 {
    scrape_samples(address, name).iter().map(|(_, v)| v).sum()
}

/// Counter values by label set (`{operation="commit"}` → n).
fn by_labels(address: &str, name: &str) -> BTreeMap<String, f64> {
    scrape_samples(address, name).into_iter().collect()
}

impl Drill {
    /// Starts the sink (1 s commits; not ready once records wait 10 s), then the feed, and
    /// waits until the sink has committed and is ready.
    fn start(mut env: TestEnv) -> Self {
        env.var("K2_SINK__COMMIT__INTERVAL", "1s")
            .var("K2_SINK__COMMIT__MAX_RECORDS", &MAX_RECORDS.to_string())
            .var("K2_METRICS__READY_COMMIT_WINDOW", "10s");
        env.create_topics();
        let mut sink = env.spawn("k2-sink", &[], LOG);
        wait_for_assignment(&env, LOG, &mut sink);
        let address = metrics_address(&env, LOG);
        let feed = BackgroundFeed::start(&env, chunk(), 1);
        wait_until(&env, LOG, "a first commit", Duration::from_secs(90), || {
            sample(&address, "k2_records_written_total") > 0.0
        });
        wait_until(&env, LOG, "ready", Duration::from_secs(60), || {
            http_get(&address, "/readyz").is_some_and(|(c, _)| c == 200)
        });
        let rss_before = sample(&address, "k2_process_resident_memory_bytes");
        Drill {
            env,
            sink,
            address,
            feed,
            rss_before,
        }
    }

    /// Runs `fault` while sampling the sink every 200 ms.
    fn during(&self, fault: impl FnOnce()) -> Seen {
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            let address = self.address.clone();
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                while !stop.load(Ordering::Relaxed) {
                    if let Some((503, body)) = http_get(&address, "/readyz")
                        && !seen.not_ready.contains(&body)
                    {
                        seen.not_ready.push(body);
                    }
                    seen.max_rss = seen
                        .max_rss
                        .max(sample(&address, "k2_process_resident_memory_bytes"));
                    seen.max_buffered = seen
                        .max_buffered
                        .max(sample(&address, "k2_buffered_records"));
                    seen.paused |= sample(&address, "k2_consumption_paused") == 1.0;
                    std::thread::sleep(Duration::from_millis(200));
                }
                seen
            })
        };
        fault();
        // The sink notices some faults only when it next tries (a commit a second later, a
        // statistics report within 5 s): keep watching a little past the fault's end.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("watcher")
    }

    /// The checks every drill shares, after the fault: ready again without a restart,
    /// memory bounded during it, and — once the feed stops and the sink is stopped — every
    /// record exactly once.
    fn recovered(mut self, seen: &Seen, what: &str) {
        wait_until(
            &self.env,
            LOG,
            &format!("{what}: ready again without a restart"),
            Duration::from_secs(180),
            || http_get(&self.address, "/readyz").is_some_and(|(c, _)| c == 200),
        );
        assert!(
            self.sink.try_wait().unwrap().is_none(),
            "{what}: the sink exited:\n{}",
            self.env.log(LOG)
        );
        // Bounded: the buffer stops near the commit policy's limit (plus a poll batch per
        // stage in flight), and memory with it.
        assert!(
            seen.max_buffered <= (MAX_RECORDS + 3 * 8_192) as f64,
            "{what}: buffer grew to {}",
            seen.max_buffered
        );
        assert!(
            seen.max_rss <= self.rss_before + 256.0 * 1024.0 * 1024.0,
            "{what}: RSS grew from {:.0} MiB to {:.0} MiB",
            self.rss_before / 1048576.0,
            seen.max_rss / 1048576.0
        );
        let expected = self.feed.finish();
        let fed = |table: &str| {
            expected
                .iter()
                .filter(|k| k.0.contains(&format!(".{table}.")))
                .count() as f64
        };
        let written = |table: &str| {
            scrape_samples(&self.address, "k2_records_written_total")
                .iter()
                .filter(|(l, _)| l.contains(&format!("table=\"{table}\"")))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        // Counted by this process since it started, so at least what was fed once all is in.
        wait_until(
            &self.env,
            LOG,
            &format!("{what}: everything fed committed"),
            Duration::from_secs(180),
            || written("trades") >= fed("trades") && written("quotes") >= fed("quotes"),
        );
        signal(&self.sink, "TERM");
        let status = wait_exit(&mut self.sink, Duration::from_secs(120));
        assert!(status.success(), "{what}: {status}:\n{}", self.env.log(LOG));
        assert_exactly_once(&trades_and_quotes(&self.env), &expected, what);
    }

    /// The sink's last log lines, for a failure message.
    fn tail(&self) -> String {
        let log = self.env.log(LOG);
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    fn assert_not_ready_because(&self, seen: &Seen, what: &str, reason: &str) {
        assert!(
            seen.not_ready.iter().any(|b| b.contains(reason)),
            "{what}: /readyz never said {reason:?}; it said {:?}\n{}",
            seen.not_ready,
            self.tail()
        );
    }

    fn retries(&self) -> BTreeMap<String, f64> {
        by_labels(&self.address, "k2_retries_total")
    }

    fn exhausted(&self) -> BTreeMap<String, f64> {
        by_labels(&self.address, "k2_retries_exhausted_total")
    }
}

/// Labels whose counter grew between two readings.
fn grew(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    after
        .iter()
        .filter(|(k, v)| **v > before.get(*k).copied().unwrap_or(0.0))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The object store stops for a minute mid-ingest, then comes back.
#[test]
fn s3_stopped_for_a_minute_mid_ingest() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (s3, s3_port, _) = Service::s3(dir.path());
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    env.use_s3_warehouse_at(s3_port, S3_ACCESS_KEY, S3_SECRET_KEY);
    let drill = Drill::start(env);

    let (retries, exhausted) = (drill.retries(), drill.exhausted());
    let seen = drill.during(|| {
        s3.down();
        std::thread::sleep(Duration::from_secs(env_or("K2_DRILL_S3_OUTAGE_SECS", 60)));
        s3.up();
    });
    let what = "S3 stopped for a minute";
    drill.assert_not_ready_because(&seen, what, "are not committed yet");
    // Past the 30 s retry budget the failing operation is named on /readyz and counted.
    drill.assert_not_ready_because(&seen, what, "storage (");
    assert!(seen.paused, "{what}: consumption paused");
    let retried = grew(&retries, &drill.retries());
    assert!(
        retried.iter().any(|l| l.contains("catalog_load")
            || l.contains("data_file_write")
            || l.contains("commit")),
        "{what}: retried {retried:?}:\n{}",
        drill.tail()
    );
    assert!(
        !grew(&exhausted, &drill.exhausted()).is_empty(),
        "{what}: a retry episode outlasted its budget"
    );
    drill.recovered(&seen, what);
}

/// The S3 server stops accepting the sink's access key mid-ingest (revoked, as a wrong or
/// rotated credential is refused), then accepts it again: the sink retries the refused
/// writes and recovers on its own.
#[test]
fn s3_credentials_refused_then_fixed_at_run_time() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (_s3, s3_port, _) = Service::s3(dir.path());
    let (key, secret) = ("K2DRILLKEY", "k2-drill-secret");
    let grant = format!(
        "s3.configure -user k2-drill -access_key {key} -secret_key {secret} \
         -actions Read,Write,List,Tagging,Admin -apply"
    );
    weed_shell(s3_port, &grant);
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    env.use_s3_warehouse_at(s3_port, key, secret);
    let drill = Drill::start(env);

    let retries = drill.retries();
    let seen = drill.during(|| {
        weed_shell(
            s3_port,
            &format!("s3.configure -user k2-drill -access_key {key} -delete -apply"),
        );
        // Past the 30 s after which a failing operation is reported on /readyz, with the
        // backoff's 10 s steps to spare.
        std::thread::sleep(Duration::from_secs(50));
        weed_shell(s3_port, &grant);
    });
    let what = "S3 credentials refused, then fixed";
    drill.assert_not_ready_because(&seen, what, "storage (");
    let retried = grew(&retries, &drill.retries());
    assert!(
        retried.iter().any(|l| l.contains("catalog_load")
            || l.contains("data_file_write")
            || l.contains("commit")),
        "{what}: retried {retried:?}:\n{}",
        drill.tail()
    );
    drill.recovered(&seen, what);
}

/// A catalog's server killed with -9 mid-ingest and started again after `outage`: the
/// sink's catalog operations fail and are retried, records wait (not ready), and it all
/// lands once the catalog is back.
fn catalog_killed_and_restarted(drill: Drill, server: &Service, outage: Duration, what: &str) {
    let retries = drill.retries();
    let seen = drill.during(|| {
        server.kill9();
        std::thread::sleep(outage);
        server.up();
    });
    drill.assert_not_ready_because(&seen, what, "are not committed yet");
    assert!(
        !grew(&retries, &drill.retries()).is_empty(),
        "{what}: retries counted:\n{}",
        drill.tail()
    );
    drill.recovered(&seen, what);
}

/// The Iceberg REST catalog (and the object store in the same server) is killed mid-ingest
/// and restarted.
#[test]
fn rest_catalog_killed_and_restarted_mid_ingest() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (server, s3_port, rest_port) = Service::s3(dir.path());
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    env.use_rest_catalog_at(s3_port, rest_port);
    let drill = Drill::start(env);
    catalog_killed_and_restarted(
        drill,
        &server,
        outage(),
        "REST catalog killed and restarted",
    );
}

/// The PostgreSQL behind the SQL catalog is killed mid-ingest and restarted.
#[test]
fn postgres_catalog_killed_and_restarted_mid_ingest() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (postgres, port) = Service::postgres(dir.path());
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    env.use_postgres_catalog_at(port);
    let drill = Drill::start(env);
    // The catalog's connection pool waits up to 30 s for a connection before an operation
    // fails (and is retried): a shorter outage shows only as records waiting.
    catalog_killed_and_restarted(
        drill,
        &postgres,
        outage().max(Duration::from_secs(40)),
        "PostgreSQL catalog killed and restarted",
    );
}

/// The broker is stopped mid-ingest and started again: the sink says it has no broker,
/// then resumes from the table's offsets.
#[test]
fn broker_restarted_mid_ingest() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let (kafka, bootstrap) = Service::kafka(dir.path());
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    env.var("K2_KAFKA__BOOTSTRAP_SERVERS", &bootstrap);
    let drill = Drill::start(env);

    let seen = drill.during(|| {
        kafka.down();
        std::thread::sleep(outage());
        kafka.up();
    });
    let what = "broker restarted";
    drill.assert_not_ready_because(&seen, what, "kafka: no broker connected");
    drill.recovered(&seen, what);
}
