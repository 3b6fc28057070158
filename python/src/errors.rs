//! K2's errors as Python exceptions, with K2's messages. One base class, `k2.K2Error`, so a
//! backtest can catch everything K2 raises in one place.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use k2_query::QueryError as Query;

pyo3::create_exception!(
    k2,
    K2Error,
    PyException,
    "Anything K2 raises (the base of the other K2 exceptions)."
);
pyo3::create_exception!(
    k2,
    ConfigError,
    K2Error,
    "The configuration could not be read: the message names the file, key and what was expected."
);
pyo3::create_exception!(
    k2,
    CatalogError,
    K2Error,
    "The Iceberg catalog could not be reached or answered with an error."
);
pyo3::create_exception!(
    k2,
    QueryError,
    K2Error,
    "A question K2 cannot answer as asked: bad SQL, a statement that writes, an unknown \
     table, exchange, symbol, interval or tag, an empty range, an instant before the first \
     snapshot or whose snapshots have expired."
);

pub fn query(e: Query) -> PyErr {
    match e {
        Query::Unreachable { .. } | Query::Catalog(_) => CatalogError::new_err(e.to_string()),
        Query::UnknownTable(_)
        | Query::BeforeFirstSnapshot { .. }
        | Query::UnknownSnapshot { .. }
        | Query::UnknownTag { .. }
        | Query::Expired { .. }
        | Query::Sql(_)
        | Query::ReadOnly(_)
        | Query::Invalid(_) => QueryError::new_err(e.to_string()),
    }
}

pub fn config(e: impl std::fmt::Display) -> PyErr {
    ConfigError::new_err(e.to_string())
}

/// A configuration error, with each of its causes once.
pub fn config_error(e: impl std::error::Error + 'static) -> PyErr {
    ConfigError::new_err(k2_common::report::chain(&e))
}

/// A caller's argument K2 cannot use (the message says what was expected).
pub fn invalid(message: impl Into<String>) -> PyErr {
    QueryError::new_err(message.into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("K2Error", py.get_type::<K2Error>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("CatalogError", py.get_type::<CatalogError>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    Ok(())
}
