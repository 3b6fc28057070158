//! Trading sessions: an exchange's regular hours (`trading_hours` in `topics.yaml`) on the
//! days it trades, from an optional calendar file (`calendar:`, a path relative to
//! `topics.yaml`) naming the weekdays it is closed, its holidays and its early closes.
//!
//! ```yaml
//! closed_weekdays: [Sat, Sun]
//! holidays:
//!   2014-04-18: Good Friday
//! half_days:
//!   2014-12-24: { close: "14:10", name: Christmas Eve }
//! ```
//!
//! Without a calendar every day has a session (a venue trading around the clock).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, NaiveDate, NaiveTime, Weekday};
use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    #[serde(default)]
    closed_weekdays: Vec<String>,
    #[serde(default)]
    holidays: BTreeMap<NaiveDate, String>,
    #[serde(default)]
    half_days: BTreeMap<NaiveDate, RawHalfDay>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHalfDay {
    close: String,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
}

/// The days an exchange trades and when, in its local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradingSessions {
    pub timezone: chrono_tz::Tz,
    /// Minutes after local midnight.
    pub open: u32,
    /// Minutes after local midnight, up to 1,440 (`24:00`).
    pub close: u32,
    pub closed_weekdays: Vec<Weekday>,
    pub holidays: BTreeMap<NaiveDate, String>,
    /// Early closes: minutes after local midnight.
    pub half_days: BTreeMap<NaiveDate, u32>,
}

impl TradingSessions {
    /// The session of a local date, as (open, close) minutes after its midnight; `None` on
    /// a closed weekday or a holiday.
    pub fn on(&self, date: NaiveDate) -> Option<(u32, u32)> {
        if self.closed_weekdays.contains(&date.weekday()) || self.holidays.contains_key(&date) {
            return None;
        }
        Some((
            self.open,
            self.half_days.get(&date).copied().unwrap_or(self.close),
        ))
    }

    /// `calendar` (a path relative to the directory of `topics_file`) read and checked
    /// against the regular hours; errors name `key` in `topics_file`.
    pub(crate) fn load(
        topics_file: &Path,
        key: &str,
        (timezone, open, close): (chrono_tz::Tz, u32, u32),
        calendar: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut sessions = TradingSessions {
            timezone,
            open,
            close,
            closed_weekdays: Vec::new(),
            holidays: BTreeMap::new(),
            half_days: BTreeMap::new(),
        };
        let Some(calendar) = calendar else {
            return Ok(sessions);
        };
        let bad = |what: String| {
            ConfigError::invalid(
                topics_file,
                key,
                "a trading calendar file (closed_weekdays, holidays, half_days), relative to topics.yaml",
                format!("`{calendar}`: {what}"),
            )
        };
        let path = topics_file
            .parent()
            .unwrap_or(Path::new("."))
            .join(calendar);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let raw: RawCalendar = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for day in &raw.closed_weekdays {
            let weekday = day.parse::<Weekday>().map_err(|_| {
                bad(format!(
                    "closed_weekdays: `{day}` is not a weekday (Mon … Sun)"
                ))
            })?;
            sessions.closed_weekdays.push(weekday);
        }
        sessions.holidays = raw.holidays;
        for (date, half) in raw.half_days {
            let close = NaiveTime::parse_from_str(&half.close, "%H:%M")
                .ok()
                .map(|t| t.signed_duration_since(NaiveTime::MIN).num_minutes() as u32)
                .filter(|&c| c > open && c <= sessions.close)
                .ok_or_else(|| {
                    bad(format!(
                        "half_days.{date}.close: `{}` is not a time HH:MM after the open and \
                         before the regular close",
                        half.close
                    ))
                })?;
            sessions.half_days.insert(date, close);
        }
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<TradingSessions, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cal.yaml"), yaml).unwrap();
        TradingSessions::load(
            &dir.path().join("topics.yaml"),
            "asset_classes.equities.exchanges.asx.calendar",
            (chrono_tz::Australia::Sydney, 600, 960),
            Some("cal.yaml"),
        )
    }

    #[test]
    fn a_calendar_closes_weekends_and_holidays_and_shortens_half_days() {
        let s = load(
            "closed_weekdays: [Sat, Sun]\nholidays:\n  2014-04-18: Good Friday\n\
             half_days:\n  2014-12-24: { close: \"14:10\", name: Christmas Eve }\n",
        )
        .unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(s.on(d("2014-03-10")), Some((600, 960)), "a Monday");
        assert_eq!(s.on(d("2014-03-15")), None, "a Saturday");
        assert_eq!(s.on(d("2014-04-18")), None, "Good Friday");
        assert_eq!(s.on(d("2014-12-24")), Some((600, 850)));
    }

    #[test]
    fn a_bad_calendar_names_the_key_the_file_and_the_mistake() {
        let e = load("closed_weekdays: [Caturday]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exchanges.asx.calendar")
                && e.contains("cal.yaml")
                && e.contains("Caturday"),
            "{e}"
        );
        let e = load("half_days:\n  2014-12-24: { close: \"09:00\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("half_days.2014-12-24.close"), "{e}");
        let e = TradingSessions::load(
            Path::new("/nonexistent/topics.yaml"),
            "k",
            (chrono_tz::UTC, 0, 1440),
            Some("nope.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nope.yaml") && e.contains("cannot read"), "{e}");
    }
}
