//! What a feed emits before encoding: typed market-data records bound to their topic.

use k2_common::records::{Quote, ReferenceData, Trade};
use k2_common::topic::DataType;

/// One record for one topic.
#[derive(Debug, Clone)]
pub enum Event {
    Trade(Trade),
    Quote(Quote),
    Reference(ReferenceData),
    /// A deliberately broken record (fault injection): exact key and value bytes.
    Raw {
        data_type: DataType,
        exchange: String,
        asset_class: String,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        /// What the sink should call it when it dead-letters it.
        kind: &'static str,
    },
}

impl Event {
    pub fn data_type(&self) -> DataType {
        match self {
            Event::Trade(_) => DataType::Trades,
            Event::Quote(_) => DataType::Quotes,
            Event::Reference(_) => DataType::ReferenceData,
            Event::Raw { data_type, .. } => *data_type,
        }
    }

    pub fn exchange(&self) -> &str {
        match self {
            Event::Trade(t) => &t.envelope.exchange,
            Event::Quote(q) => &q.envelope.exchange,
            Event::Reference(r) => &r.exchange,
            Event::Raw { exchange, .. } => exchange,
        }
    }

    pub fn asset_class(&self) -> &str {
        match self {
            Event::Trade(t) => &t.envelope.asset_class,
            Event::Quote(q) => &q.envelope.asset_class,
            Event::Reference(r) => &r.asset_class,
            Event::Raw { asset_class, .. } => asset_class,
        }
    }

    pub fn symbol(&self) -> &str {
        match self {
            Event::Trade(t) => &t.envelope.symbol,
            Event::Quote(q) => &q.envelope.symbol,
            Event::Reference(r) => &r.symbol,
            Event::Raw { .. } => "",
        }
    }

    /// Exchange time in microseconds (for replay pacing).
    pub fn event_micros(&self) -> Option<i64> {
        match self {
            Event::Trade(t) => Some(t.envelope.exchange_timestamp),
            Event::Quote(q) => Some(q.envelope.exchange_timestamp),
            Event::Reference(r) => Some(r.exchange_timestamp),
            Event::Raw { .. } => None,
        }
    }

    /// The exchange sequence number, for market records.
    pub fn sequence_mut(&mut self) -> Option<&mut i64> {
        match self {
            Event::Trade(t) => Some(&mut t.envelope.sequence_number),
            Event::Quote(q) => Some(&mut q.envelope.sequence_number),
            _ => None,
        }
    }
}
