//! Market-data records as producers write them: typed trades and quotes, encoded as Avro
//! with the project's schemas in the Confluent wire format (magic byte 0, 4-byte
//! big-endian schema id, Avro binary body). Used by `k2-feed` and by the tests.

use apache_avro::types::Value;
use apache_avro::{Decimal, Schema};

use crate::schema::BuiltinSchema;
use crate::topic::DataType;

/// Scale of every decimal in the schemas.
pub const DECIMAL_SCALE: u32 = 8;
const UNITS: i128 = 100_000_000;

/// A decimal with 8 fractional digits, held as its unscaled integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dec8(pub i128);

impl Dec8 {
    pub fn from_units(units: i128) -> Self {
        Dec8(units)
    }

    /// `whole` plus `frac` hundred-millionths, e.g. `Dec8::new(42, 50_000_000)` = 42.5.
    pub fn new(whole: i64, frac: i64) -> Self {
        Dec8(i128::from(whole) * UNITS + i128::from(frac))
    }

    pub fn from_f64(v: f64) -> Self {
        Dec8((v * UNITS as f64).round() as i128)
    }

    pub fn to_f64(self) -> f64 {
        self.0 as f64 / UNITS as f64
    }

    fn to_avro(self) -> Value {
        // Minimal big-endian two's complement, as the Avro spec writes decimals.
        let bytes = self.0.to_be_bytes();
        let negative = self.0 < 0;
        let skip = bytes
            .windows(2)
            .take_while(|w| {
                (w[0] == 0 && !negative && w[1] & 0x80 == 0)
                    || (w[0] == 0xff && negative && w[1] & 0x80 != 0)
            })
            .count();
        Value::Decimal(Decimal::from(bytes[skip..].to_vec()))
    }
}

impl std::str::FromStr for Dec8 {
    type Err = String;

    /// `-12.5`, `42`, `0.00000001`: at most 8 fractional digits (more only if zeros).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?} is not a decimal with 8 places: {why}");
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && frac.is_empty() {
            return Err(bad("no digits"));
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(bad("not a number"));
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > DECIMAL_SCALE as usize {
            return Err(bad("more than 8 fractional digits"));
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad("out of range"))?
        };
        let frac_units: i128 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<8}")
                .parse()
                .map_err(|_| bad("out of range"))?
        };
        let units = whole
            .checked_mul(UNITS)
            .and_then(|w| w.checked_add(frac_units))
            .ok_or_else(|| bad("out of range"))?;
        Ok(Dec8(if negative { -units } else { units }))
    }
}

/// From decimal text (how Arrow decimals reach serde) or an integer.
impl<'de> serde::Deserialize<'de> for Dec8 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dec8;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a decimal number with at most 8 fractional digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dec8, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dec8, E> {
                Ok(Dec8::new(v, 0))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dec8, E> {
                Ok(Dec8(i128::from(v) * UNITS))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl std::fmt::Display for Dec8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:08}", a / UNITS as u128, a % UNITS as u128)
    }
}

/// Trade side as in `TradeSide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
    Unknown,
}

impl Side {
    fn to_avro(self) -> Value {
        let (i, s) = match self {
            Side::Buy => (0, "BUY"),
            Side::Sell => (1, "SELL"),
            Side::Unknown => (2, "UNKNOWN"),
        };
        Value::Enum(i, s.to_string())
    }
}

/// Fields every market-data record carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub symbol: String,
    pub company_id: Option<i64>,
    pub exchange: String,
    pub asset_class: String,
    /// Microseconds since the Unix epoch, UTC.
    pub exchange_timestamp: i64,
    pub sequence_number: i64,
    pub ingestion_timestamp: i64,
    pub isin: Option<String>,
    pub contract_type: Option<String>,
    pub settlement_currency: Option<String>,
    pub funding_rate: Option<Dec8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub envelope: Envelope,
    pub price: Dec8,
    pub quantity: Dec8,
    pub side: Option<Side>,
    pub qualifiers: Option<String>,
    pub venue: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub envelope: Envelope,
    /// `None`: no bid (empty side of the book).
    pub bid_price: Option<Dec8>,
    pub ask_price: Option<Dec8>,
    pub bid_size: Dec8,
    pub ask_size: Dec8,
    pub venue: Option<String>,
}

/// Instrument metadata (the `reference_data` schema).
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceData {
    pub symbol: String,
    pub company_id: Option<i64>,
    pub exchange: String,
    pub asset_class: String,
    /// When this version of the metadata became valid, microseconds UTC.
    pub exchange_timestamp: i64,
    pub name: String,
    pub isin: Option<String>,
    pub currency: Option<String>,
    pub base_asset: Option<String>,
    pub quote_asset: Option<String>,
    pub tick_size: Option<Dec8>,
    pub lot_size: Option<Dec8>,
    /// Days since 1970-01-01.
    pub listing_date: Option<i32>,
    pub delisting_date: Option<i32>,
    pub contract_type: Option<String>,
    pub settlement_currency: Option<String>,
    pub ingestion_timestamp: i64,
}

impl ReferenceData {
    pub fn to_avro(&self) -> Value {
        record(vec![
            ("symbol", string(&self.symbol)),
            ("company_id", opt(self.company_id, Value::Long)),
            ("exchange", string(&self.exchange)),
            ("asset_class", string(&self.asset_class)),
            (
                "exchange_timestamp",
                Value::TimestampMicros(self.exchange_timestamp),
            ),
            ("name", string(&self.name)),
            ("isin", opt(self.isin.as_deref(), string)),
            ("currency", opt(self.currency.as_deref(), string)),
            ("base_asset", opt(self.base_asset.as_deref(), string)),
            ("quote_asset", opt(self.quote_asset.as_deref(), string)),
            ("tick_size", opt(self.tick_size, Dec8::to_avro)),
            ("lot_size", opt(self.lot_size, Dec8::to_avro)),
            ("listing_date", opt(self.listing_date, Value::Date)),
            ("delisting_date", opt(self.delisting_date, Value::Date)),
            ("contract_type", opt(self.contract_type.as_deref(), string)),
            (
                "settlement_currency",
                opt(self.settlement_currency.as_deref(), string),
            ),
            (
                "ingestion_timestamp",
                Value::TimestampMicros(self.ingestion_timestamp),
            ),
        ])
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

impl Envelope {
    /// The envelope fields that come before a record's own fields, in schema order.
    fn head(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("symbol", string(&self.symbol)),
            ("company_id", opt(self.company_id, Value::Long)),
            ("exchange", string(&self.exchange)),
            ("asset_class", string(&self.asset_class)),
            (
                "exchange_timestamp",
                Value::TimestampMicros(self.exchange_timestamp),
            ),
        ]
    }

    /// The envelope fields that come after them.
    fn tail(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("sequence_number", Value::Long(self.sequence_number)),
            (
                "ingestion_timestamp",
                Value::TimestampMicros(self.ingestion_timestamp),
            ),
            ("isin", opt(self.isin.as_deref(), string)),
            ("contract_type", opt(self.contract_type.as_deref(), string)),
            (
                "settlement_currency",
                opt(self.settlement_currency.as_deref(), string),
            ),
            ("funding_rate", opt(self.funding_rate, Dec8::to_avro)),
        ]
    }
}

impl Trade {
    pub fn to_avro(&self) -> Value {
        let mut fields = self.envelope.head();
        fields.extend([
            ("price", self.price.to_avro()),
            ("quantity", self.quantity.to_avro()),
            ("side", opt(self.side, Side::to_avro)),
            ("qualifiers", opt(self.qualifiers.as_deref(), string)),
            ("venue", opt(self.venue.as_deref(), string)),
        ]);
        fields.extend(self.envelope.tail());
        record(fields)
    }
}

impl Quote {
    pub fn to_avro(&self) -> Value {
        let mut fields = self.envelope.head();
        fields.extend([
            ("bid_price", opt(self.bid_price, Dec8::to_avro)),
            ("ask_price", opt(self.ask_price, Dec8::to_avro)),
            ("bid_size", self.bid_size.to_avro()),
            ("ask_size", self.ask_size.to_avro()),
            ("venue", opt(self.venue.as_deref(), string)),
        ]);
        fields.extend(self.envelope.tail());
        record(fields)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("encoding a {data_type} record: {message}")]
pub struct EncodeError {
    pub data_type: &'static str,
    pub message: String,
}

/// Encodes records of one data type with one writer schema id.
#[derive(Debug, Clone)]
pub struct WireEncoder {
    data_type: DataType,
    schema: Schema,
    schema_id: u32,
}

impl WireEncoder {
    /// An encoder for the built-in schema of `data_type`, framed with `schema_id`.
    pub fn new(data_type: DataType, schema_id: u32) -> Self {
        WireEncoder {
            data_type,
            schema: BuiltinSchema::for_data_type(data_type).parse(),
            schema_id,
        }
    }

    /// An encoder for another (e.g. newer) writer schema.
    pub fn with_schema(data_type: DataType, schema: Schema, schema_id: u32) -> Self {
        WireEncoder {
            data_type,
            schema,
            schema_id,
        }
    }

    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// Appends the Confluent-framed Avro bytes of `record` to `out`, serialising it straight
    /// from the struct with apache-avro's schema-aware serializer: no `Value` tree and no
    /// allocation per record (what lets `k2-feed` drive the sink at hundreds of thousands
    /// of records a second). The same bytes as [`Self::encode`] of its `to_avro()`.
    pub fn encode_into(&self, record: &Record<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(0);
        out.extend_from_slice(&self.schema_id.to_be_bytes());
        let written = match record {
            Record::Trade(t) => {
                apache_avro::write_avro_datum_ref(&self.schema, &TradeWire::of(t), out)
            }
            Record::Quote(q) => {
                apache_avro::write_avro_datum_ref(&self.schema, &QuoteWire::of(q), out)
            }
            Record::Reference(r) => {
                apache_avro::write_avro_datum_ref(&self.schema, &ReferenceWire::of(r), out)
            }
        };
        written.map(|_| ()).map_err(|e| EncodeError {
            data_type: self.data_type.as_str(),
            message: e.to_string(),
        })
    }

    /// Confluent-framed Avro bytes of `value`, which must fit the encoder's schema.
    pub fn encode(&self, value: Value) -> Result<Vec<u8>, EncodeError> {
        let body = apache_avro::to_avro_datum(&self.schema, value).map_err(|e| EncodeError {
            data_type: self.data_type.as_str(),
            message: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(5 + body.len());
        out.push(0);
        out.extend_from_slice(&self.schema_id.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// A typed record to encode with [`WireEncoder::encode_into`].
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Trade(&'a Trade),
    Quote(&'a Quote),
    Reference(&'a ReferenceData),
}

/// A decimal's minimal big-endian two's complement (as the Avro spec writes decimals),
/// without allocating.
#[derive(Clone, Copy)]
struct DecimalBytes {
    bytes: [u8; 16],
    start: usize,
}

impl DecimalBytes {
    fn of(d: Dec8) -> Self {
        let bytes = d.0.to_be_bytes();
        let negative = d.0 < 0;
        let start = bytes
            .windows(2)
            .take_while(|w| {
                (w[0] == 0 && !negative && w[1] & 0x80 == 0)
                    || (w[0] == 0xff && negative && w[1] & 0x80 != 0)
            })
            .count();
        DecimalBytes { bytes, start }
    }
}

impl serde::Serialize for DecimalBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes[self.start..])
    }
}

impl serde::Serialize for Side {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (i, name) = match self {
            Side::Buy => (0, "BUY"),
            Side::Sell => (1, "SELL"),
            Side::Unknown => (2, "UNKNOWN"),
        };
        s.serialize_unit_variant("TradeSide", i, name)
    }
}

// The wire views below borrow a record in the shape of its Avro schema: fields in schema
// order (the schema-aware serializer writes them as they come), strings borrowed,
// decimals as bytes on the stack.

#[derive(serde::Serialize)]
struct TradeWire<'a> {
    symbol: &'a str,
    company_id: Option<i64>,
    exchange: &'a str,
    asset_class: &'a str,
    exchange_timestamp: i64,
    price: DecimalBytes,
    quantity: DecimalBytes,
    side: Option<Side>,
    qualifiers: Option<&'a str>,
    venue: Option<&'a str>,
    sequence_number: i64,
    ingestion_timestamp: i64,
    isin: Option<&'a str>,
    contract_type: Option<&'a str>,
    settlement_currency: Option<&'a str>,
    funding_rate: Option<DecimalBytes>,
}

impl<'a> TradeWire<'a> {
    fn of(t: &'a Trade) -> Self {
        let e = &t.envelope;
        TradeWire {
            symbol: &e.symbol,
            company_id: e.company_id,
            exchange: &e.exchange,
            asset_class: &e.asset_class,
            exchange_timestamp: e.exchange_timestamp,
            price: DecimalBytes::of(t.price),
            quantity: DecimalBytes::of(t.quantity),
            side: t.side,
            qualifiers: t.qualifiers.as_deref(),
            venue: t.venue.as_deref(),
            sequence_number: e.sequence_number,
            ingestion_timestamp: e.ingestion_timestamp,
            isin: e.isin.as_deref(),
            contract_type: e.contract_type.as_deref(),
            settlement_currency: e.settlement_currency.as_deref(),
            funding_rate: e.funding_rate.map(DecimalBytes::of),
        }
    }
}

#[derive(serde::Serialize)]
struct QuoteWire<'a> {
    symbol: &'a str,
    company_id: Option<i64>,
    exchange: &'a str,
    asset_class: &'a str,
    exchange_timestamp: i64,
    bid_price: Option<DecimalBytes>,
    ask_price: Option<DecimalBytes>,
    bid_size: DecimalBytes,
    ask_size: DecimalBytes,
    venue: Option<&'a str>,
    sequence_number: i64,
    ingestion_timestamp: i64,
    isin: Option<&'a str>,
    contract_type: Option<&'a str>,
    settlement_currency: Option<&'a str>,
    funding_rate: Option<DecimalBytes>,
}

impl<'a> QuoteWire<'a> {
    fn of(q: &'a Quote) -> Self {
        let e = &q.envelope;
        QuoteWire {
            symbol: &e.symbol,
            company_id: e.company_id,
            exchange: &e.exchange,
            asset_class: &e.asset_class,
            exchange_timestamp: e.exchange_timestamp,
            bid_price: q.bid_price.map(DecimalBytes::of),
            ask_price: q.ask_price.map(DecimalBytes::of),
            bid_size: DecimalBytes::of(q.bid_size),
            ask_size: DecimalBytes::of(q.ask_size),
            venue: q.venue.as_deref(),
            sequence_number: e.sequence_number,
            ingestion_timestamp: e.ingestion_timestamp,
            isin: e.isin.as_deref(),
            contract_type: e.contract_type.as_deref(),
            settlement_currency: e.settlement_currency.as_deref(),
            funding_rate: e.funding_rate.map(DecimalBytes::of),
        }
    }
}

#[derive(serde::Serialize)]
struct ReferenceWire<'a> {
    symbol: &'a str,
    company_id: Option<i64>,
    exchange: &'a str,
    asset_class: &'a str,
    exchange_timestamp: i64,
    name: &'a str,
    isin: Option<&'a str>,
    currency: Option<&'a str>,
    base_asset: Option<&'a str>,
    quote_asset: Option<&'a str>,
    tick_size: Option<DecimalBytes>,
    lot_size: Option<DecimalBytes>,
    listing_date: Option<i32>,
    delisting_date: Option<i32>,
    contract_type: Option<&'a str>,
    settlement_currency: Option<&'a str>,
    ingestion_timestamp: i64,
}

impl<'a> ReferenceWire<'a> {
    fn of(r: &'a ReferenceData) -> Self {
        ReferenceWire {
            symbol: &r.symbol,
            company_id: r.company_id,
            exchange: &r.exchange,
            asset_class: &r.asset_class,
            exchange_timestamp: r.exchange_timestamp,
            name: &r.name,
            isin: r.isin.as_deref(),
            currency: r.currency.as_deref(),
            base_asset: r.base_asset.as_deref(),
            quote_asset: r.quote_asset.as_deref(),
            tick_size: r.tick_size.map(DecimalBytes::of),
            lot_size: r.lot_size.map(DecimalBytes::of),
            listing_date: r.listing_date,
            delisting_date: r.delisting_date,
            contract_type: r.contract_type.as_deref(),
            settlement_currency: r.settlement_currency.as_deref(),
            ingestion_timestamp: r.ingestion_timestamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!("42.5".parse::<Dec8>(), Ok(Dec8::new(42, 50_000_000)));
        assert_eq!("-0.00000001".parse::<Dec8>(), Ok(Dec8(-1)));
        assert_eq!("7".parse::<Dec8>(), Ok(Dec8::new(7, 0)));
        assert_eq!(
            "1.100000000000".parse::<Dec8>(),
            Ok(Dec8::new(1, 10_000_000))
        );
        assert!("1.000000001".parse::<Dec8>().is_err());
        assert!("1e5".parse::<Dec8>().is_err());
        assert!("".parse::<Dec8>().is_err());
        assert!("-".parse::<Dec8>().is_err());
        let d: Dec8 = serde_json::from_str("\"123.45678901\"").unwrap();
        assert_eq!(d.to_string(), "123.45678901");
    }

    #[test]
    fn decimal_display_and_minimal_bytes() {
        assert_eq!(Dec8::new(42, 50_000_000).to_string(), "42.50000000");
        assert_eq!(Dec8(-1).to_string(), "-0.00000001");
        let Value::Decimal(d) = Dec8(127).to_avro() else {
            panic!()
        };
        assert_eq!(Vec::<u8>::try_from(d).unwrap(), vec![127]);
        let Value::Decimal(d) = Dec8(128).to_avro() else {
            panic!()
        };
        assert_eq!(Vec::<u8>::try_from(d).unwrap(), vec![0, 128]);
        let Value::Decimal(d) = Dec8(-129).to_avro() else {
            panic!()
        };
        assert_eq!(Vec::<u8>::try_from(d).unwrap(), vec![0xff, 0x7f]);
    }

    #[test]
    fn trade_encodes_with_header() {
        let t = Trade {
            envelope: Envelope {
                symbol: "BHP".into(),
                company_id: Some(7),
                exchange: "asx".into(),
                asset_class: "equities".into(),
                exchange_timestamp: 1_394_500_000_000_000,
                sequence_number: 1,
                ingestion_timestamp: 1_394_500_000_000_001,
                isin: None,
                contract_type: None,
                settlement_currency: None,
                funding_rate: None,
            },
            price: Dec8::new(36, 12_000_000),
            quantity: Dec8::new(100, 0),
            side: Some(Side::Buy),
            qualifiers: None,
            venue: None,
        };
        let bytes = WireEncoder::new(DataType::Trades, 1)
            .encode(t.to_avro())
            .unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 1]);
    }

    /// The direct encoder writes exactly the generic encoder's bytes, for every field shape:
    /// nulls and values in every union, negative and multi-byte decimals, every side.
    #[test]
    fn direct_encoding_is_byte_for_byte_the_generic_one() {
        let envelope = |with_options: bool| Envelope {
            symbol: "BTCUSDT".into(),
            company_id: with_options.then_some(-12_345),
            exchange: "binance".into(),
            asset_class: "crypto".into(),
            exchange_timestamp: 1_765_065_600_123_456,
            sequence_number: i64::MAX - 3,
            ingestion_timestamp: -1,
            isin: with_options.then(|| "AU000000BHP4".into()),
            contract_type: with_options.then(|| "perpetual".into()),
            settlement_currency: with_options.then(|| "USDT".into()),
            funding_rate: with_options.then_some(Dec8(-129)),
        };
        let decimals = [
            Dec8(0),
            Dec8(127),
            Dec8(128),
            Dec8(-1),
            Dec8(-129),
            Dec8::new(60_123, 45_678_901),
            Dec8(i128::from(i64::MAX) * 1_000),
        ];
        let mut out = Vec::new();
        let mut check = |dt: DataType, record: Record<'_>, value: Value| {
            let encoder = WireEncoder::new(dt, 42);
            out.clear();
            encoder.encode_into(&record, &mut out).unwrap();
            assert_eq!(out, encoder.encode(value).unwrap(), "{record:?}");
        };
        for (i, with) in [true, false].into_iter().enumerate() {
            for (j, d) in decimals.iter().enumerate() {
                let side =
                    [Some(Side::Buy), Some(Side::Sell), Some(Side::Unknown), None][(i + j) % 4];
                let t = Trade {
                    envelope: envelope(with),
                    price: *d,
                    quantity: decimals[(j + 1) % decimals.len()],
                    side,
                    qualifiers: with.then(|| "XT".into()),
                    venue: with.then(|| "CXA".into()),
                };
                check(DataType::Trades, Record::Trade(&t), t.to_avro());
                let q = Quote {
                    envelope: envelope(with),
                    bid_price: with.then_some(*d),
                    ask_price: (!with).then_some(*d),
                    bid_size: *d,
                    ask_size: decimals[(j + 2) % decimals.len()],
                    venue: with.then(|| "CXA".into()),
                };
                check(DataType::Quotes, Record::Quote(&q), q.to_avro());
                let r = ReferenceData {
                    symbol: "BHP".into(),
                    company_id: with.then_some(7),
                    exchange: "asx".into(),
                    asset_class: "equities".into(),
                    exchange_timestamp: 1,
                    name: "BHP Group".into(),
                    isin: with.then(|| "AU000000BHP4".into()),
                    currency: with.then(|| "AUD".into()),
                    base_asset: None,
                    quote_asset: with.then(|| "AUD".into()),
                    tick_size: with.then_some(*d),
                    lot_size: (!with).then_some(*d),
                    listing_date: with.then_some(-3),
                    delisting_date: with.then_some(20_000),
                    contract_type: None,
                    settlement_currency: with.then(|| "AUD".into()),
                    ingestion_timestamp: 2,
                };
                check(DataType::ReferenceData, Record::Reference(&r), r.to_avro());
            }
        }
    }
}
