//! Fault injection for tests and demos: sequence gaps, sequence duplicates and poison
//! records (one of each kind the sink must dead-letter, in turn).

use std::collections::HashMap;

use k2_common::records::{Dec8, WireEncoder};
use k2_common::topic::DataType;

use crate::event::Event;

/// Every N market records (0 = never).
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultPlan {
    pub gap_every: u64,
    pub duplicate_every: u64,
    pub poison_every: u64,
}

/// What was injected, for the summary and for tests to compare with the sink's counts.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    pub gaps: u64,
    pub duplicates: u64,
    pub poison: HashMap<&'static str, u64>,
}

impl Injected {
    pub fn poison_total(&self) -> u64 {
        self.poison.values().sum()
    }
}

/// The poison kinds, cycled through. Names are the sink's dead-letter error kinds.
pub const POISON_KINDS: [&str; 7] = [
    "bad_magic_byte",
    "unknown_schema_id",
    "undecodable_body",
    "invalid_price",
    "invalid_size",
    "empty_symbol",
    "timestamp_out_of_range",
];

pub struct Faults {
    plan: FaultPlan,
    seen: u64,
    /// Per (topic key, symbol): how many sequence numbers were skipped so far.
    shift: HashMap<(DataType, String, String), i64>,
    next_poison: usize,
    pub injected: Injected,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Self {
        Faults {
            plan,
            seen: 0,
            shift: HashMap::new(),
            next_poison: 0,
            injected: Injected::default(),
        }
    }

    /// The events to send for `event`: itself (possibly with a shifted sequence number),
    /// and possibly a duplicate and a poison record after it.
    pub fn apply(&mut self, mut event: Event, out: &mut Vec<Event>) {
        if event.sequence_mut().is_none() {
            out.push(event);
            return;
        }
        self.seen += 1;
        let every = |n: u64| n > 0 && self.seen.is_multiple_of(n);
        let key = (
            event.data_type(),
            event.exchange().to_string(),
            event.symbol().to_string(),
        );
        let shift = self.shift.entry(key).or_default();
        if every(self.plan.gap_every) {
            // Skip one sequence number from here on: the sink sees a gap of one.
            *shift += 1;
            self.injected.gaps += 1;
        }
        let shift = *shift;
        if let Some(seq) = event.sequence_mut() {
            *seq += shift;
        }
        let duplicate = every(self.plan.duplicate_every);
        let poison = every(self.plan.poison_every);
        if poison {
            let kind = POISON_KINDS[self.next_poison % POISON_KINDS.len()];
            self.next_poison += 1;
            *self.injected.poison.entry(kind).or_default() += 1;
            out.push(poison_of(&event, kind));
        }
        if duplicate {
            self.injected.duplicates += 1;
            out.push(event.clone());
        }
        out.push(event);
    }
}

/// A broken copy of a trade or quote, of the given kind.
fn poison_of(event: &Event, kind: &'static str) -> Event {
    let mut broken = event.clone();
    match (&mut broken, kind) {
        (Event::Trade(t), "invalid_price") => t.price = Dec8(0),
        (Event::Quote(q), "invalid_price") => q.ask_price = Some(Dec8(-1)),
        (Event::Trade(t), "invalid_size") => t.quantity = Dec8(-1),
        (Event::Quote(q), "invalid_size") => q.bid_size = Dec8(-1),
        (Event::Trade(t), "empty_symbol") => t.envelope.symbol.clear(),
        (Event::Quote(q), "empty_symbol") => q.envelope.symbol.clear(),
        (Event::Trade(t), "timestamp_out_of_range") => t.envelope.exchange_timestamp = 0,
        (Event::Quote(q), "timestamp_out_of_range") => q.envelope.exchange_timestamp = 0,
        _ => {}
    }
    let data_type = event.data_type();
    let (id, value) = match &broken {
        Event::Trade(t) => (1, t.to_avro()),
        Event::Quote(q) => (2, q.to_avro()),
        _ => unreachable!("only market records are poisoned"),
    };
    let mut bytes = WireEncoder::new(data_type, id)
        .encode(value)
        .expect("the built-in schema encodes its own records");
    match kind {
        "bad_magic_byte" => bytes[0] = 0x7f,
        "unknown_schema_id" => bytes[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes()),
        "undecodable_body" => bytes.truncate(bytes.len() / 2),
        _ => {}
    }
    Event::Raw {
        data_type,
        exchange: event.exchange().to_string(),
        asset_class: event.asset_class().to_string(),
        key: event.symbol().as_bytes().to_vec(),
        value: Some(bytes),
        kind,
    }
}
