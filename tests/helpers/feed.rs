//! Producing test data: known trades and quotes in the Confluent wire format, and raw
//! (possibly broken) records, through a real idempotent producer.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use k2_common::records::{Dec8, Envelope, Quote, Side, Trade, WireEncoder};
use k2_common::topic::DataType;

use crate::BOOTSTRAP;

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// A record to produce: key and value bytes as they should appear on the topic.
#[derive(Debug, Clone)]
pub struct Raw {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

pub struct Feed {
    producer: FutureProducer,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        Self::at(BOOTSTRAP.as_str())
    }

    /// An idempotent producer to the broker at `bootstrap` (a test's private broker).
    pub fn at(bootstrap: &str) -> Self {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "zstd")
            .create()
            .expect("producer");
        Feed { producer }
    }

    /// A transactional producer (`transactional.id` = `id`), its transactions initialised.
    pub fn transactional(id: &str) -> Self {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", BOOTSTRAP.as_str())
            .set("transactional.id", id)
            .set("linger.ms", "5")
            .create()
            .expect("transactional producer");
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init transactions");
        Feed { producer }
    }

    /// Produces the records in one transaction of a [`Feed::transactional`] producer, then
    /// commits it or aborts it.
    pub async fn send_in_transaction(&self, records: &[Raw], commit: bool) -> Vec<Landed> {
        self.producer
            .begin_transaction()
            .expect("begin transaction");
        let landed = self.send(records).await;
        let t = Duration::from_secs(30);
        if commit {
            self.producer
                .commit_transaction(t)
                .expect("commit transaction");
        } else {
            self.producer
                .abort_transaction(t)
                .expect("abort transaction");
        }
        landed
    }

    /// Produces the records in order and waits for every acknowledgement.
    pub async fn send(&self, records: &[Raw]) -> Vec<Landed> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let mut rec = FutureRecord::<[u8], [u8]>::to(&r.topic);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            if let Some(v) = &r.value {
                rec = rec.payload(v);
            }
            loop {
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    Err((_, back)) => {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            let d = f
                .await
                .expect("delivery not cancelled")
                .map_err(|(e, _)| e)
                .expect("delivered");
            out.push(Landed {
                partition: d.partition,
                offset: d.offset,
            });
        }
        out
    }
}

/// Symbols of the test markets; the first ones are the busiest.
pub const ASX_SYMBOLS: [&str; 6] = ["BHP", "CBA", "NAB", "WBC", "ANZ", "RIO"];
pub const CRYPTO_SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

/// 2014-03-11T00:00:00Z in microseconds.
pub const DAY0_MICROS: i64 = 1_394_496_000_000_000;

fn envelope(exchange: &str, asset_class: &str, symbol: &str, seq: i64, ts: i64) -> Envelope {
    let crypto = asset_class == "crypto";
    Envelope {
        symbol: symbol.to_string(),
        company_id: (!crypto).then_some(1000 + seq % 7),
        exchange: exchange.to_string(),
        asset_class: asset_class.to_string(),
        exchange_timestamp: ts,
        sequence_number: seq,
        ingestion_timestamp: ts + 1_000,
        isin: (!crypto).then(|| format!("AU000000{symbol:0>4}")),
        contract_type: crypto.then(|| "spot".to_string()),
        settlement_currency: crypto.then(|| "USDT".to_string()),
        funding_rate: None,
    }
}

/// A trade whose every field is a function of `(symbol, seq)`, spread over two days.
pub fn trade(exchange: &str, asset_class: &str, symbol: &str, seq: i64) -> Trade {
    let ts = DAY0_MICROS + (seq * 7_919_000_000) % (2 * 86_400_000_000);
    Trade {
        envelope: envelope(exchange, asset_class, symbol, seq, ts),
        price: Dec8::from_units(10_000_000_000 + i128::from(seq) * 1_234_567),
        quantity: Dec8::from_units(i128::from(seq % 1000 + 1) * 1_000_000),
        side: Some(match seq % 3 {
            0 => Side::Buy,
            1 => Side::Sell,
            _ => Side::Unknown,
        }),
        qualifiers: (seq % 5 == 0).then(|| "XT".to_string()),
        venue: None,
    }
}

pub fn quote(exchange: &str, asset_class: &str, symbol: &str, seq: i64) -> Quote {
    let ts = DAY0_MICROS + (seq * 3_571_000_000) % (2 * 86_400_000_000);
    let mid = 10_000_000_000 + i128::from(seq) * 987_654;
    Quote {
        envelope: envelope(exchange, asset_class, symbol, seq, ts),
        bid_price: (seq % 11 != 0).then_some(Dec8::from_units(mid - 1_000_000)),
        ask_price: Some(Dec8::from_units(mid + 1_000_000)),
        bid_size: Dec8::from_units(i128::from(seq % 100) * 100_000_000),
        ask_size: Dec8::from_units(i128::from(seq % 50 + 1) * 100_000_000),
        venue: Some("MAIN".into()),
    }
}

/// A trade as a record for `topic`, framed with schema id 1.
pub fn trade_record(topic: &str, t: &Trade) -> Raw {
    Raw {
        topic: topic.to_string(),
        key: Some(t.envelope.symbol.as_bytes().to_vec()),
        value: Some(
            WireEncoder::new(DataType::Trades, 1)
                .encode(t.to_avro())
                .unwrap(),
        ),
    }
}

/// A quote as a record for `topic`, framed with schema id 2.
pub fn quote_record(topic: &str, q: &Quote) -> Raw {
    Raw {
        topic: topic.to_string(),
        key: Some(q.envelope.symbol.as_bytes().to_vec()),
        value: Some(
            WireEncoder::new(DataType::Quotes, 2)
                .encode(q.to_avro())
                .unwrap(),
        ),
    }
}

/// `n` records round-robin over `symbols`, with per-symbol sequence numbers starting at
/// `first_seq`; `make(symbol, seq)` builds each.
fn round_robin<T>(
    symbols: &[&str],
    first_seq: i64,
    n: usize,
    make: impl Fn(&str, i64) -> T,
) -> Vec<T> {
    (0..n)
        .map(|i| {
            make(
                symbols[i % symbols.len()],
                first_seq + (i / symbols.len()) as i64,
            )
        })
        .collect()
}

/// `n` trades for `exchange` on `topic` (see [`round_robin`]).
pub fn trades(
    topic: &str,
    exchange: &str,
    asset_class: &str,
    symbols: &[&str],
    first_seq: i64,
    n: usize,
) -> Vec<(Raw, Trade)> {
    round_robin(symbols, first_seq, n, |symbol, seq| {
        let t = trade(exchange, asset_class, symbol, seq);
        (trade_record(topic, &t), t)
    })
}

/// `n` quotes for `exchange` on `topic` (see [`round_robin`]).
pub fn quotes(
    topic: &str,
    exchange: &str,
    asset_class: &str,
    symbols: &[&str],
    first_seq: i64,
    n: usize,
) -> Vec<(Raw, Quote)> {
    round_robin(symbols, first_seq, n, |symbol, seq| {
        let q = quote(exchange, asset_class, symbol, seq);
        (quote_record(topic, &q), q)
    })
}

/// A dead letter as read back from the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl DeadLetter {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Every record of `topic` (one partition) up to its high watermark.
pub fn read_dead_letters(topic: &str) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP.as_str())
        .set("group.id", crate::unique("dlq-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < high {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(DeadLetter {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    consumer.unsubscribe();
    out
}
