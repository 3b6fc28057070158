//! Validate: every decoded row is checked before it may enter a table; rows that fail are
//! returned with their original bytes and a reason, for the dead-letter topic. Rows that
//! pass are shaped into the table's Arrow schema with the lineage columns added.

use std::sync::Arc;

use arrow::compute::{cast, filter_record_batch};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, new_null_array,
};
use arrow_schema::DataType as ArrowType;

use k2_common::topic::{DataType, TopicName};

use crate::decode::avro::{DecodedBatch, Rejected, RowSource};
use k2_table::layout::{
    EXCHANGE, EXCHANGE_TIMESTAMP, INGESTED_AT, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC, SYMBOL,
    TableLayout,
};

/// Why a decoded row was rejected; the dead letter's error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleViolation {
    InvalidPrice,
    InvalidSize,
    TimestampOutOfRange,
    EmptySymbol,
    ExchangeMismatch,
    AssetClassMismatch,
}

impl RuleViolation {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleViolation::InvalidPrice => "invalid_price",
            RuleViolation::InvalidSize => "invalid_size",
            RuleViolation::TimestampOutOfRange => "timestamp_out_of_range",
            RuleViolation::EmptySymbol => "empty_symbol",
            RuleViolation::ExchangeMismatch => "exchange_mismatch",
            RuleViolation::AssetClassMismatch => "asset_class_mismatch",
        }
    }
}

/// The validate stage: decoded rows in, table rows and rejects out.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// Exchange timestamps before this are rejected (UTC microseconds).
    pub min_timestamp_micros: i64,
    /// Exchange timestamps further than this ahead of the sink's clock are rejected.
    pub max_clock_skew: std::time::Duration,
}

impl Validation {
    /// Validates `decoded` rows of `data_type` and shapes those that pass into `layout`,
    /// stamped as ingested now.
    pub fn apply(
        &self,
        data_type: DataType,
        layout: &TableLayout,
        decoded: DecodedBatch,
    ) -> Result<(Option<RecordBatch>, Vec<Rejected>), arrow_schema::ArrowError> {
        let now = chrono::Utc::now();
        let window = TimeWindow {
            min_micros: self.min_timestamp_micros,
            max_micros: (now + self.max_clock_skew).timestamp_micros(),
        };
        let violations = validate(data_type, &decoded, window);
        shape(layout, decoded, violations, now.timestamp_micros())
    }
}

/// A rejected row before its bytes are copied out.
#[derive(Debug)]
pub struct Violation {
    pub row: usize,
    pub rule: RuleViolation,
    pub message: String,
}

/// The bounds of plausible exchange timestamps, in UTC microseconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    pub min_micros: i64,
    pub max_micros: i64,
}

/// Validates every row of a decoded batch from one topic family (rows may come from
/// several topics of the same data type; each row is checked against its own topic).
pub fn validate(data_type: DataType, decoded: &DecodedBatch, window: TimeWindow) -> Vec<Violation> {
    let batch = &decoded.batch;
    let mut out: Vec<Violation> = Vec::new();
    let mut bad = vec![false; batch.num_rows()];
    let mut flag = |row: usize, rule: RuleViolation, message: String| {
        if !bad[row] {
            bad[row] = true;
            out.push(Violation { row, rule, message });
        }
    };

    let rules = data_type.describe();
    let (positive, non_negative) = (rules.positive, rules.non_negative);
    for (names, strict) in [(positive, true), (non_negative, false)] {
        for name in names {
            let Some(col) = batch.column_by_name(name) else {
                continue;
            };
            let Some(dec) = col.as_any().downcast_ref::<Decimal128Array>() else {
                continue;
            };
            let rule = if strict {
                RuleViolation::InvalidPrice
            } else {
                RuleViolation::InvalidSize
            };
            for (row, v) in dec.iter().enumerate() {
                if let Some(v) = v
                    && (v < 0 || (strict && v == 0))
                {
                    let shown = arrow::util::display::array_value_to_string(dec, row)
                        .unwrap_or_else(|_| v.to_string());
                    let expected = if strict { "> 0" } else { ">= 0" };
                    flag(row, rule, format!("{name} is {shown}, expected {expected}"));
                }
            }
        }
    }

    if let Some(ts) = timestamp_micros(batch) {
        for (row, v) in ts.iter().enumerate() {
            if let Some(v) = v
                && (v < window.min_micros || v > window.max_micros)
            {
                let shown = chrono::DateTime::from_timestamp_micros(v)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| v.to_string());
                flag(
                    row,
                    RuleViolation::TimestampOutOfRange,
                    format!("exchange_timestamp {shown} is outside the accepted window"),
                );
            }
        }
    }

    let strings = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| cast(c, &ArrowType::Utf8).ok())
    };
    if let Some(symbols) = strings(SYMBOL) {
        let symbols = symbols
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("utf8");
        for (row, s) in symbols.iter().enumerate() {
            if s.is_none_or(|s| s.trim().is_empty()) {
                flag(row, RuleViolation::EmptySymbol, "symbol is empty".into());
            }
        }
    }
    let topics: Vec<Option<TopicName>> = {
        // Parse each distinct topic once.
        let mut cache: Vec<(Arc<str>, Option<TopicName>)> = Vec::new();
        decoded
            .sources
            .iter()
            .map(|s| {
                if let Some((_, t)) = cache.iter().find(|(n, _)| Arc::ptr_eq(n, &s.topic)) {
                    return t.clone();
                }
                let t = s.topic.parse().ok();
                cache.push((s.topic.clone(), t.clone()));
                t
            })
            .collect()
    };
    for (column, rule) in [
        (EXCHANGE, RuleViolation::ExchangeMismatch),
        ("asset_class", RuleViolation::AssetClassMismatch),
    ] {
        let Some(values) = strings(column) else {
            continue;
        };
        let values = values.as_any().downcast_ref::<StringArray>().expect("utf8");
        for (row, v) in values.iter().enumerate() {
            let Some(topic) = &topics[row] else { continue };
            let expected = if column == EXCHANGE {
                topic.exchange()
            } else {
                topic.asset_class()
            };
            if v != Some(expected) {
                flag(
                    row,
                    rule,
                    format!(
                        "{column} is {:?} but the topic {topic} is for {expected:?}",
                        v.unwrap_or("")
                    ),
                );
            }
        }
    }
    out.sort_by_key(|v| v.row);
    out
}

fn timestamp_micros(batch: &RecordBatch) -> Option<TimestampMicrosecondArray> {
    let col = batch.column_by_name(EXCHANGE_TIMESTAMP)?;
    let c = cast(
        col,
        &ArrowType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
    )
    .ok()?;
    c.as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .cloned()
}

/// Splits a decoded batch into the rows that passed (in the table's schema) and the
/// rejected rows with their bytes.
pub fn shape(
    layout: &TableLayout,
    decoded: DecodedBatch,
    violations: Vec<Violation>,
    ingested_at_micros: i64,
) -> Result<(Option<RecordBatch>, Vec<Rejected>), arrow_schema::ArrowError> {
    let DecodedBatch { batch, sources } = decoded;
    let mut keep = vec![true; batch.num_rows()];
    let mut rejected = Vec::with_capacity(violations.len());
    for v in violations {
        keep[v.row] = false;
        let src: &RowSource = sources.get(v.row);
        rejected.push(Rejected {
            source: src.clone(),
            key: sources.key(src).map(<[u8]>::to_vec),
            value: Some(sources.value(src).to_vec()),
            kind: v.rule.as_str(),
            message: v.message,
        });
    }
    let kept_rows = keep.iter().filter(|k| **k).count();
    if kept_rows == 0 {
        return Ok((None, rejected));
    }
    let mask = BooleanArray::from(keep);
    let batch = if kept_rows == batch.num_rows() {
        batch
    } else {
        filter_record_batch(&batch, &mask)?
    };
    let kept: Vec<&RowSource> = sources
        .iter()
        .zip(mask.values().iter())
        .filter_map(|(s, k)| k.then_some(s))
        .collect();
    Ok((
        Some(to_table_batch(layout, &batch, &kept, ingested_at_micros)?),
        rejected,
    ))
}

/// The table-schema batch: decoded columns cast to the table's types, lineage appended.
fn to_table_batch(
    layout: &TableLayout,
    batch: &RecordBatch,
    sources: &[&RowSource],
    ingested_at_micros: i64,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(layout.arrow_schema.fields().len());
    for field in layout.arrow_schema.fields() {
        let col: ArrayRef = match field.name().as_str() {
            KAFKA_TOPIC => Arc::new(StringArray::from_iter_values(
                sources.iter().map(|s| &*s.topic),
            )),
            KAFKA_PARTITION => Arc::new(Int32Array::from_iter_values(
                sources.iter().map(|s| s.partition),
            )),
            KAFKA_OFFSET => Arc::new(Int64Array::from_iter_values(
                sources.iter().map(|s| s.offset),
            )),
            INGESTED_AT => Arc::new(
                TimestampMicrosecondArray::from(vec![ingested_at_micros; n])
                    .with_timezone("+00:00"),
            ),
            name => match batch.column_by_name(name) {
                Some(c) if c.data_type() == field.data_type() => c.clone(),
                Some(c) => cast(c, field.data_type())?,
                // A column the table gained after this writer schema: the default is null.
                None => new_null_array(field.data_type(), n),
            },
        };
        columns.push(col);
    }
    RecordBatch::try_new(layout.arrow_schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use crate::stages::test_support::{catalog, push_all, stages, trade_with};

    fn kinds(values: Vec<Vec<u8>>) -> Vec<(i64, &'static str)> {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut stages = stages(catalog(dir.path(), &rt), &rt);
        let values: Vec<Option<Vec<u8>>> = values.into_iter().map(Some).collect();
        let mut out: Vec<_> = push_all(&mut stages, &values)
            .iter()
            .map(|r| (r.source.offset, r.kind))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn each_rule_rejects_only_its_rows() {
        let hour = 3_600_000_000;
        let rejected = kinds(vec![
            trade_with("BHP", 1, 40, |_| {}),
            trade_with("BHP", 2, 40, |t| t.envelope.exchange_timestamp += hour),
            trade_with("BHP", 3, 40, |t| t.envelope.exchange_timestamp = -1),
            trade_with("BHP", 4, 40, |t| t.envelope.exchange = "chix".into()),
            trade_with("BHP", 5, 40, |t| t.envelope.asset_class = "crypto".into()),
            trade_with("BHP", 6, -1, |_| {}),
            trade_with("BHP", 7, 40, |t| {
                t.quantity = k2_common::records::Dec8::new(-5, 0)
            }),
            trade_with("", 8, 40, |t| t.envelope.symbol = String::new()),
            trade_with("BHP", 9, 40, |_| {}),
        ]);
        let expected = [
            (1, "timestamp_out_of_range"),
            (2, "timestamp_out_of_range"),
            (3, "exchange_mismatch"),
            (4, "asset_class_mismatch"),
            (5, "invalid_price"),
            (6, "invalid_size"),
            (7, "empty_symbol"),
        ];
        assert_eq!(rejected, expected);
    }
}
