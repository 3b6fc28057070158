//! A commit's retries of one table: counted by operation, waited out with backoff, and
//! reported as trouble (`/readyz` false, with the error) once they have gone on for
//! [`TROUBLE_AFTER`]; the report ends with the commit, however it ends.

use std::time::{Duration, Instant};

use k2_common::retry::Backoff;

use crate::instrumentation::{Metrics, Operation};

/// How long a table's storage or catalog may keep failing (or its commits keep
/// conflicting) before the sink says it is not ready: the trouble is real, not a blip.
pub const TROUBLE_AFTER: Duration = Duration::from_secs(30);

pub struct Retrying<'a> {
    metrics: &'a Metrics,
    table: String,
    backoff: Backoff,
    since: Option<Instant>,
    /// How long failures may go on before they are trouble.
    budget: Duration,
    /// The episode has outlasted its budget (counted once as exhausted).
    exhausted: bool,
}

impl<'a> Retrying<'a> {
    pub fn new(metrics: &'a Metrics, table: String, budget: Duration) -> Self {
        Retrying {
            metrics,
            table,
            backoff: Backoff::new(),
            since: None,
            budget,
            exhausted: false,
        }
    }

    /// Counts one retry of `op` after `e`, reports trouble past the budget, and waits.
    pub async fn again(&mut self, op: Operation, what: &str, e: &(dyn std::fmt::Display + Sync)) {
        self.metrics.retried(op);
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.budget {
            if !self.exhausted {
                self.exhausted = true;
                self.metrics.retries_exhausted(op);
            }
            self.metrics.health().trouble(
                &self.reason(),
                Some(format!(
                    "{what} has failed for {:.0}s: {e}",
                    since.elapsed().as_secs_f64()
                )),
            );
        }
        self.backoff.wait(what, e).await;
    }

    fn reason(&self) -> String {
        format!("storage ({})", self.table)
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        if self.since.is_some() {
            self.metrics.health().trouble(&self.reason(), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use k2_common::health::Probe;

    use super::*;

    #[tokio::test]
    async fn retries_past_their_budget_are_counted_once_and_make_the_sink_unready() {
        let metrics = Metrics::new();
        let health = metrics.health().clone();
        health.beat();
        health.joined();
        let e = "connection refused";
        {
            let mut r = Retrying::new(&metrics, "market_data.trades".into(), Duration::ZERO);
            r.again(Operation::Commit, "the catalog commit", &e).await;
            r.again(Operation::Commit, "the catalog commit", &e).await;
            let reason = health.ready().unwrap_err();
            assert!(
                reason.contains("storage (market_data.trades): the catalog commit has failed")
                    && reason.contains("connection refused"),
                "{reason}"
            );
        }
        assert_eq!(health.ready(), Ok(()), "the episode is over");
        let text = metrics.encode();
        assert!(
            text.contains("k2_retries_total{operation=\"commit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("k2_retries_exhausted_total{operation=\"commit\"} 1"),
            "{text}"
        );

        // Within the budget: counted, not trouble.
        let mut r = Retrying::new(&metrics, "market_data.quotes".into(), TROUBLE_AFTER);
        r.again(Operation::CatalogLoad, "loading the table", &e)
            .await;
        assert_eq!(health.ready(), Ok(()));
    }
}
