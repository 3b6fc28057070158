//! K2's Python package (`python/`), tested from Python: the pytest suite in
//! `python/tests` runs against a lakehouse landed here for real — the ASX sample replayed
//! into the broker and committed by k2-sink — with the wheel scripts/bootstrap built and
//! installed into the project's venv.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use k2_tests::{asx_dir, bin, repo_root, stderr, stdout};

/// The project's venv (scripts/lib.sh: `$K2_CACHE/venv`).
fn venv_python() -> PathBuf {
    let cache = std::env::var_os("K2_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/k2")
        });
    cache.join("venv/bin/python")
}

/// The wheel scripts/bootstrap built and installed, checked to be newer than the sources
/// it is built from (a stale wheel would test old code).
fn built_wheel() -> PathBuf {
    let record = repo_root().join(".k2/python-wheel");
    let wheel = std::fs::read_to_string(&record)
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: scripts/bootstrap builds and installs the Python package",
                record.display()
            )
        });
    let built = std::fs::metadata(&wheel)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", wheel.display()));
    let newest = [
        "python/src",
        "python/k2",
        "query/src",
        "common/src",
        "table/src",
    ]
    .iter()
    .flat_map(|d| walk(&repo_root().join(d)))
    .max()
    .unwrap_or(SystemTime::UNIX_EPOCH);
    assert!(
        built >= newest,
        "{} is older than its sources: run scripts/bootstrap to rebuild it",
        wheel.display()
    );
    // The venv is shared by every checkout on the machine: its k2 must be this one's.
    let origin = Command::new(venv_python())
        .args([
            "-c",
            "import importlib.metadata as m; print(m.distribution('k2').read_text('direct_url.json'))",
        ])
        .output()
        .expect("the venv's python runs");
    assert!(
        stdout(&origin).contains(&*wheel.to_string_lossy()),
        "the venv's k2 was not installed from {} ({}): run scripts/bootstrap",
        wheel.display(),
        stdout(&origin)
    );
    wheel
}

fn walk(dir: &std::path::Path) -> Vec<SystemTime> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            out.push(t);
        }
    }
    out
}

#[test]
fn python_package_passes_its_pytest_suite() {
    let wheel = built_wheel();
    let (env, _) = k2_tests::replay_asx(&[]);
    env.sink_once(&[], Duration::from_secs(600));
    // Every day closed and compacted, with its one-minute bars: the suite's OHLCV answers
    // (checked against pandas on the raw CSV) come from the bars table.
    env.compact_trades();
    let bin_dir = bin("k2-sink")
        .parent()
        .expect("binaries live in a directory")
        .to_path_buf();
    // The binaries the suite runs itself (more data landing, the shell, the Rust example)
    // must be current too.
    for b in ["k2-feed", "k2-query", "examples/backtest"] {
        bin(b);
    }
    let mut pytest = Command::new(venv_python());
    pytest
        .args([
            "-m",
            "pytest",
            "python/tests",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(repo_root())
        .env("K2_TEST_CONFIG", &env.config)
        .env("K2_TEST_EXCHANGE", &env.asx)
        .env("K2_ASX_DIR", asx_dir())
        .env("K2_TEST_BIN_DIR", &bin_dir)
        .env("K2_TEST_WHEEL", &wheel)
        .envs(env.vars.iter().map(|(k, v)| (k, v)));
    let out = pytest
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", venv_python().display()));
    println!("{}", stdout(&out));
    assert!(
        out.status.success(),
        "pytest python/tests failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}
