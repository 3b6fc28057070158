//! Replay of the ASX sample CSV files (`FORMAT.md` beside them): no header rows, times in
//! Australia/Sydney local time, quote columns `bid, ask, bid_volume, ask_volume`, a price
//! of 0 with volume 0 for an empty book side, no sequence numbers (assigned here per
//! symbol in file order).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Australia::Sydney;

use k2_common::records::{Dec8, Envelope, Quote, ReferenceData, Trade};

use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

/// One instrument of the sample, from `reference-data/company_info.csv`.
#[derive(Debug, Clone)]
pub struct Company {
    pub company_id: i64,
    pub symbol: String,
    pub name: String,
    pub isin: String,
    pub listing_date: Option<NaiveDate>,
    pub delisting_date: Option<NaiveDate>,
}

/// Everything in an ASX sample directory, in time order, with sequence numbers.
pub struct AsxReplay {
    pub companies: Vec<Company>,
    /// Reference data first, then trades and quotes merged by time (file order kept
    /// within equal times).
    pub events: Vec<Event>,
}

fn parse_err(path: &Path, line: u64, message: impl Into<String>) -> ReplayError {
    ReplayError::Parse {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// `MM/DD/YYYY` + `HH:MM:SS.mmm` Sydney local → microseconds UTC.
pub fn sydney_micros(date: &str, time: &str) -> Result<i64, String> {
    let local = NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%m/%d/%Y %H:%M:%S%.f")
        .map_err(|e| format!("bad date/time {date:?} {time:?}: {e}"))?;
    let utc = Sydney
        .from_local_datetime(&local)
        // An ambiguous local time (the hour repeated when daylight saving ends) is taken
        // as the first occurrence: the files are in time order.
        .earliest()
        .ok_or_else(|| format!("{date} {time} does not exist in Australia/Sydney"))?;
    Ok(utc.timestamp_micros())
}

fn decimal(s: &str) -> Result<Dec8, String> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() > 8
        || whole.is_empty() && frac.is_empty()
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(format!("not a decimal with at most 8 places: {s:?}"));
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|e| format!("{s:?}: {e}"))?
    };
    let frac: i128 = format!("{frac:0<8}")
        .parse()
        .map_err(|e| format!("{s:?}: {e}"))?;
    let units = whole * 100_000_000 + frac;
    Ok(Dec8(if neg { -units } else { units }))
}

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%m/%d/%Y").ok()
}

fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

fn reader(path: &Path, headers: bool) -> Result<csv::Reader<std::fs::File>, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(headers)
        .flexible(true)
        .from_reader(file))
}

impl AsxReplay {
    /// Loads `dir` (holding `trades/`, `quotes/`, `reference-data/`) for `exchange`.
    pub fn load(dir: &Path, exchange: &str) -> Result<Self, ReplayError> {
        let info = dir.join("reference-data/company_info.csv");
        let mut companies = Vec::new();
        let mut rdr = reader(&info, true)?;
        for (i, rec) in rdr.records().enumerate() {
            let line = i as u64 + 2;
            let rec = rec.map_err(|e| parse_err(&info, line, e.to_string()))?;
            let field = |n: usize| rec.get(n).unwrap_or("").trim().to_string();
            companies.push(Company {
                company_id: field(0)
                    .parse()
                    .map_err(|_| parse_err(&info, line, format!("company_id {:?}", field(0))))?,
                symbol: field(1),
                name: field(2),
                isin: field(3),
                listing_date: date(&field(4)),
                delisting_date: date(&field(5)),
            });
        }
        let mut timed: Vec<(i64, usize, Event)> = Vec::new();
        let mut order = 0usize;
        for c in &companies {
            let envelope = |seq: i64, ts: i64| Envelope {
                symbol: c.symbol.clone(),
                company_id: Some(c.company_id),
                exchange: exchange.to_string(),
                asset_class: "equities".to_string(),
                exchange_timestamp: ts,
                sequence_number: seq,
                ingestion_timestamp: ts,
                isin: Some(c.isin.clone()),
                contract_type: None,
                settlement_currency: None,
                funding_rate: None,
            };
            let trades = dir.join(format!("trades/{}.csv", c.company_id));
            if trades.exists() {
                let mut rdr = reader(&trades, false)?;
                for (i, rec) in rdr.records().enumerate() {
                    let line = i as u64 + 1;
                    let rec = rec.map_err(|e| parse_err(&trades, line, e.to_string()))?;
                    let f = |n: usize| rec.get(n).unwrap_or("");
                    let ts = sydney_micros(f(0), f(1)).map_err(|m| parse_err(&trades, line, m))?;
                    let trade = Trade {
                        envelope: envelope(line as i64, ts),
                        price: decimal(f(2)).map_err(|m| parse_err(&trades, line, m))?,
                        quantity: decimal(f(3)).map_err(|m| parse_err(&trades, line, m))?,
                        side: None,
                        qualifiers: Some(f(4).trim().to_string()).filter(|s| !s.is_empty()),
                        venue: Some(f(5).trim().to_string()).filter(|s| !s.is_empty()),
                    };
                    timed.push((ts, order, Event::Trade(trade)));
                    order += 1;
                }
            }
            let quotes = dir.join(format!("quotes/{}.csv", c.company_id));
            if quotes.exists() {
                let mut rdr = reader(&quotes, false)?;
                for (i, rec) in rdr.records().enumerate() {
                    let line = i as u64 + 1;
                    let rec = rec.map_err(|e| parse_err(&quotes, line, e.to_string()))?;
                    let f = |n: usize| rec.get(n).unwrap_or("");
                    let ts = sydney_micros(f(0), f(1)).map_err(|m| parse_err(&quotes, line, m))?;
                    let d = |n: usize| decimal(f(n)).map_err(|m| parse_err(&quotes, line, m));
                    let (bid, ask, bid_size, ask_size) = (d(2)?, d(3)?, d(4)?, d(5)?);
                    // Price 0 means that side of the book is empty.
                    let quote = Quote {
                        envelope: envelope(line as i64, ts),
                        bid_price: (bid.0 > 0).then_some(bid),
                        ask_price: (ask.0 > 0).then_some(ask),
                        bid_size,
                        ask_size,
                        venue: None,
                    };
                    timed.push((ts, order, Event::Quote(quote)));
                    order += 1;
                }
            }
        }
        timed.sort_by_key(|(ts, o, _)| (*ts, *o));
        let first_ts = timed.first().map_or(0, |t| t.0);
        let mut events: Vec<Event> = companies
            .iter()
            .map(|c| {
                Event::Reference(ReferenceData {
                    symbol: c.symbol.clone(),
                    company_id: Some(c.company_id),
                    exchange: exchange.to_string(),
                    asset_class: "equities".to_string(),
                    exchange_timestamp: first_ts,
                    name: c.name.clone(),
                    isin: Some(c.isin.clone()),
                    currency: Some("AUD".into()),
                    base_asset: None,
                    quote_asset: None,
                    tick_size: None,
                    lot_size: None,
                    listing_date: c.listing_date.map(days),
                    delisting_date: c.delisting_date.map(days),
                    contract_type: None,
                    settlement_currency: None,
                    ingestion_timestamp: first_ts,
                })
            })
            .collect();
        events.extend(timed.into_iter().map(|(_, _, e)| e));
        Ok(AsxReplay { companies, events })
    }

    /// Records per (data type, symbol), for summaries.
    pub fn counts(&self) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for e in &self.events {
            *out.entry((e.data_type().as_str().to_string(), e.symbol().to_string()))
                .or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sydney_daylight_time_converts_to_utc() {
        // 10 March 2014 is AEDT (UTC+11): 10:00 local is 23:00 UTC the day before.
        let us = sydney_micros("03/10/2014", "10:00:00.000").unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_micros(us)
                .unwrap()
                .to_rfc3339(),
            "2014-03-09T23:00:00+00:00"
        );
        // July is AEST (UTC+10).
        let us = sydney_micros("07/01/2014", "10:00:00.500").unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_micros(us)
                .unwrap()
                .to_rfc3339(),
            "2014-07-01T00:00:00.500+00:00"
        );
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(decimal("36.667").unwrap(), Dec8(3_666_700_000));
        assert_eq!(decimal("0.0").unwrap(), Dec8(0));
        assert_eq!(decimal("20000").unwrap(), Dec8(2_000_000_000_000));
        assert!(decimal("1e5").is_err());
        assert!(decimal("0.123456789").is_err());
    }
}
