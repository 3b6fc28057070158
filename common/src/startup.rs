//! How every K2 binary starts and ends: configuration (and the topics file, when the
//! program needs it) loaded and checked, logging installed, a runtime built, and one
//! convention for exit codes and error lines.
//!
//! Exit codes: 0 success, 1 a runtime failure (catalog, storage, broker), 2 bad
//! configuration or usage, 130 interrupted.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{K2Config, TopicsConfig};

/// A failure at run time (a dependency failed).
pub const EXIT_FAILURE: u8 = 1;
/// Bad configuration or usage.
pub const EXIT_USAGE: u8 = 2;
/// Stopped by a second signal, without flushing.
pub const EXIT_INTERRUPTED: u8 = 130;

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
        let config = K2Config::load(path).map_err(|e| self.usage(&e))?;
        let topics = if with_topics {
            Some(TopicsConfig::load(&config.topics_file).map_err(|e| self.usage(&e))?)
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
    pub fn finish<E: Display>(self, outcome: Result<(), E>) -> ExitCode {
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "{} failed", self.0);
                self.failure(&e)
            }
        }
    }

    fn exit(self, code: u8, error: &dyn Display) -> ExitCode {
        eprintln!("{}: {error:#}", self.0);
        ExitCode::from(code)
    }
}
