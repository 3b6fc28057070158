//! Liveness and readiness, as `/healthz` and `/readyz` answer them (beside `/metrics`).
//!
//! - **live**: the process's main loop is turning (it beat within `stall_after`). A process
//!   that is not live should be restarted.
//! - **ready**: live, in its consumer group, no trouble reported (storage or catalog retries
//!   going on for long, consumption paused for it), and nothing consumed has waited longer
//!   than `commit_window` for its commit. A process that is not ready is doing its job
//!   badly or not at all; the body says why.
//!
//! The state is a few atomics and a small map, written by the loop and the committer and
//! read by the HTTP handlers; time is `Instant`s relative to the state's creation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the endpoints ask.
pub trait Probe: Send + Sync {
    /// `Ok` while the main loop turns; the reason otherwise.
    fn live(&self) -> Result<(), String>;
    /// `Ok` while the process does its job; the reasons otherwise.
    fn ready(&self) -> Result<(), String>;
}

/// Live and ready whenever it answers (a process with no loop of its own to watch).
pub struct Serving;

impl Probe for Serving {
    fn live(&self) -> Result<(), String> {
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How long is too long.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// The loop has stalled if it has not beaten for this long.
    pub stall_after: Duration,
    /// A record consumed this long ago and still not committed makes the process unready.
    pub commit_window: Duration,
}

/// A sink's health, shared by its loop, its committer and the endpoints.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Instant,
    policy: HealthPolicy,
    /// Microseconds since `origin` (+1, so 0 means "never").
    beat: AtomicU64,
    /// Of the oldest record consumed and not yet committed (0: none).
    oldest_uncommitted: AtomicU64,
    /// Of the last successful commit (0: none).
    last_commit: AtomicU64,
    joined: AtomicBool,
    /// Ongoing trouble by source (e.g. "storage"), with its reason.
    troubles: Mutex<BTreeMap<String, String>>,
}

impl Health {
    pub fn new(policy: HealthPolicy) -> Self {
        Health {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                policy,
                beat: AtomicU64::new(0),
                oldest_uncommitted: AtomicU64::new(0),
                last_commit: AtomicU64::new(0),
                joined: AtomicBool::new(false),
                troubles: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.inner.origin).as_micros() as u64 + 1
    }

    fn since(&self, stamp: u64, now: Instant) -> Option<Duration> {
        (stamp > 0).then(|| {
            now.saturating_duration_since(
                self.inner.origin + Duration::from_micros(stamp.saturating_sub(1)),
            )
        })
    }

    /// The main loop turned.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    pub fn beat_at(&self, now: Instant) {
        self.inner.beat.store(self.stamp(now), Ordering::Relaxed);
    }

    /// The consumer has had its first assignment (possibly empty).
    pub fn joined(&self) {
        self.inner.joined.store(true, Ordering::Relaxed);
    }

    /// When the oldest record consumed and not committed yet was consumed (`None`: every
    /// record consumed is committed).
    pub fn uncommitted_since(&self, oldest: Option<Instant>) {
        let v = oldest.map_or(0, |t| self.stamp(t));
        self.inner.oldest_uncommitted.store(v, Ordering::Relaxed);
    }

    /// A commit succeeded.
    pub fn committed(&self) {
        self.committed_at(Instant::now());
    }

    pub fn committed_at(&self, now: Instant) {
        self.inner
            .last_commit
            .store(self.stamp(now), Ordering::Relaxed);
    }

    /// Reports trouble from `source` (`Some(reason)`), or its end (`None`).
    pub fn trouble(&self, source: &str, reason: Option<String>) {
        let mut t = self.inner.troubles.lock().expect("health lock");
        match reason {
            Some(r) => t.insert(source.to_string(), r),
            None => t.remove(source),
        };
    }

    /// Age of the oldest consumed-but-uncommitted record (zero when there is none).
    pub fn commit_lag(&self, now: Instant) -> Duration {
        self.since(self.inner.oldest_uncommitted.load(Ordering::Relaxed), now)
            .unwrap_or_default()
    }

    /// Time since the last successful commit, if there was one.
    pub fn since_last_commit(&self, now: Instant) -> Option<Duration> {
        self.since(self.inner.last_commit.load(Ordering::Relaxed), now)
    }

    pub fn live_at(&self, now: Instant) -> Result<(), String> {
        match self.since(self.inner.beat.load(Ordering::Relaxed), now) {
            None => Err("the main loop has not started".into()),
            Some(d) if d > self.inner.policy.stall_after => Err(format!(
                "the main loop has not turned for {:.0}s",
                d.as_secs_f64()
            )),
            Some(_) => Ok(()),
        }
    }

    pub fn ready_at(&self, now: Instant) -> Result<(), String> {
        let mut reasons = Vec::new();
        if let Err(e) = self.live_at(now) {
            reasons.push(e);
        }
        if !self.inner.joined.load(Ordering::Relaxed) {
            reasons.push("not in the consumer group yet".into());
        }
        for (source, reason) in self.inner.troubles.lock().expect("health lock").iter() {
            reasons.push(format!("{source}: {reason}"));
        }
        let lag = self.commit_lag(now);
        if lag > self.inner.policy.commit_window {
            reasons.push(format!(
                "records consumed {:.0}s ago are not committed yet (window {:.0}s)",
                lag.as_secs_f64(),
                self.inner.policy.commit_window.as_secs_f64()
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

impl Probe for Health {
    fn live(&self) -> Result<(), String> {
        self.live_at(Instant::now())
    }

    fn ready(&self) -> Result<(), String> {
        self.ready_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> (Health, Instant) {
        let h = Health::new(HealthPolicy {
            stall_after: Duration::from_secs(30),
            commit_window: Duration::from_secs(60),
        });
        let t0 = h.inner.origin;
        (h, t0)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn live_while_the_loop_beats() {
        let (h, t0) = health();
        assert!(h.live_at(t0).unwrap_err().contains("not started"));
        h.beat_at(t0 + S(1));
        assert_eq!(h.live_at(t0 + S(31)), Ok(()));
        let stalled = h.live_at(t0 + S(32)).unwrap_err();
        assert!(stalled.contains("not turned for 31s"), "{stalled}");
    }

    #[test]
    fn ready_needs_the_group_no_trouble_and_commits_within_the_window() {
        let (h, t0) = health();
        h.beat_at(t0);
        assert!(h.ready_at(t0).unwrap_err().contains("consumer group"));
        h.joined();
        assert_eq!(h.ready_at(t0), Ok(()), "idle and caught up is ready");

        h.uncommitted_since(Some(t0));
        h.beat_at(t0 + S(60));
        assert_eq!(h.ready_at(t0 + S(60)), Ok(()));
        h.beat_at(t0 + S(61));
        let late = h.ready_at(t0 + S(61)).unwrap_err();
        assert!(late.contains("consumed 61s ago"), "{late}");
        assert_eq!(h.commit_lag(t0 + S(61)), S(61));

        h.uncommitted_since(None);
        h.committed_at(t0 + S(61));
        assert_eq!(h.ready_at(t0 + S(61)), Ok(()));
        assert_eq!(h.since_last_commit(t0 + S(70)), Some(S(9)));

        h.trouble("storage", Some("loading the table failed 12 times".into()));
        let trouble = h.ready_at(t0 + S(61)).unwrap_err();
        assert!(
            trouble.starts_with("storage: loading the table"),
            "{trouble}"
        );
        assert_eq!(h.live_at(t0 + S(61)), Ok(()), "trouble is not death");
        h.trouble("storage", None);
        assert_eq!(h.ready_at(t0 + S(61)), Ok(()));
    }

    #[test]
    fn a_stalled_loop_is_not_ready_either() {
        let (h, t0) = health();
        h.joined();
        h.beat_at(t0);
        let r = h.ready_at(t0 + S(45)).unwrap_err();
        assert!(r.contains("not turned"), "{r}");
    }
}
