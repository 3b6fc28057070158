//! Session-aware bars: buckets cut in the exchange's time from each trading day's session
//! open (topics.yaml's `trading_hours`, on the days its calendar trades), so a `1d` bar is a
//! session and a `1h` bar starts on the hour after the open; trades outside the session
//! dropped (`Regular`) or kept in their trading day's buckets (`Extended`).

use std::str::FromStr;

use chrono::{Days, NaiveDate, TimeZone};

use crate::error::{QueryError, Result};
use crate::ohlcv::{Interval, IntervalUnit, OhlcvRequest};
use crate::session::Session;
use crate::storage::literal;

/// How OHLCV buckets relate to the exchange's trading sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionChoice {
    /// Buckets by the clock (UTC or the exchange's time, see `tz`), every trade counted.
    #[default]
    Off,
    /// Buckets from each session's open, only trades inside the session (open to close,
    /// early closes from the calendar), only on the days the exchange trades.
    Regular,
    /// As `Regular`, but trades outside the session's hours on a trading day (auctions,
    /// pre-open) are kept, in the buckets the open aligns them to.
    Extended,
}

impl FromStr for SessionChoice {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" | "off" => Ok(SessionChoice::Off),
            "regular" => Ok(SessionChoice::Regular),
            "extended" => Ok(SessionChoice::Extended),
            other => Err(QueryError::Invalid(format!(
                "session {other:?}: expected none, regular or extended"
            ))),
        }
    }
}

/// The SQL pieces of a session-aware OHLCV question.
pub(crate) struct SessionSql {
    /// `sessions AS (...)`: one row per trading day of the range (day, open_at, close_at,
    /// local naive timestamps).
    pub cte: String,
    tz: String,
    /// Bucket width in microseconds; `None` for one bar per session.
    width_us: Option<i64>,
    regular: bool,
}

impl SessionSql {
    pub(crate) fn new(session: &Session, req: &OhlcvRequest) -> Result<Option<SessionSql>> {
        if req.session == SessionChoice::Off {
            return Ok(None);
        }
        let width_us = match req.interval {
            Interval {
                unit: IntervalUnit::Day,
                count: 1,
            } => None,
            Interval {
                unit: IntervalUnit::Day,
                ..
            } => {
                return Err(QueryError::Invalid(format!(
                    "interval {}: session bars are at most one session (1d) wide",
                    req.interval
                )));
            }
            i => Some(i.seconds() * 1_000_000),
        };
        let sessions = session.trading_sessions(&req.exchange).ok_or_else(|| {
            QueryError::Invalid(format!(
                "exchange {:?} has no trading hours in topics.yaml",
                req.exchange
            ))
        })?;
        let tz = sessions.timezone;
        let local =
            |t: chrono::DateTime<chrono::Utc>| tz.from_utc_datetime(&t.naive_utc()).date_naive();
        let first = local(req.from)
            .checked_sub_days(Days::new(1))
            .unwrap_or(NaiveDate::MIN);
        let last = local(req.to)
            .checked_add_days(Days::new(1))
            .unwrap_or(NaiveDate::MAX);
        let mut rows = Vec::new();
        let mut day = first;
        while day <= last {
            if let Some((open, close)) = sessions.on(day) {
                let at = |minutes: u32| {
                    let t = day.and_hms_opt(0, 0, 0).expect("midnight")
                        + chrono::Duration::minutes(i64::from(minutes));
                    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S"))
                };
                rows.push(format!("(DATE '{day}', {}, {})", at(open), at(close)));
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        let cte = if rows.is_empty() {
            "sessions AS (SELECT NULL::DATE AS day, NULL::TIMESTAMP AS open_at,
                                 NULL::TIMESTAMP AS close_at WHERE false)"
                .to_string()
        } else {
            format!(
                "sessions AS (SELECT * FROM (VALUES {}) s(day, open_at, close_at))",
                rows.join(", ")
            )
        };
        Ok(Some(SessionSql {
            cte,
            tz: literal(tz.name()),
            width_us,
            regular: req.session == SessionChoice::Regular,
        }))
    }

    /// The exchange's zone as a SQL literal.
    pub(crate) fn zone(&self) -> &str {
        &self.tz
    }

    fn local(&self, e: &str) -> String {
        format!("timezone({}, {e})", self.tz)
    }

    /// `JOIN sessions s …` for rows whose time is `e`: the trading day's session, and for
    /// `Regular` only the session's hours.
    pub(crate) fn join(&self, e: &str) -> String {
        let local = self.local(e);
        let hours = if self.regular {
            format!(" AND {local} >= s.open_at AND {local} < s.close_at")
        } else {
            String::new()
        };
        format!("JOIN sessions s ON CAST({local} AS DATE) = s.day{hours}")
    }

    /// The local start of the bucket of a row whose time is `e` (after [`Self::join`]).
    pub(crate) fn bucket(&self, e: &str) -> String {
        match self.width_us {
            None => "s.open_at".to_string(),
            // Floor division (rows before the open, kept by `Extended`, go to the buckets
            // before it), exact: the differences are well inside a double's integers.
            Some(w) => format!(
                "s.open_at + to_microseconds(CAST(floor((epoch_us({}) - epoch_us(s.open_at)) / {w}) AS BIGINT) * {w})",
                self.local(e)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_parse_and_refuse_the_rest() {
        assert_eq!(
            "regular".parse::<SessionChoice>().unwrap(),
            SessionChoice::Regular
        );
        assert_eq!("none".parse::<SessionChoice>().unwrap(), SessionChoice::Off);
        let e = "rth".parse::<SessionChoice>().unwrap_err().to_string();
        assert!(e.contains("none, regular or extended"), "{e}");
    }
}
