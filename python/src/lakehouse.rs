//! `k2.Lakehouse`: the catalog and warehouse the sink writes, opened from K2's own
//! configuration (a `k2.toml` path or the same settings as a dict).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use k2_common::config::K2Config;
use k2_query::Lakehouse;

use crate::blocking::Worker;
use crate::errors;
use crate::session::{PySession, snapshot_dicts};
use crate::values;

/// Where a configuration given as a dict is said to come from (in error messages).
/// Relative paths in it resolve against the working directory.
const DICT_ORIGIN: &str = "k2.Lakehouse.open(dict)";

/// K2's lakehouse: the Iceberg catalog and warehouse the sink writes.
#[pyclass(module = "k2", name = "Lakehouse", frozen)]
pub struct PyLakehouse {
    inner: Arc<Lakehouse>,
    origin: String,
    worker: Worker,
}

fn load_config(config: &Bound<'_, PyAny>) -> PyResult<(K2Config, String)> {
    if let Ok(dict) = config.cast::<PyDict>() {
        let json: String = config
            .py()
            .import("json")?
            .call_method1("dumps", (dict,))?
            .extract()?;
        let table: toml::Table = serde_json::from_str(&json).map_err(|e| {
            errors::config(format!(
                "{DICT_ORIGIN}: expected sections of settings (tables, strings, numbers, \
                 booleans; no None): {e}"
            ))
        })?;
        let text = toml::to_string(&table).map_err(errors::config_error)?;
        let config =
            K2Config::from_toml(&text, Path::new(DICT_ORIGIN)).map_err(errors::config_error)?;
        return Ok((config, DICT_ORIGIN.to_string()));
    }
    let path: PathBuf = config.extract().map_err(|_| {
        errors::config(format!(
            "k2.Lakehouse.open: expected a path to k2.toml (str or os.PathLike) or a dict \
             of settings, got {}",
            values::type_name(config)
        ))
    })?;
    let loaded = K2Config::load(&path).map_err(errors::config_error)?;
    Ok((loaded, path.display().to_string()))
}

#[pymethods]
impl PyLakehouse {
    /// Opens the lakehouse K2's configuration describes: a path to `k2.toml` or a dict
    /// with the same sections (`{"catalog": {...}, "warehouse": {...}}`). `K2_*`
    /// environment variables override either, as for every K2 program. Raises
    /// `ConfigError` for bad settings and `CatalogError` if the catalog does not answer.
    #[staticmethod]
    fn open(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (config, origin) = load_config(config)?;
        let worker = Worker::new();
        let lakehouse = worker.run(py, None, move |c| c.block_on(Lakehouse::open(&config))?)?;
        Ok(PyLakehouse {
            inner: Arc::new(lakehouse),
            origin,
            worker,
        })
    }

    /// A read-only session with every table pinned to one instant: `as_of` (a datetime,
    /// a date or an ISO 8601 string: each table's last snapshot at or before it), or
    /// `snapshots` (table → snapshot id, e.g. another session's `pinned`), or neither
    /// for each table's current snapshot.
    #[pyo3(signature = (as_of=None, snapshots=None))]
    fn session(
        &self,
        py: Python<'_>,
        as_of: Option<&Bound<'_, PyAny>>,
        snapshots: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PySession> {
        let pin = values::pin(as_of, snapshots)?;
        let lake = self.inner.clone();
        let session = self
            .worker
            .run(py, None, move |c| c.block_on(lake.session(pin))?)?;
        Ok(PySession::new(session))
    }

    /// The K2 tables the catalog holds.
    fn tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let lake = self.inner.clone();
        self.worker
            .run(py, None, move |c| c.block_on(lake.tables())?)
    }

    /// A table's snapshots, oldest first: `snapshot_id`, `committed_at`, `operation`,
    /// `added_records` and the whole `summary` (K2's Kafka offsets included).
    fn snapshots<'py>(&self, py: Python<'py>, table: String) -> PyResult<Bound<'py, PyList>> {
        let lake = self.inner.clone();
        let history = self
            .worker
            .run(py, None, move |c| c.block_on(lake.snapshots(&table))?)?;
        snapshot_dicts(py, history)
    }

    /// Where DuckDB reads the tables' files.
    #[getter]
    fn warehouse(&self) -> String {
        self.inner.warehouse().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "k2.Lakehouse(config={:?}, warehouse={:?})",
            self.origin,
            self.inner.warehouse()
        )
    }
}
