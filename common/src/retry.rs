//! The retry policy for transient storage, catalog and registry failures: exponential
//! backoff with jitter, via `backon` (the `backoff` crate is unmaintained, RUSTSEC-2025-0012).
//!
//! Two shapes, one policy:
//! - [`retry`] / [`retry_blocking`] for an operation that is simply tried again;
//! - [`Backoff`] for loops that re-check state between attempts (the committer re-reads the
//!   table's offsets after a conflict), which `backon`'s closures cannot express.
//!
//! Every retry is logged with what was being done and counted by the caller's `on_retry`.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, BlockingRetryable, ExponentialBuilder, Retryable};

/// Backoff for a call that should eventually succeed once a dependency recovers.
/// `max_times` bounds the attempts; `None` retries until the caller gives up.
pub fn backoff(max_times: Option<usize>) -> ExponentialBuilder {
    let b = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter();
    match max_times {
        Some(n) => b.with_max_times(n),
        None => b.without_max_times(),
    }
}

/// Runs `op` until it succeeds or fails with an error `transient` refuses, waiting with
/// jittered exponential backoff between attempts (without limit: the caller's dependency
/// is expected to come back). `what` names the operation in the log line of each retry;
/// `on_retry` runs once per retry (metrics).
pub async fn retry<T, E, Fut>(
    what: &str,
    op: impl FnMut() -> Fut,
    transient: impl Fn(&E) -> bool,
    on_retry: impl Fn(&E),
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    op.retry(backoff(None))
        .when(transient)
        .notify(|e: &E, delay| {
            on_retry(e);
            tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
        })
        .await
}

/// [`retry`] for a blocking operation on the calling thread.
pub fn retry_blocking<T, E>(
    what: &str,
    op: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> bool,
    on_retry: impl Fn(&E),
) -> Result<T, E>
where
    E: Display,
{
    op.retry(backoff(None))
        .sleep(std::thread::sleep)
        .when(transient)
        .notify(|e: &E, delay| {
            on_retry(e);
            tracing::warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
        })
        .call()
}

/// The delays of the policy for a loop that retries by hand.
pub struct Backoff {
    delays: backon::ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            delays: backoff(None).build(),
        }
    }

    /// The next delay (the policy never runs out; 10 s if it did).
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(Duration::from_secs(10))
    }

    /// Logs why `what` is retried; the returned sleep lasts the next delay.
    pub fn wait(&mut self, what: &str, error: &dyn Display) -> tokio::time::Sleep {
        let delay = self.next_delay();
        tracing::warn!(error = %error, retry_in = ?delay, "{what} failed; retrying");
        tokio::time::sleep(delay)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn retries_transient_errors_and_stops_at_a_permanent_one() {
        let attempts = Cell::new(0);
        let retried = Cell::new(0);
        let result: Result<(), String> = retry_blocking(
            "a test operation",
            || {
                attempts.set(attempts.get() + 1);
                Err(if attempts.get() < 3 {
                    "transient".to_string()
                } else {
                    "permanent".to_string()
                })
            },
            |e| e == "transient",
            |_| retried.set(retried.get() + 1),
        );
        assert_eq!(result.unwrap_err(), "permanent");
        assert_eq!((attempts.get(), retried.get()), (3, 2));
    }

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(400));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        assert!(delays[11] >= Duration::from_secs(10));
    }
}
