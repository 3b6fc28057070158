//! Bad input the sink must dead-letter, one record of every kind, and the schema setup
//! some of it needs.

use crate::TestEnv;
use crate::feed::{self, Raw};
use k2_common::records::Trade;

/// Maps schema id `id` (for this environment's sink) to a trade writer schema the table
/// cannot read: `price` (required, no default) is missing.
pub fn register_trade_without_price(env: &mut TestEnv, id: u32) {
    let mut schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/trade.avsc")).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "price");
    let bad_schema = env.dir.path().join("trade-without-price.avsc");
    std::fs::write(&bad_schema, schema.to_string()).unwrap();
    env.var(
        "K2_SCHEMAS__IDS",
        &format!("{{{id}=\"{}\"}}", bad_schema.display()),
    );
}

/// A poison record: what is produced and the error kind its dead letter must carry.
pub struct Poison {
    pub raw: Raw,
    pub kind: &'static str,
}

/// One record of every kind of bad input the sink must dead-letter (on the asx trades
/// and quotes topics of `env`); `bad_schema_id` is a schema id the sink maps to a trade
/// schema the table cannot read ([`register_trade_without_price`]).
pub fn poison_records(env: &TestEnv, bad_schema_id: u32) -> Vec<Poison> {
    use k2_common::records::{Dec8, WireEncoder};
    use k2_common::topic::DataType;
    let topic = env.topic(&env.asx, "trades");
    let quotes_topic = env.topic(&env.asx, "quotes");
    let base = |seq| feed::trade(&env.asx, "equities", "BHP", seq);
    let encode = |t: &Trade| {
        WireEncoder::new(DataType::Trades, 1)
            .encode(t.to_avro())
            .unwrap()
    };
    let raw = |value: Option<Vec<u8>>| Raw {
        topic: topic.clone(),
        key: Some(b"BHP".to_vec()),
        value,
    };
    let mut out = Vec::new();
    let mut add = |value: Option<Vec<u8>>, kind| {
        out.push(Poison {
            raw: raw(value),
            kind,
        })
    };

    add(None, "missing_value");
    add(Some(vec![0, 0, 1]), "bad_magic_byte");
    let mut magic = encode(&base(1));
    magic[0] = 1;
    add(Some(magic), "bad_magic_byte");
    let mut unknown = encode(&base(2));
    unknown[1..5].copy_from_slice(&77u32.to_be_bytes());
    add(Some(unknown), "unknown_schema_id");
    let mut incompatible = encode(&base(3));
    incompatible[1..5].copy_from_slice(&bad_schema_id.to_be_bytes());
    add(Some(incompatible), "incompatible_schema");
    add(
        Some(vec![0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        "undecodable_body",
    );
    let whole = encode(&base(4));
    add(Some(whole[..whole.len() - 3].to_vec()), "undecodable_body");
    let mut trailing = encode(&base(5));
    trailing.extend_from_slice(&[2, 4, 6]);
    add(Some(trailing), "undecodable_body");
    let mut t = base(6);
    t.envelope.symbol = "ZZZ".into();
    let mut utf8 = encode(&t);
    let at = utf8.windows(3).position(|w| w == b"ZZZ").unwrap();
    utf8[at..at + 3].copy_from_slice(&[0xff, 0xfe, 0xfd]);
    add(Some(utf8), "undecodable_body");

    let mut t = base(7);
    t.price = Dec8(0);
    add(Some(encode(&t)), "invalid_price");
    let mut t = base(8);
    t.price = Dec8(-5);
    add(Some(encode(&t)), "invalid_price");
    let mut t = base(9);
    t.quantity = Dec8(-1);
    add(Some(encode(&t)), "invalid_size");
    let mut t = base(10);
    t.envelope.exchange_timestamp = 315_532_800_000_000; // 1980-01-01
    add(Some(encode(&t)), "timestamp_out_of_range");
    let mut t = base(11);
    t.envelope.exchange_timestamp = (chrono::Utc::now().timestamp() + 3 * 86_400) * 1_000_000;
    add(Some(encode(&t)), "timestamp_out_of_range");
    let mut t = base(12);
    t.envelope.symbol = String::new();
    add(Some(encode(&t)), "empty_symbol");
    let mut t = base(13);
    t.envelope.exchange = env.binance.clone();
    add(Some(encode(&t)), "exchange_mismatch");
    let mut t = base(14);
    t.envelope.asset_class = "crypto".into();
    add(Some(encode(&t)), "asset_class_mismatch");

    let mut q = feed::quote(&env.asx, "equities", "CBA", 15);
    q.ask_size = Dec8(-100);
    out.push(Poison {
        raw: Raw {
            topic: quotes_topic.clone(),
            key: Some(b"CBA".to_vec()),
            value: Some(
                WireEncoder::new(DataType::Quotes, 2)
                    .encode(q.to_avro())
                    .unwrap(),
            ),
        },
        kind: "invalid_size",
    });
    let mut q = feed::quote(&env.asx, "equities", "CBA", 16);
    q.bid_price = Some(Dec8(0));
    out.push(Poison {
        raw: Raw {
            topic: quotes_topic,
            key: Some(b"CBA".to_vec()),
            value: Some(
                WireEncoder::new(DataType::Quotes, 2)
                    .encode(q.to_avro())
                    .unwrap(),
            ),
        },
        kind: "invalid_price",
    });
    out
}
