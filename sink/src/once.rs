//! `--once`: when a member of the group may stop. It stops once every partition that had
//! records at its start (the high watermarks it saw then) is read to that mark and
//! committed — partitions it holds by its own reading, partitions other members hold (or
//! held) by the offsets their tables recorded. So several members started together (a
//! parallel backfill) each stop when the whole backlog is in the tables, across
//! rebalances; a partition a killed member still holds keeps everyone waiting until the
//! coordinator hands it on and someone reads it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::Catalog;

use k2_common::data_type::DataType;
use k2_table::offsets::TopicPartition;

use crate::instrumentation::Metrics;
use crate::recorded::recorded_offsets;

/// How often the tables are asked about partitions other members hold.
const REREAD: Duration = Duration::from_secs(1);
/// How often a member that is not done yet says what it waits for.
const REPORT: Duration = Duration::from_secs(15);

type Recorded = HashMap<TopicPartition, i64>;

/// Where one partition stands for this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held and read up to (not including) this offset.
    ReadTo(i64),
    /// Held, waiting to learn where it starts.
    Starting,
    /// Not held by this member.
    Elsewhere,
}

pub struct GroupProgress {
    watermarks: HashMap<TopicPartition, i64>,
    data_types: HashMap<String, DataType>,
    catalog: Arc<dyn Catalog>,
    runtime: tokio::runtime::Handle,
    metrics: Metrics,
    /// What the tables recorded for partitions held elsewhere, when last read.
    recorded: Recorded,
    asked: Option<std::sync::mpsc::Receiver<Recorded>>,
    last_asked: Option<Instant>,
    last_report: Instant,
}

impl GroupProgress {
    pub fn new(
        watermarks: HashMap<TopicPartition, i64>,
        data_types: HashMap<String, DataType>,
        catalog: Arc<dyn Catalog>,
        runtime: tokio::runtime::Handle,
        metrics: Metrics,
    ) -> Self {
        GroupProgress {
            watermarks,
            data_types,
            catalog,
            runtime,
            metrics,
            recorded: Recorded::new(),
            asked: None,
            last_asked: None,
            last_report: Instant::now(),
        }
    }

    /// Whether everything that was there at the start is read (`held` says how far this
    /// member read each partition) or recorded by the tables. Never blocks: what other
    /// members did is read in the background and taken into account on a later call.
    pub fn caught_up(&mut self, held: impl Fn(&TopicPartition) -> Held) -> bool {
        if let Some(rx) = &self.asked
            && let Ok(recorded) = rx.try_recv()
        {
            self.recorded = recorded;
            self.asked = None;
        }
        let standing = standing(&self.watermarks, &self.recorded, held);
        if !standing.elsewhere.is_empty() {
            self.ask(&standing.elsewhere);
        }
        if !standing.done() && self.last_report.elapsed() >= REPORT {
            // A member that does not stop says why: a partition it reads, or one another
            // member (perhaps a dead one the coordinator has not yet replaced) holds.
            self.last_report = Instant::now();
            tracing::info!(
                reading = %list(&standing.here),
                held_elsewhere = %list(&standing.elsewhere),
                "--once: waiting for the backlog seen at start to be committed"
            );
        }
        standing.done()
    }

    /// Starts reading what the tables of these partitions recorded, unless a read is under
    /// way or one finished less than [`REREAD`] ago.
    fn ask(&mut self, partitions: &BTreeSet<TopicPartition>) {
        if self.asked.is_some() || self.last_asked.is_some_and(|t| t.elapsed() < REREAD) {
            return;
        }
        let data_types: BTreeSet<DataType> = partitions
            .iter()
            .filter_map(|tp| self.data_types.get(&tp.topic).copied())
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let catalog = self.catalog.clone();
        let metrics = self.metrics.clone();
        self.runtime.spawn(async move {
            let mut out = Recorded::new();
            for dt in data_types {
                match recorded_offsets(catalog.as_ref(), dt, &metrics).await {
                    Ok(offsets) => out.extend(offsets.iter().map(|(tp, o)| (tp.clone(), o))),
                    Err(e) => {
                        tracing::warn!(table = dt.table_name(), error = %k2_common::report::Chain(&e), "reading what other members committed failed; asking again")
                    }
                }
            }
            let _ = tx.send(out);
        });
        self.asked = Some(rx);
        self.last_asked = Some(Instant::now());
    }
}

/// The partitions with records at the start that are not yet read to their mark by this
/// member (`here`) or recorded to it by the tables (`elsewhere`).
#[derive(Debug, Default)]
struct Standing {
    here: BTreeSet<TopicPartition>,
    elsewhere: BTreeSet<TopicPartition>,
}

impl Standing {
    fn done(&self) -> bool {
        self.here.is_empty() && self.elsewhere.is_empty()
    }
}

fn standing(
    watermarks: &HashMap<TopicPartition, i64>,
    recorded: &Recorded,
    held: impl Fn(&TopicPartition) -> Held,
) -> Standing {
    let mut out = Standing::default();
    for (tp, &high) in watermarks {
        if high == 0 {
            continue;
        }
        match held(tp) {
            Held::ReadTo(next) if next >= high => {}
            Held::ReadTo(_) | Held::Starting => {
                out.here.insert(tp.clone());
            }
            Held::Elsewhere => {
                if recorded.get(tp).is_none_or(|r| *r < high) {
                    out.elsewhere.insert(tp.clone());
                }
            }
        }
    }
    out
}

fn list(partitions: &BTreeSet<TopicPartition>) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("market.equities.trades.asx", p)
    }

    fn map(pairs: &[(i32, i64)]) -> HashMap<TopicPartition, i64> {
        pairs.iter().map(|&(p, o)| (tp(p), o)).collect()
    }

    #[test]
    fn a_member_is_done_when_its_own_reading_and_the_others_commits_cover_the_start() {
        // Partition 0 is ours, read to 10 of 10; partition 1 another member's.
        let held = |read: i64| {
            move |t: &TopicPartition| {
                if t.partition == 0 {
                    Held::ReadTo(read)
                } else {
                    Held::Elsewhere
                }
            }
        };
        let marks = map(&[(0, 10), (1, 5), (2, 0)]);
        let s = standing(&marks, &map(&[(1, 5)]), held(10));
        assert!(
            s.done() && s.elsewhere.is_empty(),
            "ours read, theirs recorded, the empty one ignored"
        );
        let s = standing(&marks, &map(&[(1, 5)]), held(9));
        assert_eq!(s.here, BTreeSet::from([tp(0)]), "ours not read to the mark");
        assert!(!s.done());
        let s = standing(&marks, &map(&[(1, 4)]), held(10));
        assert!(!s.done(), "theirs not yet committed to the mark");
        assert_eq!(
            s.elsewhere,
            BTreeSet::from([tp(1)]),
            "the tables are asked about theirs"
        );
        let s = standing(&map(&[(0, 10)]), &map(&[]), |_| Held::Starting);
        assert!(!s.done(), "still finding where it starts");
    }
}
