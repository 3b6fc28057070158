//! The kinds of market data K2 lands, and everything K2 knows about each in one place: its
//! name (the topic segment and the table), its Avro schema, how its table is partitioned,
//! whether its records carry per-instrument sequence numbers, and which columns must be
//! positive. The sink, the query library, the feed and the benchmarks read these facts from
//! here, so adding a data type is one entry in [`DataType::spec`] plus its schema.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::schema::BuiltinSchema;
use crate::topic::TopicNameError;

/// A kind of market data; each has its own schema and Iceberg table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Trades,
    Quotes,
    ReferenceData,
}

/// What K2 knows about one data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    /// The topic segment, and the name of the table in namespace `market_data`.
    pub name: &'static str,
    /// The shipped Avro schema its records are read with.
    pub schema: BuiltinSchema,
    /// Partitioned by `day(exchange_timestamp)` (and exchange); otherwise by exchange only.
    pub day_partitioned: bool,
    /// Records carry a per-instrument `sequence_number` the sink checks for gaps.
    pub sequenced: bool,
    /// Columns that must be > 0 where present (nulls allowed where the schema allows them).
    pub positive: &'static [&'static str],
    /// Columns that must be ≥ 0 where present.
    pub non_negative: &'static [&'static str],
    /// Its topic is compacted by key (the symbol): a record without a value is a
    /// tombstone, the producer withdrawing the key's state, not a bad record.
    pub compacted: bool,
}

const TRADES: Description = Description {
    name: "trades",
    schema: BuiltinSchema::TRADE,
    day_partitioned: true,
    sequenced: true,
    positive: &["price"],
    non_negative: &["quantity"],
    compacted: false,
};

const QUOTES: Description = Description {
    name: "quotes",
    schema: BuiltinSchema::QUOTE,
    day_partitioned: true,
    sequenced: true,
    positive: &["bid_price", "ask_price"],
    non_negative: &["bid_size", "ask_size"],
    compacted: false,
};

/// Reference data is a compacted topic of per-instrument state, not a time series: one
/// table partitioned by exchange, no sequence numbers.
const REFERENCE_DATA: Description = Description {
    name: "reference_data",
    schema: BuiltinSchema::REFERENCE_DATA,
    day_partitioned: false,
    sequenced: false,
    positive: &["tick_size"],
    non_negative: &["lot_size"],
    compacted: true,
};

/// The sink's own table of sequence anomalies (gaps, duplicates, regressions), committed in
/// the same cycle as the data it was found in.
pub const SEQUENCE_EVENTS_TABLE: &str = "sequence_events";

/// One-minute OHLCV bars per symbol, built by maintenance from each closed day of trades
/// (a derived table: the query library reads it where it holds exactly what the pinned
/// trades hold, and the trades otherwise).
pub const BARS_1M_TABLE: &str = "bars_1m";

/// Every table K2 writes in `market_data`: one per data type, then
/// [`SEQUENCE_EVENTS_TABLE`] and [`BARS_1M_TABLE`].
pub const TABLES: [&str; 5] = [
    TRADES.name,
    QUOTES.name,
    REFERENCE_DATA.name,
    SEQUENCE_EVENTS_TABLE,
    BARS_1M_TABLE,
];

impl DataType {
    pub const ALL: [DataType; 3] = [DataType::Trades, DataType::Quotes, DataType::ReferenceData];

    /// Everything K2 knows about this data type.
    pub const fn describe(self) -> &'static Description {
        match self {
            DataType::Trades => &TRADES,
            DataType::Quotes => &QUOTES,
            DataType::ReferenceData => &REFERENCE_DATA,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.describe().name
    }

    /// The Iceberg table in namespace `market_data` that holds this data type.
    pub const fn table_name(self) -> &'static str {
        self.describe().name
    }

    /// The data type whose table has this name.
    pub fn from_table_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.table_name() == name)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = TopicNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| TopicNameError::UnknownDataType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_type_has_a_distinct_name_and_its_own_schema() {
        let mut names: Vec<&str> = DataType::ALL.iter().map(|d| d.as_str()).collect();
        names.push(SEQUENCE_EVENTS_TABLE);
        names.push(BARS_1M_TABLE);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TABLES.len());
        for d in DataType::ALL {
            assert_eq!(d.as_str().parse::<DataType>().unwrap(), d);
            assert_eq!(DataType::from_table_name(d.table_name()), Some(d));
            assert_eq!(BuiltinSchema::for_data_type(d), d.describe().schema);
        }
    }

    #[test]
    fn every_checked_column_is_a_field_of_the_schema() {
        for d in DataType::ALL {
            let spec = d.describe();
            let apache_avro::Schema::Record(record) = spec.schema.parse() else {
                panic!("{d}: not a record schema");
            };
            for column in spec.positive.iter().chain(spec.non_negative) {
                assert!(
                    record.fields.iter().any(|f| f.name == *column),
                    "{d}: {column} is not a field of {}",
                    spec.schema.name
                );
            }
            if spec.sequenced {
                assert!(
                    record.fields.iter().any(|f| f.name == "sequence_number"),
                    "{d}: sequenced without a sequence_number field"
                );
            }
        }
    }
}
