//! Instants as analysts type them: RFC 3339, or a date and time without a zone, read as
//! UTC (the shell's `--as-of`, `.ohlcv` ranges, the Python package's strings).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::error::{QueryError, Result};

/// `2014-03-11T00:00:00+11:00`, `2014-03-11 10:30[:00[.123]]` (UTC) or `2014-03-11`
/// (midnight UTC).
pub fn parse(s: &str) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(QueryError::Invalid(format!(
        "cannot read {s:?} as a timestamp (RFC 3339, or YYYY-MM-DD[ HH:MM[:SS]] in UTC)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_analysts_type() {
        let want: DateTime<Utc> = "2014-03-11T10:30:00Z".parse().unwrap();
        assert_eq!(parse("2014-03-11T21:30:00+11:00").unwrap(), want);
        assert_eq!(parse("2014-03-11 10:30").unwrap(), want);
        assert_eq!(parse("2014-03-11T10:30:00.000").unwrap(), want);
        assert_eq!(
            parse("2014-03-11").unwrap(),
            "2014-03-11T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let e = parse("yesterday").unwrap_err().to_string();
        assert!(
            e.contains("cannot read \"yesterday\" as a timestamp"),
            "{e}"
        );
    }
}
