//! Running k2-sink in tests and checking what it landed: producing with lineage keys, a
//! background feed, waiting on its log and metrics, signals, exactly-once assertions.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::TestEnv;
use crate::feed::{self, ASX_SYMBOLS, CRYPTO_SYMBOLS, Feed, Raw};
use crate::tables::{self, Scanned};

/// A record's lineage: `(kafka_topic, kafka_partition, kafka_offset)`.
pub type Key = (String, i32, i64);

/// Produces the records and returns their lineage keys in production order.
pub fn produce(rt: &tokio::runtime::Runtime, feed: &Feed, records: &[Raw]) -> Vec<Key> {
    let landed = rt.block_on(feed.send(records));
    records
        .iter()
        .zip(landed)
        .map(|(r, l)| (r.topic.clone(), l.partition, l.offset))
        .collect()
}

/// Every key exactly once: no duplicates, nothing missing, nothing extra.
pub fn assert_exactly_once(scanned: &Scanned, expected: &BTreeSet<Key>, what: &str) {
    let lineage = scanned.lineage();
    let mut counts: HashMap<&Key, usize> = HashMap::new();
    for k in &lineage {
        *counts.entry(k).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    let found: BTreeSet<Key> = lineage.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&found).take(5).collect();
    let extra: Vec<_> = found.difference(expected).take(5).collect();
    assert!(
        duplicated.is_empty() && missing.is_empty() && extra.is_empty(),
        "{what}: {} rows for {} expected; duplicated {duplicated:?}, missing {missing:?} \
         (of {}), extra {extra:?}",
        lineage.len(),
        expected.len(),
        expected.difference(&found).count(),
    );
}

pub fn kill9(child: &mut std::process::Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// Produces on every trades and quotes topic from a background thread, `chunk` records
/// every half second, until told to stop; returns the keys produced.
pub struct BackgroundFeed {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<BTreeSet<Key>>,
}

/// Every trades and quotes topic of both exchanges, with what feeds it.
pub type FeedTopic = (String, String, &'static str, &'static [&'static str], bool);

pub fn feed_topics(env: &TestEnv) -> Vec<FeedTopic> {
    [
        (&env.asx, "equities", &ASX_SYMBOLS[..]),
        (&env.binance, "crypto", &CRYPTO_SYMBOLS[..]),
    ]
    .into_iter()
    .flat_map(|(ex, ac, sy)| {
        [
            (env.topic(ex, "trades"), ex.clone(), ac, sy, true),
            (env.topic(ex, "quotes"), ex.clone(), ac, sy, false),
        ]
    })
    .collect()
}

/// Produces `chunk` records spread over `topics`, sequence numbers from `seq`.
pub fn produce_round(
    rt: &tokio::runtime::Runtime,
    feed: &Feed,
    topics: &[FeedTopic],
    seq: i64,
    chunk: usize,
) -> Vec<Key> {
    let mut records = Vec::with_capacity(chunk);
    for (topic, ex, ac, symbols, is_trade) in topics {
        let n = chunk / topics.len();
        if *is_trade {
            records.extend(
                feed::trades(topic, ex, ac, symbols, seq, n)
                    .into_iter()
                    .map(|(r, _)| r),
            );
        } else {
            records.extend(
                feed::quotes(topic, ex, ac, symbols, seq, n)
                    .into_iter()
                    .map(|(r, _)| r),
            );
        }
    }
    produce(rt, feed, &records)
}

impl BackgroundFeed {
    pub fn start(env: &TestEnv, chunk: usize, first_seq: i64) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let topics = feed_topics(env);
        let bootstrap = env.bootstrap();
        let handle = std::thread::spawn(move || {
            let rt = crate::runtime();
            let feed = Feed::at(&bootstrap);
            let mut keys = BTreeSet::new();
            let mut seq = first_seq;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                keys.extend(produce_round(&rt, &feed, &topics, seq, chunk));
                seq += (chunk / topics.len()) as i64;
                std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
            }
            keys
        });
        BackgroundFeed { stop, handle }
    }

    pub fn finish(self) -> BTreeSet<Key> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().expect("feed thread")
    }
}

/// Waits until the sink logged a non-empty assignment.
pub fn wait_for_assignment(env: &TestEnv, log: &str, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !env
        .log(log)
        .lines()
        .any(|l| l.contains("partitions assigned partitions=") && !l.contains("partitions=0 "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no assignment:\n{}",
            env.log(log)
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("sink exited early ({status}):\n{}", env.log(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn rt_scan(env: &TestEnv, table: &str) -> Scanned {
    crate::runtime().block_on(tables::scan(env, table))
}

/// The sink's metrics address, from its log (tests bind port 0).
pub fn metrics_address(env: &TestEnv, log: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = env
            .log(log)
            .lines()
            .find(|l| l.contains("metrics endpoint listening"))
        {
            return line.rsplit("addr=").next().unwrap().trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics address:\n{}",
            env.log(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of a counter over all its label sets, scraped over plain HTTP.
pub fn scrape_counter(address: &str, name: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(address) else {
        return 0;
    };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

pub fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on the metrics address: status code and body (`None` if unreachable).
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Every sample of `name` (any labels) on the metrics endpoint, as `(labels, value)`.
pub fn scrape_samples(address: &str, name: &str) -> Vec<(String, f64)> {
    let Some((_, body)) = http_get(address, "/metrics") else {
        return Vec::new();
    };
    body.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Gauge value scraped from the metrics endpoint (`None` if unreachable or absent).
pub fn scrape_gauge(address: &str, name: &str) -> Option<i64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `done` every 100 ms until it holds, panicking after `timeout` with `what` and the
/// sink's log.
pub fn wait_until(
    env: &TestEnv,
    log: &str,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {timeout:?}:\n{}",
            env.log(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows of the trades and quotes tables together (what [`BackgroundFeed`] produces).
pub fn trades_and_quotes(env: &TestEnv) -> Scanned {
    let trades = rt_scan(env, "trades");
    let quotes = rt_scan(env, "quotes");
    Scanned {
        batches: trades.batches.into_iter().chain(quotes.batches).collect(),
        files: Vec::new(),
        snapshots: Vec::new(),
    }
}
