//! How every K2 binary starts and ends: configuration (and the topics file, when the
//! program needs it) loaded and checked, logging installed, a runtime built, and one
//! convention for exit codes and error lines.
//!
//! Exit codes: 0 success, 1 a runtime failure (catalog, storage, broker), 2 bad
//! configuration or usage, 130 interrupted.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::{K2Config, TopicsConfig};

/// A failure at run time (a dependency failed).
pub const EXIT_FAILURE: u8 = 1;
/// Bad configuration or usage.
pub const EXIT_USAGE: u8 = 2;
/// Stopped by a second signal, without flushing.
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error a program ends with: any error, whatever crate made it (binaries' `anyhow`
/// errors convert too), printed with each of its causes once ([`crate::report`]).
pub type Failure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A K2 binary, by name (the prefix of its error lines).
#[derive(Debug, Clone, Copy)]
pub struct Program(pub &'static str);

/// What a program starts from.
#[derive(Debug)]
pub struct Started {
    pub config: K2Config,
    /// Loaded when the program asked for it.
    pub topics: Option<TopicsConfig>,
}

impl Program {
    /// Loads the process configuration from `path` (K2_* variables override it) and, if
    /// `with_topics`, the topics file it names; then installs logging. A configuration
    /// error is printed (it names the file, the key and what was expected) and becomes
    /// exit code 2.
    pub fn start(self, path: &Path, with_topics: bool) -> Result<Started, ExitCode> {
        self.start_logging_to(path, with_topics, std::io::stderr)
    }

    /// [`Program::start`] with log lines written through `writer` (see
    /// [`crate::logging::init_with`]).
    pub fn start_logging_to<W>(
        self,
        path: &Path,
        with_topics: bool,
        writer: W,
    ) -> Result<Started, ExitCode>
    where
        W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
    {
        let config = K2Config::load(path).map_err(|e| self.misused(e))?;
        let topics = if with_topics {
            Some(TopicsConfig::load(&config.topics_file).map_err(|e| self.misused(e))?)
        } else {
            None
        };
        crate::logging::init_with(&config.log, writer);
        Ok(Started { config, topics })
    }

    /// A multi-threaded runtime whose threads carry the program's name.
    pub fn runtime(self, worker_threads: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .enable_all()
            .thread_name(format!("{}-io", self.0))
            .build()
            .expect("building a tokio runtime")
    }

    /// Prints `error` as the program's error line; exit code 2.
    pub fn usage(self, error: &dyn Display) -> ExitCode {
        self.exit(EXIT_USAGE, error)
    }

    /// Prints `error`; exit code 1.
    pub fn failure(self, error: &dyn Display) -> ExitCode {
        self.exit(EXIT_FAILURE, error)
    }

    /// The exit code for a long run's outcome: 0, or the failure logged (for whatever
    /// collects the logs) and printed, with exit code 1.
    pub fn finish<E: Into<Failure>>(self, outcome: Result<(), E>) -> ExitCode {
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let text = crate::report::chain(&*e.into());
                tracing::error!(error = %text, "{} failed", self.0);
                self.exit(EXIT_FAILURE, &text)
            }
        }
    }

    /// Prints an error and each of its causes once; exit code 1.
    pub fn failed<E: Into<Failure>>(self, error: E) -> ExitCode {
        self.exit(EXIT_FAILURE, &crate::report::chain(&*error.into()))
    }

    /// Prints an error and each of its causes once; exit code 2 (bad configuration or
    /// usage).
    pub fn misused<E: Into<Failure>>(self, error: E) -> ExitCode {
        self.exit(EXIT_USAGE, &crate::report::chain(&*error.into()))
    }

    fn exit(self, code: u8, error: &dyn Display) -> ExitCode {
        eprintln!("{}: {error}", self.0);
        ExitCode::from(code)
    }
}

/// What a stop signal (SIGTERM, SIGINT) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// The first: finish the work in hand, then exit.
    Graceful,
    /// The same request again: signals that arrive together (coreutils `timeout` signals
    /// the child and then its process group; a terminal sends SIGINT to the group) count
    /// as one.
    Repeated,
    /// A second request, made on purpose: exit at once.
    Immediate,
}

/// Counts stop signals: the first asks for a graceful stop, another within
/// [`StopSignals::TOGETHER`] is the same request, a later one asks to exit at once.
#[derive(Debug, Default)]
pub struct StopSignals {
    first: Option<Instant>,
}

impl StopSignals {
    /// Signals this close together are one request.
    pub const TOGETHER: Duration = Duration::from_secs(1);

    pub fn on_signal(&mut self, now: Instant) -> StopRequest {
        match self.first {
            None => {
                self.first = Some(now);
                StopRequest::Graceful
            }
            Some(at) if now.saturating_duration_since(at) < Self::TOGETHER => StopRequest::Repeated,
            Some(_) => StopRequest::Immediate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_together_are_one_request_and_a_later_one_exits() {
        let t0 = Instant::now();
        let mut s = StopSignals::default();
        assert_eq!(s.on_signal(t0), StopRequest::Graceful);
        assert_eq!(
            s.on_signal(t0 + Duration::from_millis(5)),
            StopRequest::Repeated,
            "timeout's second SIGTERM"
        );
        assert_eq!(
            s.on_signal(t0 + Duration::from_millis(999)),
            StopRequest::Repeated
        );
        assert_eq!(
            s.on_signal(t0 + Duration::from_secs(3)),
            StopRequest::Immediate
        );
    }
}
