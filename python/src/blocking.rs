//! Running K2's calls from Python: off the GIL (other Python threads keep running, two
//! sessions answer at once), on one shared Tokio runtime, and interruptible with Ctrl-C.
//!
//! Python delivers signals to its main thread only, and only while that thread runs Python
//! code; a thread blocked inside a long DuckDB query would leave Ctrl-C pending until the
//! query ends. So the work runs on another thread (the lakehouse's or the session's
//! [`Worker`]) while the calling thread waits in short slices, checking for signals between
//! them. On a signal it cancels the work — dropping the future stops catalog I/O and scan
//! planning, DuckDB's interrupt stops a running query — waits for the work to let go of
//! the session, and raises the signal's exception (`KeyboardInterrupt`).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
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
    /// on the thread that runs them.)
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

/// What a call's helper sends back: its result, or the panic it raised.
type Outcome<T> = std::thread::Result<Result<T, QueryError>>;

/// The thread a lakehouse's or a session's calls run on, kept for its life. A thread
/// spawned per call cost about a millisecond a call (DuckDB and the allocator start cold
/// on a new thread; measured with bench/query --python); this one stays warm. Calls from
/// several Python threads queue here in turn, as they would on the session's lock.
pub struct Worker {
    jobs: Mutex<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl Worker {
    pub fn new() -> Self {
        let (jobs, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        // Ends when the sender goes (its owner is dropped).
        std::thread::Builder::new()
            .name("k2-worker".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("a worker thread can be started");
        Worker {
            jobs: Mutex::new(jobs),
        }
    }

    /// Runs `work` to completion on this worker's thread without holding the GIL; Ctrl-C
    /// cancels it (see the module docs). `interrupt` stops a DuckDB query the work may be
    /// running.
    pub fn run<T, W>(&self, py: Python<'_>, interrupt: Option<&Interrupt>, work: W) -> PyResult<T>
    where
        T: Send + 'static,
        W: FnOnce(&Cancel) -> Result<T, QueryError> + Send + 'static,
    {
        let cancel = Arc::new(Cancel(Notify::new()));
        let (done, finished) = mpsc::channel::<Outcome<T>>();
        let job = {
            let cancel = Arc::clone(&cancel);
            Box::new(move || {
                let _ = done.send(catch_unwind(AssertUnwindSafe(|| work(&cancel))));
            })
        };
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .map_err(|_| errors::invalid("the worker thread has stopped"))?;
        py.detach(move || wait(finished, &cancel, interrupt))
    }
}

/// Waits for a call's outcome in short slices, checking for signals between them; on a
/// signal cancels the work and keeps waiting until it lets go of the session.
fn wait<T>(
    finished: mpsc::Receiver<Outcome<T>>,
    cancel: &Cancel,
    interrupt: Option<&Interrupt>,
) -> PyResult<T> {
    let mut signal: Option<PyErr> = None;
    let outcome = loop {
        match finished.recv_timeout(SIGNAL_POLL) {
            Ok(outcome) => break Some(outcome),
            Err(RecvTimeoutError::Disconnected) => break None,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if signal.is_none() {
            signal = Python::attach(|py| py.check_signals()).err();
        }
        if signal.is_some() {
            // Repeated until the work stops: a query that began just after the first
            // interrupt must be interrupted too.
            cancel.0.notify_one();
            if let Some(i) = interrupt {
                i.interrupt();
            }
        }
    };
    match (signal, outcome) {
        (Some(signal), _) => Err(signal),
        (None, Some(Ok(result))) => result.map_err(errors::query),
        (None, Some(Err(panic))) => std::panic::resume_unwind(panic),
        (None, None) => Err(errors::invalid(
            "the call's thread stopped without an answer",
        )),
    }
}
