//! Running K2's calls from Python: off the GIL (other Python threads keep running, two
//! sessions answer at once), on one shared Tokio runtime, and interruptible with Ctrl-C.
//!
//! Python delivers signals to its main thread only, and only while that thread runs Python
//! code; a thread blocked inside a long DuckDB query would leave Ctrl-C pending until the
//! query ends. So the work runs on a helper thread while the calling thread waits in short
//! slices, checking for signals between them. On a signal it cancels the work — dropping
//! the future stops catalog I/O and scan planning, DuckDB's interrupt stops a running
//! query — waits for the helper to let go of the session, and raises the signal's
//! exception (`KeyboardInterrupt`).

use std::future::Future;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::Notify;

use k2_query::QueryError;

use crate::errors;

/// How often a waiting call looks for signals: short enough that Ctrl-C feels immediate.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("k2-io")
            .enable_all()
            .build()
            .expect("a Tokio runtime (threads and timers) can be built")
    })
}

/// Something that stops a running DuckDB query when asked.
pub type Interrupt = Arc<duckdb::InterruptHandle>;

/// The cancellation a call's work listens to.
pub struct Cancel(Notify);

impl Cancel {
    /// Drives `future` on the shared runtime until it completes or the call is cancelled.
    /// (Not `Send`: K2's sessions are used by one thread at a time, so their futures stay
    /// on the helper thread that runs them.)
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, QueryError> {
        runtime().block_on(async {
            tokio::select! {
                biased;
                () = self.0.notified() => Err(QueryError::Invalid("cancelled".into())),
                r = future => Ok(r),
            }
        })
    }
}

/// Runs `work` to completion on a helper thread without holding the GIL; Ctrl-C cancels
/// it (see the module docs). `interrupt` stops a DuckDB query the work may be running.
pub fn run<T, W>(py: Python<'_>, interrupt: Option<&Interrupt>, work: W) -> PyResult<T>
where
    T: Send,
    W: FnOnce(&Cancel) -> Result<T, QueryError> + Send,
{
    let cancel = Cancel(Notify::new());
    let outcome = py.detach(|| {
        std::thread::scope(|scope| {
            let cancel = &cancel;
            let (done, finished) = std::sync::mpsc::channel::<()>();
            let helper = scope.spawn(move || {
                let result = work(cancel);
                let _ = done.send(());
                result
            });
            let mut signal: Option<PyErr> = None;
            // Returns as soon as the work is done (or has panicked: the sender is gone).
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(SIGNAL_POLL) {
                if signal.is_none() {
                    signal = Python::attach(|py| py.check_signals()).err();
                }
                if signal.is_some() {
                    // Repeated until the helper stops: a query that began just after the
                    // first interrupt must be interrupted too.
                    cancel.0.notify_one();
                    if let Some(i) = interrupt {
                        i.interrupt();
                    }
                }
            }
            (signal, helper.join())
        })
    });
    match outcome {
        (Some(signal), _) => Err(signal),
        (None, Ok(result)) => result.map_err(errors::query),
        (None, Err(panic)) => std::panic::resume_unwind(panic),
    }
}
