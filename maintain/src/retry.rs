//! How maintenance retries: transient catalog and storage failures and commit conflicts are
//! tried again with the shared backoff, a bounded number of times (maintenance is a batch
//! job: an outage fails the run, and the next run picks up where it stopped).

use std::future::Future;

use k2_common::catalog::is_transient;
use k2_common::retry::Backoff;

use crate::MaintainError;

/// Attempts before a maintenance step gives up.
pub const ATTEMPTS: usize = 8;

/// Runs `attempt` until it succeeds, fails with an error retrying cannot change, or has
/// failed [`ATTEMPTS`] times.
pub async fn catalog<T, Fut>(
    table: &str,
    what: &'static str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, MaintainError>
where
    Fut: Future<Output = iceberg::Result<T>>,
{
    let mut backoff = Backoff::new();
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && tries < ATTEMPTS => {
                backoff.wait(&format!("{table}: {what}"), &e).await;
            }
            Err(e) => {
                return Err(MaintainError::Catalog {
                    table: table.to_string(),
                    what,
                    error: Box::new(e),
                });
            }
        }
    }
}
