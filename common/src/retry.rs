//! The retry policy for transient storage, catalog and registry failures: exponential
//! backoff with jitter, via `backon` (the `backoff` crate is unmaintained, RUSTSEC-2025-0012).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

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

/// The delays of an unbounded [`backoff`], for loops that retry by hand (they re-check
/// state between attempts, which `backon`'s `Retryable` closures cannot).
pub fn delays() -> impl Iterator<Item = Duration> {
    backoff(None).build()
}
