//! `k2.Result`: a query's answer as Arrow record batches, handed to Python without copying
//! through the Arrow PyCapsule interface (`__arrow_c_stream__`), so pyarrow, pandas,
//! Polars, DuckDB's Python client or any other Arrow consumer take the same buffers.
//! Decimals stay `decimal128`, timestamps keep their time zone.

use std::sync::Arc;

use arrow::array::{ArrayRef, StructArray};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};
use pyo3_arrow::error::PyArrowResult;
use pyo3_arrow::ffi::{ArrayIterator, to_schema_pycapsule, to_stream_pycapsule};

/// Rows shown by `repr()`: enough to see what came back, few enough for a notebook cell.
const REPR_ROWS: usize = 10;

/// The answer to a question: Arrow record batches with one schema.
///
/// Convert with `to_arrow()`, `to_pandas()`, `to_polars()` or `to_reader()`, or pass it
/// to anything that accepts Arrow streams (`pyarrow.table(result)`, `polars.DataFrame(result)`).
#[pyclass(module = "k2", name = "Result", frozen)]
pub struct QueryResult {
    batches: Vec<RecordBatch>,
    schema: SchemaRef,
}

impl QueryResult {
    /// Batches from K2's query library, which always carry the schema (an empty result is
    /// one empty batch).
    pub fn new(batches: Vec<RecordBatch>) -> Self {
        let schema = batches
            .first()
            .map(RecordBatch::schema)
            .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
        QueryResult { batches, schema }
    }
}

#[pymethods]
impl QueryResult {
    /// Number of rows.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    /// Column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Size of the Arrow buffers in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyArrowResult<Bound<'py, PyCapsule>> {
        to_schema_pycapsule(py, self.schema.as_ref())
    }

    /// The Arrow C stream of the batches (zero copy; may be taken any number of times).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyArrowResult<Bound<'py, PyCapsule>> {
        let fields = self.schema.fields().clone();
        let arrays = self
            .batches
            .clone()
            .into_iter()
            .map(|b| Ok::<ArrayRef, ArrowError>(Arc::new(StructArray::from(b))));
        let field = Field::new("", DataType::Struct(fields), false)
            .with_metadata(self.schema.metadata().clone());
        let reader = Box::new(ArrayIterator::new(arrays, Arc::new(field)));
        to_stream_pycapsule(py, reader, requested_schema)
    }

    /// A `pyarrow.Table` over the same buffers.
    fn to_arrow<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let pa = import(slf.py(), "pyarrow", "pandas")?;
        pa.call_method1("table", (slf,))
    }

    /// A `pyarrow.RecordBatchReader` over the batches.
    fn to_reader<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let pa = import(slf.py(), "pyarrow", "pandas")?;
        pa.getattr("RecordBatchReader")?
            .call_method1("from_stream", (slf,))
    }

    /// A pandas DataFrame. Decimal columns stay exact and Arrow-backed
    /// (`pd.ArrowDtype(pa.decimal128(p, s))`, no copy, no per-row objects); timestamps are
    /// `datetime64[us, UTC]`. `types_mapper` replaces that choice with pyarrow's
    /// (`pd.ArrowDtype` for everything Arrow-backed, or a function of your own).
    #[pyo3(signature = (types_mapper=None))]
    fn to_pandas<'py>(
        slf: &Bound<'py, Self>,
        types_mapper: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let table = Self::to_arrow(slf)?;
        let mapper = match types_mapper {
            Some(m) => m,
            None => py.import("k2._convert")?.getattr("exact_decimals")?,
        };
        let kwargs = PyDict::new(py);
        kwargs.set_item("types_mapper", mapper)?;
        table.call_method("to_pandas", (), Some(&kwargs))
    }

    /// A Polars DataFrame (decimals as `pl.Decimal`, timestamps with their zone).
    fn to_polars<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let pl = import(slf.py(), "polars", "polars")?;
        pl.call_method1("DataFrame", (slf,))
    }

    fn __repr__(&self) -> String {
        let rows = self.num_rows();
        let mut shown = Vec::new();
        let mut left = REPR_ROWS;
        for b in &self.batches {
            if left == 0 {
                break;
            }
            let take = left.min(b.num_rows());
            shown.push(b.slice(0, take));
            left -= take;
        }
        if shown.is_empty() {
            shown.push(RecordBatch::new_empty(self.schema.clone()));
        }
        let table = arrow::util::pretty::pretty_format_batches(&shown)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let more = if rows > REPR_ROWS {
            format!("\n… {} more rows", rows - REPR_ROWS)
        } else {
            String::new()
        };
        format!(
            "k2.Result: {rows} row{} × {} column{}\n{table}{more}",
            if rows == 1 { "" } else { "s" },
            self.schema.fields().len(),
            if self.schema.fields().len() == 1 {
                ""
            } else {
                "s"
            },
        )
    }
}

/// `import module`, or an ImportError that says which extra installs it.
fn import<'py>(py: Python<'py>, module: &str, extra: &str) -> PyResult<Bound<'py, PyModule>> {
    py.import(module).map_err(|e| {
        pyo3::exceptions::PyImportError::new_err(format!(
            "{module} is needed for this conversion (pip install 'k2[{extra}]'): {e}"
        ))
    })
}
