//! Process-wide `tracing` set-up shared by every K2 binary, and a rate limit for log lines
//! an event could repeat without bound ([`LogBudget`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter. Logs go to
/// stderr so stdout stays free for command output.
pub fn init(config: &LogConfig) {
    init_with(config, std::io::stderr);
}

/// [`init`] writing through `writer`, which ends up on stderr: a program drawing progress
/// there passes one that prints each line above its bars.
pub fn init_with<W>(config: &LogConfig, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, never in files or collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    // A second init (tests, embedded use) keeps the first subscriber.
    let _ = match resolve(
        config.format,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    ) {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

/// The format logs are written in: `auto` is text on a terminal, JSON otherwise.
fn resolve(format: LogFormat, terminal: bool) -> LogFormat {
    match format {
        LogFormat::Auto if terminal => LogFormat::Text,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    }
}

/// At most `limit` log lines per `window`; the rest are counted and summarised.
#[derive(Debug)]
pub struct LogBudget {
    limit: u32,
    window: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl LogBudget {
    pub fn new(limit: u32, window: Duration) -> Self {
        LogBudget {
            limit,
            window,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// True if this event may be logged.
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().expect("log budget lock");
        if s.0.elapsed() >= self.window {
            if s.2 > 0 {
                tracing::warn!(
                    suppressed = s.2,
                    "similar log lines suppressed in the last window"
                );
            }
            *s = (Instant::now(), 0, 0);
        }
        if s.1 < self.limit {
            s.1 += 1;
            true
        } else {
            s.2 += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_for_a_person_and_json_for_a_collector() {
        assert_eq!(resolve(LogFormat::Auto, true), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Auto, false), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Text, false), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Json, true), LogFormat::Json);
    }
}
