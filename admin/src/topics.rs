//! `k2-admin topics plan|apply`: make the broker's topics match `topics.yaml`.
//!
//! Planning is a pure diff between the desired topics and what the broker reports, so it is
//! unit-tested without a broker; applying executes the plan's steps one by one and reports
//! the broker's answer to each.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use k2_common::config::TopicsConfig;

use crate::broker;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A topic as K2 wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

/// Every topic `topics.yaml` defines, plus the dead-letter topic.
pub fn desired_topics(topics: &TopicsConfig, dead_letter_topic: &str) -> Vec<DesiredTopic> {
    let mut out: Vec<DesiredTopic> = topics
        .topic_specs()
        .into_iter()
        .map(|s| DesiredTopic {
            name: s.name.to_string(),
            partitions: s.partitions,
            replication_factor: s.replication_factor,
            configs: s.configs,
        })
        .collect();
    out.push(DesiredTopic {
        name: dead_letter_topic.to_string(),
        // One partition keeps dead letters in arrival order; their volume is small.
        partitions: 1,
        replication_factor: topics.defaults().replication_factor,
        configs: BTreeMap::from([
            ("cleanup.policy".to_string(), "delete".to_string()),
            // 30 days: long enough for an operator to inspect and replay.
            ("retention.ms".to_string(), "2592000000".to_string()),
            (
                "min.insync.replicas".to_string(),
                topics.defaults().min_insync_replicas.to_string(),
            ),
        ]),
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What the broker has for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTopic {
    pub partitions: u32,
    /// The topic's current config values, `None` if the broker would not describe them.
    pub configs: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(DesiredTopic),
    RaisePartitions {
        topic: String,
        from: u32,
        to: u32,
    },
    AlterConfigs {
        topic: String,
        /// (key, current value, desired value)
        changes: Vec<(String, Option<String>, String)>,
        /// The full desired set: AlterConfigs replaces a topic's non-default configs.
        desired: BTreeMap<String, String>,
    },
}

/// A difference the tool refuses to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    DecreasePartitions {
        topic: String,
        current: u32,
        configured: u32,
    },
    ConfigsUnreadable {
        topic: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub problems: Vec<Problem>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.problems.is_empty()
    }

    /// True if some difference cannot be applied (the command should fail).
    pub fn has_errors(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, Problem::DecreasePartitions { .. }))
    }
}

/// Compares desired topics with the broker's. Topics the configuration does not mention
/// are left alone: K2 never deletes.
pub fn diff(desired: &[DesiredTopic], existing: &BTreeMap<String, ExistingTopic>) -> Plan {
    let mut plan = Plan::default();
    for want in desired {
        let Some(have) = existing.get(&want.name) else {
            plan.changes.push(Change::Create(want.clone()));
            continue;
        };
        if want.partitions > have.partitions {
            plan.changes.push(Change::RaisePartitions {
                topic: want.name.clone(),
                from: have.partitions,
                to: want.partitions,
            });
        } else if want.partitions < have.partitions {
            plan.problems.push(Problem::DecreasePartitions {
                topic: want.name.clone(),
                current: have.partitions,
                configured: want.partitions,
            });
        }
        match &have.configs {
            Some(current) => {
                let changes: Vec<_> = want
                    .configs
                    .iter()
                    .filter(|(k, v)| current.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), current.get(k).cloned(), v.clone()))
                    .collect();
                if !changes.is_empty() {
                    plan.changes.push(Change::AlterConfigs {
                        topic: want.name.clone(),
                        changes,
                        desired: want.configs.clone(),
                    });
                }
            }
            None => plan.problems.push(Problem::ConfigsUnreadable {
                topic: want.name.clone(),
                reason: "the broker did not describe the topic's configs".into(),
            }),
        }
    }
    plan
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create(t) => {
                let configs: Vec<String> =
                    t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "+ create {} partitions={} replication={} {}",
                    t.name,
                    t.partitions,
                    t.replication_factor,
                    configs.join(" ")
                )
            }
            Change::RaisePartitions { topic, from, to } => {
                write!(f, "~ raise partitions {topic}: {from} -> {to}")
            }
            Change::AlterConfigs { topic, changes, .. } => {
                let parts: Vec<String> = changes
                    .iter()
                    .map(|(k, from, to)| {
                        format!("{k}: {} -> {to}", from.as_deref().unwrap_or("(unset)"))
                    })
                    .collect();
                write!(f, "~ configs {topic}: {}", parts.join(", "))
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DecreasePartitions {
                topic,
                current,
                configured,
            } => write!(
                f,
                "! {topic} has {current} partitions but topics.yaml says {configured}: Kafka \
                 cannot remove partitions (it would reassign keys and break per-symbol order); \
                 raise the configured count back to {current} or create a new topic"
            ),
            Problem::ConfigsUnreadable { topic, reason } => {
                write!(f, "? {topic}: configs not compared: {reason}")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the Kafka cluster at {servers}{explained}")]
    Unreachable {
        servers: String,
        #[source]
        source: KafkaError,
        /// What the broker connection last failed with (a refused login, a certificate).
        explained: String,
    },
    /// The brokers refused the connection (or the login, or the certificate): said within
    /// seconds.
    #[error("cannot reach the Kafka cluster at {servers}{explained}")]
    Refused { servers: String, explained: String },
    #[error("{operation} failed")]
    Request {
        operation: String,
        #[source]
        source: KafkaError,
    },
}

/// Reads partition counts and configs of the named topics that exist on the broker.
pub async fn inspect(
    admin: &AdminClient<DefaultClientContext>,
    config: &ClientConfig,
    names: &[String],
) -> Result<BTreeMap<String, ExistingTopic>, AdminError> {
    if let Err(explained) = broker::refusal(config) {
        return Err(AdminError::Refused {
            servers: config.get("bootstrap.servers").unwrap_or("?").to_string(),
            explained,
        });
    }
    let metadata = admin
        .inner()
        .fetch_metadata(None, TIMEOUT)
        .map_err(|source| AdminError::Unreachable {
            servers: config.get("bootstrap.servers").unwrap_or("?").to_string(),
            source,
            explained: broker::diagnose(config),
        })?;
    let mut existing = BTreeMap::new();
    for t in metadata.topics() {
        if names.iter().any(|n| n == t.name()) && t.error().is_none() {
            existing.insert(
                t.name().to_string(),
                ExistingTopic {
                    partitions: t.partitions().len() as u32,
                    configs: None,
                },
            );
        }
    }
    if existing.is_empty() {
        return Ok(existing);
    }
    let specs: Vec<ResourceSpecifier> = existing
        .keys()
        .map(|n| ResourceSpecifier::Topic(n))
        .collect();
    let results = admin
        .describe_configs(&specs, &AdminOptions::new().request_timeout(Some(TIMEOUT)))
        .await
        .map_err(|source| AdminError::Request {
            operation: "describe topic configs".into(),
            source,
        })?;
    let mut described = BTreeMap::new();
    for r in results.into_iter().flatten() {
        let rdkafka::admin::OwnedResourceSpecifier::Topic(name) = &r.specifier else {
            continue;
        };
        let configs = r
            .entries
            .iter()
            .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
            .collect();
        described.insert(name.clone(), configs);
    }
    for (name, t) in existing.iter_mut() {
        t.configs = described.remove(name);
    }
    Ok(existing)
}

/// The outcome of one applied change.
#[derive(Debug)]
pub struct Applied {
    pub change: Change,
    pub result: Result<(), String>,
}

/// Applies every change, continuing past failures so one refusal does not hide the rest.
/// Returns once the broker's metadata shows every created or raised topic with its new
/// partition count: a broker acknowledges a CreateTopics before every broker's metadata
/// has it, and a producer or sink started right after `apply` must find the topics.
pub async fn apply(admin: &AdminClient<DefaultClientContext>, plan: &Plan) -> Vec<Applied> {
    let opts = AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT));
    let mut out = Vec::new();
    for change in &plan.changes {
        let result = match change {
            Change::Create(t) => {
                let mut nt = NewTopic::new(
                    &t.name,
                    t.partitions as i32,
                    TopicReplication::Fixed(t.replication_factor as i32),
                );
                for (k, v) in &t.configs {
                    nt = nt.set(k, v);
                }
                topic_outcome(admin.create_topics([&nt], &opts).await, true)
            }
            Change::RaisePartitions { topic, to, .. } => {
                let np = NewPartitions::new(topic, *to as usize);
                topic_outcome(admin.create_partitions([&np], &opts).await, false)
            }
            Change::AlterConfigs { topic, desired, .. } => {
                let mut ac = AlterConfig::new(ResourceSpecifier::Topic(topic));
                for (k, v) in desired {
                    ac = ac.set(k, v);
                }
                match admin.alter_configs([&ac], &opts).await {
                    Ok(rs) => rs
                        .into_iter()
                        .try_for_each(|r| r.map(|_| ()).map_err(|(_, code)| describe_code(code))),
                    Err(e) => Err(format!("the broker refused: {e}")),
                }
            }
        };
        out.push(Applied {
            change: change.clone(),
            result,
        });
    }
    await_metadata(admin, &mut out).await;
    out
}

/// Waits (up to [`TIMEOUT`]) until the metadata shows the partition counts of the applied
/// creations and raises; a change still not visible then is reported as failed.
async fn await_metadata(admin: &AdminClient<DefaultClientContext>, applied: &mut [Applied]) {
    let wanted = |c: &Change| match c {
        Change::Create(t) => Some((t.name.clone(), t.partitions)),
        Change::RaisePartitions { topic, to, .. } => Some((topic.clone(), *to)),
        Change::AlterConfigs { .. } => None,
    };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let shown: BTreeMap<String, u32> = match admin.inner().fetch_metadata(None, TIMEOUT) {
            Ok(md) => md
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name().to_string(), t.partitions().len() as u32))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "metadata request failed; retrying");
                BTreeMap::new()
            }
        };
        let pending: Vec<&mut Applied> = applied
            .iter_mut()
            .filter(|a| a.result.is_ok())
            .filter(|a| wanted(&a.change).is_some_and(|(name, n)| shown.get(&name) != Some(&n)))
            .collect();
        if pending.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for a in pending {
                a.result = Err(format!(
                    "the broker accepted it, but its metadata did not show it within {TIMEOUT:?}"
                ));
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn topic_outcome(
    result: Result<Vec<rdkafka::admin::TopicResult>, KafkaError>,
    create: bool,
) -> Result<(), String> {
    match result {
        Ok(rs) => rs.into_iter().try_for_each(|r| match r {
            Ok(_) => Ok(()),
            // Another `apply` won the race: the topic exists, which is what we wanted.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if create => Ok(()),
            Err((_, code)) => Err(describe_code(code)),
        }),
        Err(e) => Err(format!("the broker refused: {e}")),
    }
}

fn describe_code(code: RDKafkaErrorCode) -> String {
    format!("the broker refused: {code} ({code:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(name: &str, partitions: u32, configs: &[(&str, &str)]) -> DesiredTopic {
        DesiredTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn have(partitions: u32, configs: &[(&str, &str)]) -> ExistingTopic {
        ExistingTopic {
            partitions,
            configs: Some(
                configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn creates_missing_topics() {
        let plan = diff(&[want("a", 3, &[])], &BTreeMap::new());
        assert_eq!(plan.changes, vec![Change::Create(want("a", 3, &[]))]);
        assert!(plan.to_string().starts_with("+ create a partitions=3"));
    }

    #[test]
    fn nothing_to_do_prints_no_changes() {
        let existing = BTreeMap::from([(
            "a".to_string(),
            have(3, &[("retention.ms", "1"), ("segment.bytes", "9")]),
        )]);
        let plan = diff(&[want("a", 3, &[("retention.ms", "1")])], &existing);
        assert!(plan.is_empty());
        assert_eq!(plan.to_string(), "no changes\n");
    }

    #[test]
    fn raises_partitions_and_alters_configs() {
        let existing = BTreeMap::from([("a".to_string(), have(2, &[("retention.ms", "1")]))]);
        let plan = diff(
            &[want(
                "a",
                3,
                &[("retention.ms", "2"), ("cleanup.policy", "compact")],
            )],
            &existing,
        );
        let text = plan.to_string();
        assert!(text.contains("~ raise partitions a: 2 -> 3"), "{text}");
        assert!(
            text.contains("~ configs a: cleanup.policy: (unset) -> compact, retention.ms: 1 -> 2"),
            "{text}"
        );
        assert!(!plan.has_errors());
    }

    #[test]
    fn never_decreases_partitions() {
        let existing = BTreeMap::from([("a".to_string(), have(40, &[]))]);
        let plan = diff(&[want("a", 30, &[])], &existing);
        assert!(plan.changes.is_empty());
        assert!(plan.has_errors());
        assert!(
            plan.to_string()
                .contains("! a has 40 partitions but topics.yaml says 30"),
            "{plan}"
        );
    }
}
