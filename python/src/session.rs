//! `k2.Session`: the Rust library's [`Session`] — a read-only DuckDB connection over every
//! table pinned to one instant — with its questions, answering [`QueryResult`]s.

use std::sync::{Arc, Mutex, PoisonError};

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use k2_query::{
    Fill, Horizon, MarkoutPrice, MarkoutRequest, OhlcvRequest, Pin, QueryError, Range, Session,
    TimeZoneChoice,
};

use crate::blocking::{Cancel, Interrupt, Worker};
use crate::errors;
use crate::result::QueryResult;
use crate::values;

/// A read-only view of the lakehouse with every table pinned to one instant: the same
/// session answers the same question identically however much the sink lands meanwhile.
///
/// Open one with `Lakehouse.session()`; use it as a context manager (`with … as s:`) or
/// call `close()`. One session runs one call at a time (calls from several threads take
/// turns); open a session per thread to ask in parallel.
#[pyclass(module = "k2", name = "Session", frozen)]
pub struct PySession {
    inner: Arc<Mutex<Option<Session>>>,
    interrupt: Interrupt,
    worker: Worker,
}

impl PySession {
    pub fn new(session: Session) -> Self {
        PySession {
            interrupt: session.interrupt_handle(),
            inner: Arc::new(Mutex::new(Some(session))),
            worker: Worker::new(),
        }
    }

    /// Runs `f` with the session on its worker thread, off the GIL and interruptible.
    fn with<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session, &Cancel) -> Result<T, QueryError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        self.worker.run(py, Some(&self.interrupt), move |cancel| {
            let guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
            let session = guard
                .as_ref()
                .ok_or_else(|| QueryError::Invalid("this session is closed".into()))?;
            f(session, cancel)
        })
    }

    /// Asks `question` over the range Python gave.
    fn ranged(
        &self,
        py: Python<'_>,
        question: Question,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
    ) -> PyResult<QueryResult> {
        let r = range(symbols, exchange, start, end)?;
        self.with(py, move |s, c| c.block_on(question.ask(s, &r))?)
            .map(QueryResult::new)
    }

    /// Quick reads that need no waiting (the pin, the schema).
    fn read<T>(&self, f: impl FnOnce(&Session) -> T) -> PyResult<T> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .map(f)
            .ok_or_else(|| errors::invalid("this session is closed"))
    }
}

/// The library's questions over a [`Range`] (all but OHLCV, which has options of its own).
#[derive(Clone, Copy)]
enum Question {
    Trades,
    Quotes,
    TradesWithQuotes,
    SpreadStats,
    DailySummary,
}

impl Question {
    async fn ask(self, s: &Session, r: &Range) -> Result<Vec<RecordBatch>, QueryError> {
        match self {
            Question::Trades => s.trades_in(r).await,
            Question::Quotes => s.quotes_in(r).await,
            Question::TradesWithQuotes => s.trades_with_quotes(r).await,
            Question::SpreadStats => s.spread_stats(r).await,
            Question::DailySummary => s.daily_summary(r).await,
        }
    }
}

/// `symbols` as a list: one symbol (str) or several.
fn symbols(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(vec![s.to_cow()?.into_owned()]);
    }
    v.extract::<Vec<String>>().map_err(|_| {
        errors::invalid(format!(
            "symbols: expected a str or a list of str, got {}",
            values::type_name(v)
        ))
    })
}

fn range(
    symbols_: &Bound<'_, PyAny>,
    exchange: String,
    start: &Bound<'_, PyAny>,
    end: &Bound<'_, PyAny>,
) -> PyResult<Range> {
    Ok(Range {
        exchange,
        symbols: symbols(symbols_)?,
        from: values::instant(start, "start")?,
        to: values::instant(end, "end")?,
    })
}

#[pymethods]
impl PySession {
    /// Runs a query (SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN) over the
    /// views `trades`, `quotes`, `reference_data`, `sequence_events` and `bars_1m`, with `params`
    /// bound to its `?` placeholders in order. Statements that write raise `QueryError`.
    #[pyo3(signature = (query, params=None))]
    fn sql(
        &self,
        py: Python<'_>,
        query: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<QueryResult> {
        let bound: Vec<duckdb::types::Value> = match params {
            None => Vec::new(),
            Some(p) if p.is_none() => Vec::new(),
            Some(p) if p.cast::<PyString>().is_ok() || p.cast::<PyDict>().is_ok() => {
                return Err(errors::invalid(
                    "params: expected a sequence of values, one per `?` (e.g. a list)",
                ));
            }
            Some(p) => p
                .try_iter()
                .map_err(|_| errors::invalid("params: expected a sequence of values"))?
                .enumerate()
                .map(|(i, v)| values::param(&v?, i))
                .collect::<PyResult<_>>()?,
        };
        self.with(py, move |s, cancel| {
            let refs: Vec<&dyn duckdb::ToSql> =
                bound.iter().map(|v| v as &dyn duckdb::ToSql).collect();
            cancel.block_on(s.sql(&query, &refs))?
        })
        .map(QueryResult::new)
    }

    /// OHLCV bars from trades: `symbol, bucket_start` (UTC), `open, high, low, close,
    /// volume, vwap` (exact decimals) and `trades`, ordered by symbol and bucket.
    ///
    /// `interval` is `N` followed by s, m, h or d (`1m`, `15m`, `1d`); bars cover
    /// `[start, end)`; `tz="exchange"` aligns buckets to the exchange's local day;
    /// `fill="forward"` gives empty buckets the previous close (volume 0, vwap null);
    /// `session="regular"` cuts buckets from each trading session's open in the exchange's
    /// time and keeps only the session's trades (`"extended"` keeps the trading day's
    /// others too); a `1d` bar is then a session.
    #[pyo3(signature = (symbols, exchange, interval, start, end, tz="utc", fill="omit", session="none"))]
    #[allow(clippy::too_many_arguments)]
    fn ohlcv(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        interval: &str,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
        tz: &str,
        fill: &str,
        session: &str,
    ) -> PyResult<QueryResult> {
        let req = ohlcv_request(
            symbols,
            exchange,
            interval,
            (start, end),
            (tz, fill, session),
        )?;
        self.with(py, move |s, c| c.block_on(s.ohlcv(&req))?)
            .map(QueryResult::new)
    }

    /// Which days (UTC, as `datetime.date`) of the same OHLCV question the one-minute
    /// bars table answers and which the trades do, at this session's pin: `{"bars_1m":
    /// [...], "trades": [...]}`. The answer is the same either way; this says how fast.
    #[pyo3(signature = (symbols, exchange, interval, start, end, tz="utc", session="none"))]
    #[allow(clippy::too_many_arguments)]
    fn ohlcv_sources<'py>(
        &self,
        py: Python<'py>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        interval: &str,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
        tz: &str,
        session: &str,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let req = ohlcv_request(
            symbols,
            exchange,
            interval,
            (start, end),
            (tz, "omit", session),
        )?;
        let sources = self.with(py, move |s, c| c.block_on(s.ohlcv_sources(&req))?)?;
        let out = pyo3::types::PyDict::new(py);
        out.set_item(k2_common::data_type::BARS_1M_TABLE, sources.bars_days)?;
        out.set_item("trades", sources.trades_days)?;
        Ok(out)
    }

    /// Each trade in `[start, end)` marked to the market at each horizon after it:
    /// `symbol, exchange_timestamp, sequence_number, side, price, quantity`, then per
    /// horizon `price_<h>` (the mid of the quote prevailing then, or with `price="trade"`
    /// the last trade's price then) and `markout_<h>` (that price minus the trade's, + for
    /// a buy, − for a sell, null for an unknown side), exact decimals.
    #[pyo3(signature = (symbols, exchange, start, end, horizons=vec!["1s".to_string(), "10s".to_string(), "60s".to_string()], price="mid"))]
    #[allow(clippy::too_many_arguments)]
    fn markouts(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
        horizons: Vec<String>,
        price: &str,
    ) -> PyResult<QueryResult> {
        let req = MarkoutRequest {
            range: range(symbols, exchange, start, end)?,
            horizons: horizons
                .iter()
                .map(|h| h.parse::<Horizon>())
                .collect::<Result<_, _>>()
                .map_err(errors::query)?,
            price: price.parse::<MarkoutPrice>().map_err(errors::query)?,
        };
        self.with(py, move |s, c| c.block_on(s.markouts(&req))?)
            .map(QueryResult::new)
    }

    /// Trades in `[start, end)`, ordered by symbol, exchange time and sequence number.
    fn trades(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
    ) -> PyResult<QueryResult> {
        self.ranged(py, Question::Trades, symbols, exchange, start, end)
    }

    /// Quotes in `[start, end)`, ordered by symbol, exchange time and sequence number.
    fn quotes(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
    ) -> PyResult<QueryResult> {
        self.ranged(py, Question::Quotes, symbols, exchange, start, end)
    }

    /// Each trade with the quote prevailing when it printed (an as-of join), its mid and
    /// spread.
    fn trades_with_quotes(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
    ) -> PyResult<QueryResult> {
        self.ranged(
            py,
            Question::TradesWithQuotes,
            symbols,
            exchange,
            start,
            end,
        )
    }

    /// Per symbol, over two-sided quotes: count, crossed count, min/avg/max spread, mean mid.
    fn spread_stats(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
    ) -> PyResult<QueryResult> {
        self.ranged(py, Question::SpreadStats, symbols, exchange, start, end)
    }

    /// One bar per symbol and trading day in the exchange's time zone.
    fn daily_summary(
        &self,
        py: Python<'_>,
        symbols: &Bound<'_, PyAny>,
        exchange: String,
        start: &Bound<'_, PyAny>,
        end: &Bound<'_, PyAny>,
    ) -> PyResult<QueryResult> {
        self.ranged(py, Question::DailySummary, symbols, exchange, start, end)
    }

    /// The snapshot each table is read at (`None`: the table was empty then). Pass it to
    /// `Lakehouse.session(snapshots=…)` to ask again at exactly this instant.
    #[getter]
    fn pinned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ids = self.read(|s| {
            s.pinned()
                .tables
                .iter()
                .map(|(name, t)| (name.clone(), t.snapshot_id))
                .collect::<Vec<_>>()
        })?;
        let d = PyDict::new(py);
        for (name, id) in ids {
            d.set_item(name, id)?;
        }
        Ok(d)
    }

    /// The instant the session was opened at (`as_of=` an instant), else `None`.
    #[getter]
    fn as_of(&self) -> PyResult<Option<DateTime<Utc>>> {
        self.read(|s| match &s.pinned().pin {
            Pin::AsOf(at) => Some(*at),
            _ => None,
        })
    }

    /// The instant the session reads the lakehouse at, when its pin names one (`as_of=` an
    /// instant, or an end-of-day tag: the midnight ending its day), else `None`.
    #[getter]
    fn instant(&self) -> PyResult<Option<DateTime<Utc>>> {
        self.read(|s| s.pinned().pin.instant())
    }

    /// The tag the session was opened at (`as_of="eod-2026-12-07"`), else `None`.
    #[getter]
    fn tag(&self) -> PyResult<Option<String>> {
        self.read(|s| match &s.pinned().pin {
            Pin::Tag(t) => Some(t.clone()),
            _ => None,
        })
    }

    /// The views this session reads.
    #[getter]
    fn tables(&self) -> PyResult<Vec<String>> {
        self.read(|s| s.pinned().tables.keys().cloned().collect())
    }

    /// Column names and DuckDB types of a view.
    fn describe(&self, py: Python<'_>, table: String) -> PyResult<Vec<(String, String)>> {
        self.with(py, move |s, cancel| cancel.block_on(s.describe(&table))?)
    }

    /// Releases the DuckDB connection (also on leaving a `with` block).
    fn close(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.pinned(py) {
            Ok(p) => format!(
                "k2.Session(pinned={})",
                p.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
            Err(_) => "k2.Session(closed)".into(),
        }
    }
}

/// Snapshot histories as Python dicts (for `Lakehouse.snapshots`).
pub fn snapshot_dicts<'py>(
    py: Python<'py>,
    history: Vec<k2_query::SnapshotInfo>,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for s in history {
        let d = PyDict::new(py);
        d.set_item("snapshot_id", s.snapshot_id)?;
        d.set_item("committed_at", s.committed_at)?;
        d.set_item("operation", s.operation)?;
        d.set_item("added_records", s.added_records)?;
        d.set_item("summary", s.summary)?;
        d.set_item("refs", s.refs)?;
        list.append(d)?;
    }
    Ok(list)
}

/// An OHLCV request from the Python arguments, checked.
fn ohlcv_request(
    symbols: &Bound<'_, PyAny>,
    exchange: String,
    interval: &str,
    (start, end): (&Bound<'_, PyAny>, &Bound<'_, PyAny>),
    (tz, fill, session): (&str, &str, &str),
) -> PyResult<OhlcvRequest> {
    let r = range(symbols, exchange, start, end)?;
    let interval = interval.parse().map_err(errors::query)?;
    let tz = match tz {
        "utc" | "UTC" => TimeZoneChoice::Utc,
        "exchange" => TimeZoneChoice::Exchange,
        other => {
            return Err(errors::invalid(format!(
                "tz {other:?}: expected \"utc\" or \"exchange\""
            )));
        }
    };
    let fill = match fill {
        "omit" | "none" => Fill::Omit,
        "forward" => Fill::Forward,
        other => {
            return Err(errors::invalid(format!(
                "fill {other:?}: expected \"omit\" or \"forward\""
            )));
        }
    };
    Ok(OhlcvRequest {
        symbols: r.symbols,
        exchange: r.exchange,
        interval,
        from: r.from,
        to: r.to,
        tz,
        fill,
        session: session.parse().map_err(errors::query)?,
    })
}
