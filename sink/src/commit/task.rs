//! The committer as the poll loop sees it: a task on the runtime that commits one job at a
//! time and hands results back without blocking the poll thread.

use crate::dead_letters::PendingDeadLetters;
use crate::job::CommitJob;

use super::{CommitError, Committer, JobOutcome};

pub struct CommitTask {
    jobs: tokio::sync::mpsc::UnboundedSender<(u64, CommitJob, PendingDeadLetters)>,
    results: std::sync::mpsc::Receiver<Result<JobOutcome, CommitError>>,
    in_flight: Option<u64>,
    next_job: u64,
}

/// The committer task is gone (it ended after an error already reported, or the runtime
/// shut down).
#[derive(Debug, thiserror::Error)]
#[error("the committer task ended")]
pub struct CommitTaskEnded;

impl CommitTask {
    pub fn spawn(committer: Committer, runtime: &tokio::runtime::Handle) -> Self {
        let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::unbounded_channel();
        let (results_tx, results_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            while let Some((id, job, dead_letters)) = jobs_rx.recv().await {
                let result = committer.commit(id, job, dead_letters).await;
                if results_tx.send(result).is_err() {
                    break;
                }
            }
        });
        CommitTask {
            jobs: jobs_tx,
            results: results_rx,
            in_flight: None,
            next_job: 1,
        }
    }

    /// True while a job is being committed.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Hands a job to the committer; returns its id. Only one job is in flight at a time.
    pub fn submit(
        &mut self,
        job: CommitJob,
        dead_letters: PendingDeadLetters,
    ) -> Result<u64, CommitTaskEnded> {
        debug_assert!(self.in_flight.is_none(), "one job in flight at a time");
        let id = self.next_job;
        self.next_job += 1;
        self.jobs
            .send((id, job, dead_letters))
            .map_err(|_| CommitTaskEnded)?;
        self.in_flight = Some(id);
        Ok(id)
    }

    /// The result of the job in flight, if it has finished.
    pub fn try_result(
        &mut self,
    ) -> Result<Option<Result<JobOutcome, CommitError>>, CommitTaskEnded> {
        match self.results.try_recv() {
            Ok(r) => {
                self.in_flight = None;
                Ok(Some(r))
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => Ok(None),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(CommitTaskEnded),
        }
    }
}
