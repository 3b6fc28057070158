//! How long a table's history is kept (ADR-23): a short window of ordinary snapshots, and a
//! long-lived **end-of-day tag** per UTC day — `eod-2026-12-07` pins the last snapshot
//! committed at or before 2026-12-08T00:00:00Z — so a question asked "as of" any past
//! day's end still has its snapshot after the ordinary ones are gone.
//!
//! [`plan`] decides, from a table's metadata and the time, which tags to create, which
//! refs have outlived their `max-ref-age-ms`, and which snapshots go. The sink applies the
//! plan in its own commits (so a deployment that never schedules maintenance still keeps
//! its tables small) and `k2-admin maintain expire` applies the same plan; either is safe
//! beside the other, because both make the same decisions and every change is committed
//! with requirements on what it saw. [`unreferenced`] finds what an applied plan left
//! unreferenced on storage: expired snapshots' manifest lists, the manifests later ones
//! dropped, and data files compaction replaced, each only once no remaining snapshot can
//! reach it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use iceberg::spec::{
    MAIN_BRANCH, ManifestStatus, Operation, SnapshotRef, SnapshotReference, SnapshotRetention,
    TableMetadata,
};
use iceberg::table::Table;
use iceberg::{TableRequirement, TableUpdate};

/// End-of-day tags are named this, then the UTC day (`eod-2026-12-07`).
pub const EOD_TAG_PREFIX: &str = "eod-";

/// The retention policy of a table's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Ordinary snapshots younger than this stay (the time-travel window)…
    pub window_ms: i64,
    /// …but no more than this many of each branch: the window ends at whichever bound is
    /// reached first, so the metadata every commit rewrites stays the same size whatever
    /// the commit rate.
    pub max_snapshots: usize,
    /// The newest this-many snapshots of each branch stay whatever their age.
    pub min_snapshots: usize,
    /// End-of-day tags are created and kept for this long (their `max-ref-age-ms`);
    /// `None`: no tags.
    pub tag_max_age_ms: Option<i64>,
}

impl Policy {
    /// How far past `max_snapshots` a branch may grow before housekeeping is due by count:
    /// a twelfth of the bound, so the commits that expire by count come every
    /// `max_snapshots / 12` commits, each removing that many, rather than on every commit.
    pub fn count_slack(&self) -> usize {
        (self.max_snapshots / 12).max(1)
    }

    /// Whether the `i`-th snapshot of a branch (0: its head) is inside the window: among the
    /// newest `min_snapshots`, or younger than the window and among the newest
    /// `max_snapshots`.
    fn keeps(&self, i: usize, timestamp_ms: i64, cutoff_ms: i64) -> bool {
        i < self.min_snapshots || (timestamp_ms >= cutoff_ms && i < self.max_snapshots)
    }

    pub fn new(config: &k2_common::config::MaintenanceConfig) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Policy {
            window_ms: ms(config.snapshot_retention),
            max_snapshots: config.max_snapshots,
            min_snapshots: config.min_snapshots,
            tag_max_age_ms: config.end_of_day_tags.then(|| ms(config.tag_max_age)),
        }
    }
}

/// One ref of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub name: String,
    pub snapshot_id: i64,
    pub is_branch: bool,
    pub max_ref_age_ms: Option<i64>,
}

/// Every ref of the table. `TableMetadata` has no accessor for them; its serialised form (the
/// metadata file's `refs`) has them all.
pub fn refs(m: &TableMetadata) -> Vec<Ref> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "snapshot-id")]
        snapshot_id: i64,
        #[serde(rename = "type")]
        kind: String,
        #[serde(rename = "max-ref-age-ms")]
        max_ref_age_ms: Option<i64>,
    }
    let raw: Option<BTreeMap<String, Raw>> = serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("refs").cloned())
        .and_then(|r| serde_json::from_value(r).ok());
    match raw {
        Some(refs) if !refs.is_empty() => refs
            .into_iter()
            .map(|(name, r)| Ref {
                name,
                snapshot_id: r.snapshot_id,
                is_branch: r.kind == "branch",
                max_ref_age_ms: r.max_ref_age_ms,
            })
            .collect(),
        _ => m
            .current_snapshot()
            .map(|s| {
                vec![Ref {
                    name: MAIN_BRANCH.to_string(),
                    snapshot_id: s.snapshot_id(),
                    is_branch: true,
                    max_ref_age_ms: None,
                }]
            })
            .unwrap_or_default(),
    }
}

/// The end-of-day tag of `day`.
pub fn eod_tag(day: NaiveDate) -> String {
    format!("{EOD_TAG_PREFIX}{}", day.format("%Y-%m-%d"))
}

/// The day an end-of-day tag names, if `name` is one.
pub fn eod_day(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix(EOD_TAG_PREFIX)?, "%Y-%m-%d").ok()
}

/// The instant an end-of-day tag of `day` stands for: the midnight (UTC) that ends it.
pub fn end_of_day_ms(day: NaiveDate) -> i64 {
    day.succ_opt()
        .unwrap_or(day)
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

fn day_of(ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// What housekeeping changes in a table's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// End-of-day tags to create: (name, snapshot id).
    pub tags: Vec<(String, i64)>,
    /// Refs past their `max-ref-age-ms`: (name, the snapshot id they point at).
    pub untag: Vec<(String, i64)>,
    /// Snapshots that go.
    pub expire: BTreeSet<i64>,
    /// The `max-ref-age-ms` the new tags carry.
    pub tag_max_age_ms: Option<i64>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.untag.is_empty() && self.expire.is_empty()
    }

    /// The plan as metadata updates, in the order the metadata builder needs (tags first,
    /// snapshots last), and the requirements that make it safe: a new tag must not exist
    /// yet, an expired ref must still point where it did.
    pub fn changes(&self) -> (Vec<TableUpdate>, Vec<TableRequirement>) {
        let mut updates = Vec::new();
        let mut requirements = Vec::new();
        for (name, id) in &self.tags {
            updates.push(TableUpdate::SetSnapshotRef {
                ref_name: name.clone(),
                reference: SnapshotReference::new(
                    *id,
                    SnapshotRetention::Tag {
                        max_ref_age_ms: self.tag_max_age_ms,
                    },
                ),
            });
            requirements.push(TableRequirement::RefSnapshotIdMatch {
                r#ref: name.clone(),
                snapshot_id: None,
            });
        }
        for (name, id) in &self.untag {
            updates.push(TableUpdate::RemoveSnapshotRef {
                ref_name: name.clone(),
            });
            requirements.push(TableRequirement::RefSnapshotIdMatch {
                r#ref: name.clone(),
                snapshot_id: Some(*id),
            });
        }
        if !self.expire.is_empty() {
            updates.push(TableUpdate::RemoveSnapshots {
                snapshot_ids: self.expire.iter().copied().collect(),
            });
        }
        (updates, requirements)
    }
}

/// Cheap enough to ask on every commit (no serialisation of the metadata): whether
/// anything [`plan`] would do may be due, and why. (Refs past their age are found when
/// either is, which a new tag makes happen every day.)
pub fn due(m: &TableMetadata, policy: &Policy, now_ms: i64) -> Due {
    let cutoff = now_ms.saturating_sub(policy.window_ms);
    let not_its_days_tag = |s: &SnapshotRef| {
        m.snapshot_for_ref(&eod_tag(day_of(s.timestamp_ms())))
            .is_none_or(|t| t.snapshot_id() != s.snapshot_id())
    };
    let ancestry = main_ancestry(m);
    let overfull = policy.max_snapshots.saturating_add(policy.count_slack());
    if ancestry
        .iter()
        .enumerate()
        .skip(overfull.max(policy.min_snapshots))
        .any(|(_, s)| not_its_days_tag(s))
    {
        return Due::Overfull;
    }
    if ancestry
        .iter()
        .enumerate()
        .any(|(i, s)| !policy.keeps(i, s.timestamp_ms(), cutoff) && not_its_days_tag(s))
    {
        return Due::Aged;
    }
    match (policy.tag_max_age_ms, m.current_snapshot()) {
        (Some(_), Some(head)) => {
            let day = day_of(head.timestamp_ms());
            if day < day_of(now_ms) && m.snapshot_for_ref(&eod_tag(day)).is_none() {
                Due::Aged
            } else {
                Due::No
            }
        }
        _ => Due::No,
    }
}

/// Whether housekeeping is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing to do.
    No,
    /// Time has done it: a snapshot of main's history left the window by age (or by count,
    /// less than [`Policy::count_slack`] past it), or a UTC day ended since the table's head
    /// without its tag. A committer may wait a while and do it with more.
    Aged,
    /// Main's history is [`Policy::count_slack`] snapshots past `max_snapshots`: waiting
    /// would let the metadata grow with the commit rate.
    Overfull,
}

/// Housekeeping of `m` at `now_ms` under `policy`.
pub fn plan(m: &TableMetadata, policy: &Policy, now_ms: i64) -> Plan {
    let refs = refs(m);
    let mut plan = Plan {
        tag_max_age_ms: policy.tag_max_age_ms,
        ..Plan::default()
    };
    // Refs whose snapshot is older than their max age go (Iceberg's rule; main never).
    for r in &refs {
        if r.name == MAIN_BRANCH {
            continue;
        }
        let Some(age) = r.max_ref_age_ms else {
            continue;
        };
        let ts = m
            .snapshot_by_id(r.snapshot_id)
            .map_or(i64::MIN, |s| s.timestamp_ms());
        if ts < now_ms.saturating_sub(age) {
            plan.untag.push((r.name.clone(), r.snapshot_id));
        }
    }
    let ancestry = main_ancestry(m);
    if let (Some(max_age), Some(oldest)) = (policy.tag_max_age_ms, ancestry.last()) {
        let existing: HashSet<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        let today = day_of(now_ms);
        let mut day = day_of(oldest.timestamp_ms());
        while day < today {
            let end = end_of_day_ms(day);
            // A commit stamped exactly at the midnight would still belong to the day:
            // its tag waits until the clock is past it.
            if end >= now_ms {
                break;
            }
            let name = eod_tag(day);
            // The newest snapshot at or before the day's end.
            let target = ancestry.iter().find(|s| s.timestamp_ms() <= end);
            if let Some(target) = target
                && !existing.contains(name.as_str())
                && target.timestamp_ms() >= now_ms.saturating_sub(max_age)
            {
                plan.tags.push((name, target.snapshot_id()));
            }
            day = day.succ_opt().unwrap_or(today);
        }
    }
    // What stays: every remaining ref's head, the new tags, and along each branch the
    // newest `min_snapshots` and what is inside the window (by age and by count).
    let cutoff = now_ms.saturating_sub(policy.window_ms);
    let untagged: HashSet<&str> = plan.untag.iter().map(|(n, _)| n.as_str()).collect();
    let mut keep: BTreeSet<i64> = plan.tags.iter().map(|(_, id)| *id).collect();
    let mut on_a_branch = BTreeSet::new();
    for r in refs.iter().filter(|r| !untagged.contains(r.name.as_str())) {
        keep.insert(r.snapshot_id);
        if !r.is_branch {
            continue;
        }
        let mut kept = 0;
        let mut at = m.snapshot_by_id(r.snapshot_id);
        while let Some(s) = at {
            on_a_branch.insert(s.snapshot_id());
            if policy.keeps(kept, s.timestamp_ms(), cutoff) {
                keep.insert(s.snapshot_id());
                kept += 1;
            }
            at = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
        }
    }
    plan.expire = m
        .snapshots()
        .filter(|s| !keep.contains(&s.snapshot_id()))
        .filter(|s| on_a_branch.contains(&s.snapshot_id()) || s.timestamp_ms() < cutoff)
        .map(|s| s.snapshot_id())
        .collect();
    plan
}

/// The snapshots of main's history still in the metadata, newest first (up to the first
/// parent that is gone).
fn main_ancestry(m: &TableMetadata) -> Vec<&SnapshotRef> {
    let mut out = Vec::new();
    let mut at = m.current_snapshot();
    while let Some(s) = at {
        out.push(s);
        at = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
    }
    out
}

/// The snapshot a table's history held at `at_ms` from what the metadata still has: the
/// snapshot log while it reaches back that far, else the end-of-day tag of the day that
/// ends at or after `at_ms`, if the tagged snapshot is not later than `at_ms` (no snapshot
/// can have come between: the tag is the day's last). `Err` with the reproducible instants
/// nearest before it when neither holds (its snapshots have expired).
pub fn snapshot_at(m: &TableMetadata, at_ms: i64) -> Result<Option<i64>, Expired> {
    let history = m.history();
    if let Some(first) = history.first()
        && first.timestamp_ms <= at_ms
    {
        return Ok(history
            .iter()
            .filter(|e| e.timestamp_ms <= at_ms)
            .max_by_key(|e| e.timestamp_ms)
            .map(|e| e.snapshot_id));
    }
    // The day whose end is the first midnight at or after `at_ms`.
    let day = day_of(at_ms - 1);
    if let Some(tagged) = m.snapshot_for_ref(&eod_tag(day))
        && tagged.timestamp_ms() <= at_ms
    {
        return Ok(Some(tagged.snapshot_id()));
    }
    let tagged_before = refs(m)
        .into_iter()
        .filter_map(|r| eod_day(&r.name))
        .filter(|d| end_of_day_ms(*d) <= at_ms)
        .max();
    // Before the table's first snapshot ever (the oldest in the log has no parent): it was
    // empty then. Otherwise snapshots before the log's start existed and expired.
    let oldest = history
        .first()
        .and_then(|e| m.snapshot_by_id(e.snapshot_id));
    let before_first = match oldest {
        Some(s) => s.parent_snapshot_id().is_none(),
        None => m.snapshots().len() == 0,
    };
    if before_first && tagged_before.is_none() {
        return Ok(None);
    }
    Err(Expired {
        tag_before: tagged_before,
        window_from_ms: history.first().map(|e| e.timestamp_ms),
    })
}

/// An instant whose snapshot has expired: the nearest instants that still reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The latest day before the instant whose end-of-day tag exists.
    pub tag_before: Option<NaiveDate>,
    /// Where the retained window of ordinary snapshots begins.
    pub window_from_ms: Option<i64>,
}

/// Files an applied plan left unreferenced: the manifest lists of the expired snapshots of
/// main's history, the manifests a later snapshot dropped, and the data files a later
/// snapshot deleted (compaction) — each only if no snapshot that stays can still reach
/// it. `before` is the table as it was when the plan was made; `expired` the snapshots the
/// committed plan removed.
///
/// Along main's history a manifest or data file is reachable from an interval of
/// snapshots: from the one that added it up to (not including) the one that dropped it.
/// So a file dropped at snapshot `C` is unreferenced once no remaining snapshot lies in
/// `[added, C)` — checked by sequence numbers against the snapshots that stay (the tags
/// among them), with no need to read their manifest lists.
pub async fn unreferenced(before: &Table, expired: &BTreeSet<i64>) -> iceberg::Result<Vec<String>> {
    let m = before.metadata();
    let chain: Vec<&SnapshotRef> = {
        let mut c = main_ancestry(m);
        c.reverse();
        c
    };
    let staying: Vec<i64> = m
        .snapshots()
        .filter(|s| !expired.contains(&s.snapshot_id()))
        .map(|s| s.sequence_number())
        .collect();
    let reachable = |added_seq: i64, dropped_seq: i64| {
        staying.iter().any(|&t| t >= added_seq && t < dropped_seq)
    };
    let mut out = Vec::new();
    let mut lists: BTreeMap<i64, Vec<iceberg::spec::ManifestFile>> = BTreeMap::new();
    for pair in chain.windows(2) {
        let (s, c) = (pair[0], pair[1]);
        if !expired.contains(&s.snapshot_id()) {
            continue;
        }
        out.push(s.manifest_list().to_string());
        for snap in [s, c] {
            if let std::collections::btree_map::Entry::Vacant(v) = lists.entry(snap.snapshot_id()) {
                let list = before.manifest_list_reader(snap).load().await?;
                v.insert(list.entries().to_vec());
            }
        }
        let in_c: HashSet<&str> = lists[&c.snapshot_id()]
            .iter()
            .map(|mf| mf.manifest_path.as_str())
            .collect();
        for mf in &lists[&s.snapshot_id()] {
            if !in_c.contains(mf.manifest_path.as_str())
                && !reachable(mf.sequence_number, c.sequence_number())
            {
                out.push(mf.manifest_path.clone());
            }
        }
        if c.summary().operation != Operation::Append {
            // Data files `c` deleted (a replace): listed as deleted in the manifests it wrote.
            for mf in lists[&c.snapshot_id()]
                .iter()
                .filter(|mf| mf.added_snapshot_id == c.snapshot_id() && mf.has_deleted_files())
            {
                let manifest = mf.load_manifest(before.file_io()).await?;
                for e in manifest.entries() {
                    if e.status() == ManifestStatus::Deleted
                        && !reachable(e.sequence_number().unwrap_or(0), c.sequence_number())
                    {
                        out.push(e.file_path().to_string());
                    }
                }
            }
        }
    }
    // Expired snapshots outside main's unbroken history (a tag past its age, a dropped
    // branch): their manifest lists are theirs alone; what else only they reached is left
    // to orphan cleanup, which sees the whole table.
    let in_chain: HashSet<i64> = chain.iter().map(|s| s.snapshot_id()).collect();
    for id in expired.iter().filter(|id| !in_chain.contains(id)) {
        if let Some(s) = m.snapshot_by_id(*id) {
            out.push(s.manifest_list().to_string());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::spec::{
        FormatVersion, NestedField, PrimitiveType, Schema, Snapshot, SortOrder, Summary,
        TableMetadataBuilder, Type, UnboundPartitionSpec,
    };

    use super::*;

    const T0: i64 = 1_765_065_600_000; // 2025-12-07T00:00:00Z
    const DAY_MS: i64 = 86_400_000;
    const H: i64 = 3_600_000;

    /// A table whose main branch committed one snapshot at each of `at` (ms), ids 1…
    fn table(at: &[i64]) -> TableMetadata {
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "x", Type::Primitive(PrimitiveType::Long)).into(),
            ])
            .build()
            .unwrap();
        let mut b = TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "memory:///t".to_string(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap();
        for (i, &ts) in at.iter().enumerate() {
            let id = i as i64 + 1;
            let s = Snapshot::builder()
                .with_snapshot_id(id)
                .with_parent_snapshot_id((id > 1).then_some(id - 1))
                .with_sequence_number(id)
                .with_timestamp_ms(ts)
                .with_manifest_list(format!("memory:///t/metadata/snap-{id}.avro"))
                .with_summary(Summary {
                    operation: Operation::Append,
                    additional_properties: HashMap::new(),
                })
                .build();
            // One build per commit, as commits happen: a build that adds several
            // snapshots logs only its last (the others are intermediate).
            let m = b
                .set_branch_snapshot(s, MAIN_BRANCH)
                .unwrap()
                .build()
                .unwrap();
            b = m.metadata.into_builder(None);
        }
        b.build().unwrap().metadata
    }

    fn apply(m: TableMetadata, plan: &Plan) -> TableMetadata {
        let (updates, requirements) = plan.changes();
        for r in &requirements {
            r.check(Some(&m)).unwrap();
        }
        let mut b = m.into_builder(None);
        for u in updates {
            b = u.apply(b).unwrap();
        }
        b.build().unwrap().metadata
    }

    fn policy(window_h: i64, tags: bool) -> Policy {
        Policy {
            window_ms: window_h * H,
            max_snapshots: 1_000,
            min_snapshots: 2,
            tag_max_age_ms: tags.then_some(365 * DAY_MS),
        }
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn each_ended_day_gets_a_tag_on_its_last_snapshot_and_the_rest_expires_outside_the_window() {
        // Two days of commits every 6 hours, then a morning commit on the third.
        let at: Vec<i64> = (0..9).map(|i| T0 + 1 + i * 6 * H).collect();
        let m = table(&at);
        let now = T0 + 2 * 24 * H + 7 * H;
        let plan = plan(&m, &policy(3, true), now);
        assert_eq!(
            plan.tags,
            [
                ("eod-2025-12-07".to_string(), 4),
                ("eod-2025-12-08".to_string(), 8)
            ]
        );
        // Window of 3 h: 9 stays (head, and min 2 keeps 8, tagged anyway).
        assert_eq!(plan.expire, BTreeSet::from([1, 2, 3, 5, 6, 7]));
        let after = apply(m, &plan);
        assert_eq!(after.snapshots().len(), 3);
        // The day's end resolves to its tag; the window to its snapshots; the middle of a
        // past day is gone, with the nearest tag before it named.
        assert_eq!(
            snapshot_at(&after, end_of_day_ms(day("2025-12-07"))),
            Ok(Some(4))
        );
        assert_eq!(
            snapshot_at(&after, T0 + 23 * H),
            Ok(Some(4)),
            "after the day's last commit"
        );
        assert_eq!(snapshot_at(&after, now), Ok(Some(9)));
        let gone = snapshot_at(&after, T0 + 24 * H + 12 * H + 5).unwrap_err();
        assert_eq!(gone.tag_before, Some(day("2025-12-07")));
        // The plan is done: nothing more until time passes.
        assert!(plan_is_empty(&after, now));
        assert_eq!(due(&after, &policy(3, true), now), Due::No);
    }

    fn plan_is_empty(m: &TableMetadata, now: i64) -> bool {
        plan(m, &policy(3, true), now).is_empty()
    }

    #[test]
    fn tags_past_their_age_go_and_their_snapshots_with_them() {
        let at: Vec<i64> = (0..4).map(|i| T0 + 1 + i * 24 * H).collect();
        let m = table(&at);
        let mut p = policy(1, true);
        p.tag_max_age_ms = Some(3 * 24 * H);
        let now = T0 + 3 * 24 * H + 2 * H;
        let first = plan(&m, &p, now);
        // Day 1's last snapshot (1) is older than three days: no tag for it.
        let names: Vec<&str> = first.tags.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["eod-2025-12-08", "eod-2025-12-09"]);
        let m = apply(m, &first);
        // A day later, the 2025-12-08 tag has outlived its age.
        let later = plan(&m, &p, now + 24 * H);
        assert_eq!(later.untag, [("eod-2025-12-08".to_string(), 2)]);
        assert!(later.expire.contains(&2));
    }

    #[test]
    fn without_tags_only_the_window_and_min_snapshots_stay() {
        let at: Vec<i64> = (0..5).map(|i| T0 + i * H).collect();
        let m = table(&at);
        let p = plan(&m, &policy(1, false), T0 + 10 * H);
        assert!(p.tags.is_empty());
        assert_eq!(
            p.expire,
            BTreeSet::from([1, 2, 3]),
            "min_snapshots keeps 4 and 5"
        );
    }

    #[test]
    fn the_window_ends_at_its_count_whatever_the_commit_rate() {
        // A commit every second for 10 minutes, all inside a 1-h window.
        let at: Vec<i64> = (0..600).map(|i| T0 + H + i * 1_000).collect();
        let m = table(&at);
        let now = T0 + H + 600_000;
        let p = Policy {
            max_snapshots: 120,
            ..policy(1, true)
        };
        assert_eq!(p.count_slack(), 10);
        // Over the count by more than its slack: due now, not when the period allows.
        assert_eq!(due(&m, &p, now), Due::Overfull);
        let first = plan(&m, &p, now);
        assert!(first.tags.is_empty());
        assert_eq!(first.expire, (1..=480).collect::<BTreeSet<i64>>());
        let m = apply(m, &first);
        assert_eq!(m.snapshots().len(), 120);
        assert_eq!(due(&m, &p, now), Due::No);
        // The window reads back as far as it reaches, and says where it ends before that.
        assert_eq!(snapshot_at(&m, now), Ok(Some(600)));
        assert_eq!(snapshot_at(&m, at[480]), Ok(Some(481)));
        assert!(snapshot_at(&m, at[100]).is_err());
        // Past the count but within its slack: due when the period allows (Aged); past
        // the slack, at once.
        let last = |n: usize| table(&at[..n]);
        assert_eq!(due(&last(120), &p, now), Due::No);
        assert_eq!(due(&last(121), &p, now), Due::Aged);
        assert_eq!(due(&last(130), &p, now), Due::Aged);
        assert_eq!(due(&last(131), &p, now), Due::Overfull);
        // min_snapshots still wins over the count.
        let q = Policy {
            max_snapshots: 1,
            min_snapshots: 3,
            ..policy(1, false)
        };
        assert_eq!(
            plan(&table(&at[..5]), &q, now).expire,
            BTreeSet::from([1, 2])
        );
    }

    #[test]
    fn an_instant_before_the_first_snapshot_reads_the_table_empty() {
        let m = table(&[T0 + H]);
        assert_eq!(snapshot_at(&m, T0), Ok(None));
        assert_eq!(eod_day("eod-2025-12-07"), Some(day("2025-12-07")));
        assert_eq!(eod_day("nightly"), None);
    }
}
