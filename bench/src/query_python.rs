//! `k2-bench query --python PY`: the same OHLCV questions through K2's Python package
//! (`bench/query.py`, run by PY) until the bars are a pandas DataFrame, against the Rust
//! library's time until they are Arrow record batches; and what a large result costs the
//! Python process in memory next to its Arrow size.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use k2_query::{Lakehouse, Pin};

use crate::query::{Case, median};

/// Rows of the large result whose memory is measured.
const BIG_ROWS: u64 = 10_000_000;

#[derive(Deserialize)]
struct Answer {
    cases: Vec<CaseAnswer>,
    big: Option<Big>,
}

#[derive(Deserialize)]
struct CaseAnswer {
    name: String,
    rows: usize,
    warm_ms: f64,
    arrow_ms: f64,
}

#[derive(Deserialize)]
struct Big {
    rows: u64,
    arrow_bytes: u64,
    query_s: f64,
    rss_after_query: i64,
    peak_during_query: Option<i64>,
    rss_added_by_to_arrow: i64,
    pandas_s: f64,
    rss_added_by_to_pandas: i64,
    pandas_bytes: u64,
}

pub fn run(
    python: &Path,
    config: &Path,
    rt: &tokio::runtime::Runtime,
    lake: &Lakehouse,
    cases: &[Case],
    repeat: usize,
) -> anyhow::Result<()> {
    let session = rt.block_on(lake.session(Pin::Latest))?;
    let mut rust = Vec::new();
    for case in cases {
        rt.block_on(session.ohlcv(&case.req))?;
        let mut warm = Vec::new();
        let mut rows = 0;
        for _ in 0..repeat {
            let t = Instant::now();
            let batches = rt.block_on(session.ohlcv(&case.req))?;
            warm.push(t.elapsed());
            rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        rust.push((median(warm).as_secs_f64() * 1e3, rows));
    }
    drop(session);

    let request = json!({
        "config": config,
        "repeat": repeat,
        "big_rows": BIG_ROWS,
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "symbols": c.req.symbols,
            "exchange": c.req.exchange,
            "interval": c.req.interval.to_string(),
            "start": c.req.from.to_rfc3339(),
            "end": c.req.to.to_rfc3339(),
        })).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("query.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    let answer: Answer = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading what {} printed", script.display()))?;

    println!(
        "| case | rows | Rust → Arrow warm ms | Python → pyarrow warm ms | Python → pandas warm ms | pandas/Rust |"
    );
    println!("|---|---|---|---|---|---|");
    for (py, (rust_ms, rust_rows)) in answer.cases.iter().zip(&rust) {
        anyhow::ensure!(
            py.rows == *rust_rows,
            "{}: Python has {} rows, Rust {rust_rows}",
            py.name,
            py.rows
        );
        println!(
            "| {} | {} | {rust_ms:.1} | {:.1} | {:.1} | {:.2} |",
            py.name,
            py.rows,
            py.arrow_ms,
            py.warm_ms,
            py.warm_ms / rust_ms
        );
    }
    if let Some(big) = answer.big {
        let mb = |b: i64| b as f64 / 1e6;
        println!(
            "python memory: {} rows, Arrow {:.0} MB; RSS after the query +{:.0} MB ({:.2}× Arrow; peak during it {}); to_arrow +{:.0} MB; to_pandas +{:.0} MB in {:.2} s (pandas reports {:.0} MB); query {:.2} s",
            big.rows,
            mb(big.arrow_bytes as i64),
            mb(big.rss_after_query),
            big.rss_after_query as f64 / big.arrow_bytes as f64,
            big.peak_during_query
                .map(|p| format!("+{:.0} MB", mb(p)))
                .unwrap_or_else(|| "not above earlier peaks".into()),
            mb(big.rss_added_by_to_arrow),
            mb(big.rss_added_by_to_pandas),
            big.pandas_s,
            mb(big.pandas_bytes as i64),
            big.query_s,
        );
    }
    Ok(())
}
