//! A synthetic market: N symbols per exchange with skewed popularity (a few names trade
//! most, as on real exchanges), prices on a tick grid following a random walk, quotes
//! bracketing the last trade, per-symbol sequence numbers.

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use k2_common::records::{Dec8, Envelope, Quote, ReferenceData, Side, Trade};

use crate::event::Event;

/// Well-known names first, so demo output looks familiar.
const ASX_NAMES: [&str; 20] = [
    "BHP", "CBA", "CSL", "NAB", "WBC", "ANZ", "WES", "MQG", "WOW", "TLS", "RIO", "FMG", "GMG",
    "TCL", "WDS", "ALL", "REA", "STO", "QBE", "COL",
];
/// Base assets with a plausible price level in USDT.
const CRYPTO_BASES: [(&str, f64); 12] = [
    ("BTC", 60_000.0),
    ("ETH", 3_000.0),
    ("BNB", 600.0),
    ("SOL", 150.0),
    ("XRP", 0.6),
    ("DOGE", 0.15),
    ("ADA", 0.45),
    ("TRX", 0.12),
    ("AVAX", 35.0),
    ("LINK", 15.0),
    ("DOT", 7.0),
    ("LTC", 80.0),
];

/// Which exchanges to simulate, as configured in topics.yaml.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    pub code: String,
    pub asset_class: String,
}

impl ExchangeSpec {
    /// The two exchanges of the shipped topics.yaml: ASX equities and Binance crypto.
    pub fn shipped() -> Vec<ExchangeSpec> {
        vec![
            ExchangeSpec {
                code: "asx".into(),
                asset_class: "equities".into(),
            },
            ExchangeSpec {
                code: "binance".into(),
                asset_class: "crypto".into(),
            },
        ]
    }
}

#[derive(Debug)]
struct Instrument {
    exchange: usize,
    symbol: String,
    company_id: Option<i64>,
    crypto: bool,
    /// Last trade price in 1e-8 units; always on the tick grid.
    price: i128,
    tick: i128,
    trade_seq: i64,
    quote_seq: i64,
}

/// Generates events; deterministic for a given seed (timestamps aside).
pub struct SyntheticMarket {
    exchanges: Vec<ExchangeSpec>,
    instruments: Vec<Instrument>,
    pick: WeightedIndex<f64>,
    rng: StdRng,
    reference_pending: usize,
}

const UNIT: i128 = 100_000_000;

impl SyntheticMarket {
    /// `first_sequence`: the first sequence number of every instrument's trades and
    /// quotes.
    pub fn new(
        exchanges: Vec<ExchangeSpec>,
        symbols_per_exchange: usize,
        seed: u64,
        first_sequence: i64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut instruments = Vec::new();
        let mut weights = Vec::new();
        for (e, spec) in exchanges.iter().enumerate() {
            let crypto = spec.asset_class == "crypto";
            for rank in 0..symbols_per_exchange {
                let known = CRYPTO_BASES.get(rank).filter(|_| crypto);
                let symbol = if crypto {
                    match known {
                        Some((b, _)) => format!("{b}USDT"),
                        None => format!("X{rank:03}USDT"),
                    }
                } else {
                    match ASX_NAMES.get(rank) {
                        Some(s) => s.to_string(),
                        None => format!("Z{}", base26(rank)),
                    }
                };
                // Equities mostly between $1 and $100; crypto spans many magnitudes.
                let (price, tick) = if crypto {
                    let p =
                        known.map_or_else(|| 10f64.powf(rng.random_range(-1.0..2.0)), |(_, p)| *p);
                    let tick = if p >= 1000.0 {
                        UNIT / 100
                    } else if p >= 1.0 {
                        UNIT / 10_000
                    } else {
                        UNIT / 1_000_000
                    };
                    (((p * UNIT as f64) as i128 / tick).max(1) * tick, tick)
                } else {
                    let p = 10f64.powf(rng.random_range(0.0..2.0));
                    let tick = if p >= 2.0 { UNIT / 100 } else { UNIT / 200 };
                    (((p * UNIT as f64) as i128 / tick).max(1) * tick, tick)
                };
                instruments.push(Instrument {
                    exchange: e,
                    symbol,
                    company_id: (!crypto).then_some(1000 + rank as i64),
                    crypto,
                    price,
                    tick,
                    trade_seq: first_sequence - 1,
                    quote_seq: first_sequence - 1,
                });
                // Zipf-like: the most popular name trades far more than the tail.
                weights.push(1.0 / ((rank + 1) as f64).powf(1.1));
            }
        }
        let pick = WeightedIndex::new(&weights).expect("at least one symbol");
        let reference_pending = instruments.len();
        SyntheticMarket {
            exchanges,
            instruments,
            pick,
            rng,
            reference_pending,
        }
    }

    pub fn symbols(&self) -> usize {
        self.instruments.len()
    }

    /// The next event at wall-clock time `now_micros`: first one reference-data record per
    /// instrument, then trades (≈40 %) and quotes.
    pub fn next_event(&mut self, now_micros: i64) -> Event {
        if self.reference_pending > 0 {
            let i = self.instruments.len() - self.reference_pending;
            self.reference_pending -= 1;
            return Event::Reference(self.reference(i, now_micros));
        }
        let i = self.pick.sample(&mut self.rng);
        let rng = &mut self.rng;
        let ins = &mut self.instruments[i];
        let spec = &self.exchanges[ins.exchange];
        // Random walk on the tick grid: mostly unchanged or ±1 tick, rarely a few ticks.
        let step: i128 = match rng.random_range(0..1000) {
            0..=699 => 0,
            700..=848 => 1,
            849..=997 => -1,
            _ => rng.random_range(-5..=5),
        };
        ins.price = (ins.price + step * ins.tick).max(ins.tick);
        let envelope = |seq: i64| Envelope {
            symbol: ins.symbol.clone(),
            company_id: ins.company_id,
            exchange: spec.code.clone(),
            asset_class: spec.asset_class.clone(),
            exchange_timestamp: now_micros,
            sequence_number: seq,
            ingestion_timestamp: now_micros,
            isin: (!ins.crypto).then(|| isin(&ins.symbol)),
            contract_type: ins.crypto.then(|| "spot".to_string()),
            settlement_currency: ins.crypto.then(|| "USDT".to_string()),
            funding_rate: None,
        };
        if rng.random_bool(0.4) {
            ins.trade_seq += 1;
            let quantity = if ins.crypto {
                Dec8::from_units(rng.random_range(1..250_000_000))
            } else {
                Dec8::new(rng.random_range(1..5_000), 0)
            };
            Event::Trade(Trade {
                envelope: envelope(ins.trade_seq),
                price: Dec8::from_units(ins.price),
                quantity,
                side: Some(if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                }),
                qualifiers: rng.random_bool(0.02).then(|| "XT".to_string()),
                venue: (!ins.crypto).then(|| "X".to_string()),
            })
        } else {
            ins.quote_seq += 1;
            let below = rng.random_range(1..=3);
            let above = rng.random_range(1..=3);
            let size = |rng: &mut StdRng, crypto: bool| {
                if crypto {
                    Dec8::from_units(rng.random_range(1..1_000_000_000))
                } else {
                    Dec8::new(rng.random_range(1..20_000), 0)
                }
            };
            Event::Quote(Quote {
                envelope: envelope(ins.quote_seq),
                bid_price: Some(Dec8::from_units(
                    (ins.price - below * ins.tick).max(ins.tick),
                )),
                ask_price: Some(Dec8::from_units(ins.price + above * ins.tick)),
                bid_size: size(rng, ins.crypto),
                ask_size: size(rng, ins.crypto),
                venue: (!ins.crypto).then(|| "X".to_string()),
            })
        }
    }

    fn reference(&self, i: usize, now_micros: i64) -> ReferenceData {
        let ins = &self.instruments[i];
        let spec = &self.exchanges[ins.exchange];
        let base = ins.symbol.strip_suffix("USDT").unwrap_or(&ins.symbol);
        ReferenceData {
            symbol: ins.symbol.clone(),
            company_id: ins.company_id,
            exchange: spec.code.clone(),
            asset_class: spec.asset_class.clone(),
            exchange_timestamp: now_micros,
            name: if ins.crypto {
                format!("{base}/USDT spot")
            } else {
                format!("{} Ltd", ins.symbol)
            },
            isin: (!ins.crypto).then(|| isin(&ins.symbol)),
            currency: Some(if ins.crypto { "USDT" } else { "AUD" }.to_string()),
            base_asset: ins.crypto.then(|| base.to_string()),
            quote_asset: ins.crypto.then(|| "USDT".to_string()),
            tick_size: Some(Dec8::from_units(ins.tick)),
            lot_size: Some(if ins.crypto {
                Dec8::from_units(1)
            } else {
                Dec8::new(1, 0)
            }),
            listing_date: None,
            delisting_date: None,
            contract_type: ins.crypto.then(|| "spot".to_string()),
            settlement_currency: ins.crypto.then(|| "USDT".to_string()),
            ingestion_timestamp: now_micros,
        }
    }
}

fn base26(mut n: usize) -> String {
    let mut s = Vec::new();
    for _ in 0..2 {
        s.push(b'A' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// A plausible (not check-digit-valid) Australian ISIN.
fn isin(symbol: &str) -> String {
    format!("AU000000{symbol:0<3}0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market() -> SyntheticMarket {
        SyntheticMarket::new(ExchangeSpec::shipped(), 30, 7, 1)
    }

    #[test]
    fn reference_first_then_skewed_market_with_sequences_and_bracketing_quotes() {
        let mut m = market();
        let mut counts = std::collections::HashMap::<String, usize>::new();
        let mut last_seq = std::collections::HashMap::<(String, bool), i64>::new();
        for i in 0..60 {
            assert!(matches!(m.next_event(i), Event::Reference(_)));
        }
        for i in 0..20_000 {
            match m.next_event(1_000 + i) {
                Event::Trade(t) => {
                    assert!(t.price.0 > 0);
                    let s = last_seq
                        .entry((t.envelope.symbol.clone(), true))
                        .or_default();
                    assert_eq!(t.envelope.sequence_number, *s + 1);
                    *s += 1;
                    *counts.entry(t.envelope.symbol).or_default() += 1;
                }
                Event::Quote(q) => {
                    assert!(q.bid_price.unwrap() < q.ask_price.unwrap());
                    let s = last_seq
                        .entry((q.envelope.symbol.clone(), false))
                        .or_default();
                    assert_eq!(q.envelope.sequence_number, *s + 1);
                    *s += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // The most popular name trades far more than the least popular.
        let least = counts.values().copied().min().unwrap_or(0);
        assert!(counts["BHP"] > 5 * least.max(1), "{counts:?}");
    }
}
