//! Topic names: `market.{asset_class}.{data_type}.{exchange}`, always lower-case.
//!
//! The name is the routing key of the whole system (it picks the schema, the table and the
//! partition count), so it is parsed strictly: anything that does not fit is rejected rather
//! than guessed at.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::data_type::DataType;

/// Every topic K2 owns starts with this segment.
pub const TOPIC_PREFIX: &str = "market";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic `{0}` does not have the form market.{{asset_class}}.{{data_type}}.{{exchange}}")]
    Shape(String),
    #[error("unknown data type `{0}` (expected one of trades, quotes, reference_data)")]
    UnknownDataType(String),
    #[error(
        "`{0}` is not a valid {1}: use lower-case letters, digits and `_`, starting with a letter"
    )]
    BadSegment(String, &'static str),
}

/// True for a valid name segment: `[a-z][a-z0-9_]*`, at most 64 bytes. Dots are excluded
/// because they separate segments; upper case is excluded so names have one spelling.
pub fn is_valid_segment(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// A parsed topic name. Ordered as its string form is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName {
    asset_class: String,
    data_type: DataType,
    exchange: String,
}

impl TopicName {
    /// Builds a topic name, lower-casing the asset class and exchange.
    pub fn new(
        asset_class: &str,
        data_type: DataType,
        exchange: &str,
    ) -> Result<Self, TopicNameError> {
        let asset_class = asset_class.to_ascii_lowercase();
        let exchange = exchange.to_ascii_lowercase();
        if !is_valid_segment(&asset_class) {
            return Err(TopicNameError::BadSegment(asset_class, "asset class"));
        }
        if !is_valid_segment(&exchange) {
            return Err(TopicNameError::BadSegment(exchange, "exchange code"));
        }
        Ok(Self {
            asset_class,
            data_type,
            exchange,
        })
    }

    pub fn asset_class(&self) -> &str {
        &self.asset_class
    }

    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }
}

impl Ord for TopicName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Segments cannot contain `.`, so comparing them in turn matches comparing the
        // full names.
        (
            self.asset_class.as_str(),
            self.data_type.as_str(),
            self.exchange.as_str(),
        )
            .cmp(&(
                other.asset_class.as_str(),
                other.data_type.as_str(),
                other.exchange.as_str(),
            ))
    }
}

impl PartialOrd for TopicName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_PREFIX}.{}.{}.{}",
            self.asset_class, self.data_type, self.exchange
        )
    }
}

impl FromStr for TopicName {
    type Err = TopicNameError;

    /// Parses strictly: exact prefix, four segments, lower-case only (a topic spelled
    /// `market.Equities...` is a different Kafka topic, not an alias).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || TopicNameError::Shape(s.to_string());
        let mut parts = s.split('.');
        let (Some(prefix), Some(ac), Some(dt), Some(ex), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(shape());
        };
        if prefix != TOPIC_PREFIX {
            return Err(shape());
        }
        let data_type = dt.parse()?;
        if !is_valid_segment(ac) {
            return Err(TopicNameError::BadSegment(ac.to_string(), "asset class"));
        }
        if !is_valid_segment(ex) {
            return Err(TopicNameError::BadSegment(ex.to_string(), "exchange code"));
        }
        Ok(Self {
            asset_class: ac.to_string(),
            data_type,
            exchange: ex.to_string(),
        })
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TopicName> for String {
    fn from(t: TopicName) -> String {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_lower_case_names() {
        let t = TopicName::new("Equities", DataType::Trades, "ASX").unwrap();
        assert_eq!(t.to_string(), "market.equities.trades.asx");
    }

    #[test]
    fn round_trips_every_data_type() {
        for dt in DataType::ALL {
            let t = TopicName::new("crypto", dt, "binance").unwrap();
            let back: TopicName = t.to_string().parse().unwrap();
            assert_eq!(back, t);
            assert_eq!(back.data_type(), dt);
        }
    }

    #[test]
    fn rejects_names_that_do_not_fit() {
        for bad in [
            "",
            "market",
            "market.equities.trades",
            "market.equities.trades.asx.extra",
            "markets.equities.trades.asx",
            "market.equities.trade.asx",
            "market.Equities.trades.asx",
            "market.equities.trades.ASX",
            "market..trades.asx",
            "market.equities.trades.",
            "market.1eq.trades.asx",
            "market.eq-uities.trades.asx",
        ] {
            assert!(
                bad.parse::<TopicName>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn names_the_unknown_data_type() {
        let err = "market.equities.bars.asx".parse::<TopicName>().unwrap_err();
        assert_eq!(err, TopicNameError::UnknownDataType("bars".into()));
    }

    #[test]
    fn orders_like_the_names() {
        let mut names: Vec<TopicName> = [
            "market.equities.trades.asx",
            "market.crypto.trades.binance",
            "market.equities.quotes.asx",
            "market.equities.reference_data.asx",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        names.sort();
        let mut strings: Vec<String> = names.iter().map(|t| t.to_string()).collect();
        let sorted = {
            let mut s = strings.clone();
            s.sort();
            s
        };
        assert_eq!(strings, sorted);
        strings.dedup();
        assert_eq!(strings.len(), 4);
    }

    #[test]
    fn rejects_bad_segments_when_building() {
        assert!(TopicName::new("equities", DataType::Quotes, "as.x").is_err());
        assert!(TopicName::new("", DataType::Quotes, "asx").is_err());
    }
}
