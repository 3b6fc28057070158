//! `k2` for Python: K2's query library (`k2-query`) bound with PyO3. Only binding lives
//! here — pins, OHLCV, SQL checks and errors are the Rust library's, so Python and Rust
//! answer alike. The Python package (`python/k2`) re-exports this module `k2._k2`.

mod blocking;
mod errors;
mod lakehouse;
mod result;
mod session;
mod values;

use pyo3::prelude::*;

#[pymodule]
fn _k2(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", k2_common::VERSION)?;
    m.add_class::<lakehouse::PyLakehouse>()?;
    m.add_class::<session::PySession>()?;
    m.add_class::<result::QueryResult>()?;
    errors::register(m)?;
    Ok(())
}
