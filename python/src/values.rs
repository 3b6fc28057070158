//! Python values in K2's terms: instants, pins and bound SQL parameters. Decimals stay
//! exact on the way in as they do on the way out.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use duckdb::types::{TimeUnit, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};

use k2_query::Pin;

use crate::errors;

/// An instant from a `datetime` (naive ones are UTC, as everywhere in K2), a `date`
/// (its midnight UTC) or a string (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in UTC).
pub fn instant(v: &Bound<'_, PyAny>, what: &str) -> PyResult<DateTime<Utc>> {
    if let Ok(s) = v.cast::<PyString>() {
        return k2_query::instant::parse(&s.to_cow()?).map_err(errors::query);
    }
    // A datetime is also a date: try the datetimes first.
    if let Ok(t) = v.extract::<DateTime<FixedOffset>>() {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = v.extract::<NaiveDateTime>() {
        return Ok(t.and_utc());
    }
    if let Ok(d) = v.extract::<NaiveDate>() {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(errors::invalid(format!(
        "{what}: expected a datetime, a date or an ISO 8601 string, got {}",
        type_name(v)
    )))
}

/// The instant a session reads: `as_of` (an instant, a tag name such as
/// `"eod-2026-12-07"`, or `None`/"latest"/"now" for each table's current snapshot) or
/// explicit `snapshots` per table.
pub fn pin(
    as_of: Option<&Bound<'_, PyAny>>,
    snapshots: Option<&Bound<'_, PyDict>>,
) -> PyResult<Pin> {
    let latest = |v: &Bound<'_, PyAny>| {
        v.is_none()
            || v.cast::<PyString>()
                .is_ok_and(|s| s.to_cow().is_ok_and(|s| s == "latest" || s == "now"))
    };
    match (as_of.filter(|v| !latest(v)), snapshots) {
        (Some(_), Some(_)) => Err(errors::invalid(
            "give as_of or snapshots, not both: they are two ways to say what to read",
        )),
        (Some(at), None) => match at.cast::<PyString>() {
            // A string is whatever the shell's --as-of takes: an instant or a tag name.
            Ok(text) => Pin::parse(&text.to_cow()?).map_err(errors::query),
            Err(_) => Ok(Pin::AsOf(instant(at, "as_of")?)),
        },
        (None, Some(ids)) => {
            let mut pinned = BTreeMap::new();
            for (table, id) in ids.iter() {
                let table: String = table.extract().map_err(|_| {
                    errors::invalid("snapshots: keys are table names (str)".to_string())
                })?;
                // None: the table had no snapshot at the instant being reproduced.
                let id: Option<i64> = id.extract().map_err(|_| {
                    errors::invalid(format!(
                        "snapshots[{table:?}]: expected a snapshot id (int) or None"
                    ))
                })?;
                pinned.insert(table, id);
            }
            Ok(Pin::Snapshots(pinned))
        }
        (None, None) => Ok(Pin::Latest),
    }
}

/// A bound SQL parameter.
pub fn param(v: &Bound<'_, PyAny>, index: usize) -> PyResult<Value> {
    if v.is_none() {
        return Ok(Value::Null);
    }
    // bool is a subclass of int: first.
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Value::Boolean(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        if let Ok(i) = v.extract::<i64>() {
            return Ok(Value::BigInt(i));
        }
        if let Ok(i) = v.extract::<i128>() {
            return Ok(Value::HugeInt(i));
        }
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(Value::Double(f.value()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Value::Text(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Value::Blob(b.as_bytes().to_vec()));
    }
    if type_name(v) == "Decimal" {
        return decimal(v, index);
    }
    if let Ok(t) = v.extract::<DateTime<FixedOffset>>() {
        return Ok(Value::Timestamp(
            TimeUnit::Microsecond,
            t.timestamp_micros(),
        ));
    }
    if let Ok(t) = v.extract::<NaiveDateTime>() {
        return Ok(Value::Timestamp(
            TimeUnit::Microsecond,
            t.and_utc().timestamp_micros(),
        ));
    }
    if let Ok(d) = v.extract::<NaiveDate>() {
        let days = (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
        return Ok(Value::Date32(days as i32));
    }
    Err(errors::invalid(format!(
        "parameter {}: cannot bind a {} (bind None, bool, int, float, str, bytes, \
         Decimal, datetime or date)",
        index + 1,
        type_name(v)
    )))
}

/// A `decimal.Decimal` as DuckDB's exact DECIMAL (scaled integer, width ≤ 38).
fn decimal(v: &Bound<'_, PyAny>, index: usize) -> PyResult<Value> {
    let bad = |why: &str| errors::invalid(format!("parameter {}: {why}", index + 1));
    let (sign, digits, exponent): (i32, Vec<u8>, Bound<'_, PyAny>) =
        v.call_method0("as_tuple")?.extract()?;
    let exponent: i32 = exponent
        .extract()
        .map_err(|_| bad("NaN and infinite decimals cannot be bound"))?;
    let scale = u8::try_from((-exponent).max(0)).map_err(|_| bad("too many decimal places"))?;
    let mut scaled: i128 = 0;
    for d in digits
        .iter()
        .chain(std::iter::repeat_n(&0, exponent.max(0) as usize))
    {
        scaled = scaled
            .checked_mul(10)
            .and_then(|s| s.checked_add(i128::from(*d)))
            .ok_or_else(|| bad("more than 38 digits"))?;
    }
    if sign == 1 {
        scaled = -scaled;
    }
    let width = (scaled.unsigned_abs().checked_ilog10().unwrap_or(0) + 1).max(u32::from(scale) + 1);
    let width = u8::try_from(width)
        .ok()
        .filter(|w| *w <= 38)
        .ok_or_else(|| bad("more than 38 digits"))?;
    duckdb::types::Decimal::new(width, scale, scaled)
        .map(Value::Decimal)
        .map_err(|e| bad(&e.to_string()))
}

pub fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "value".into())
}
