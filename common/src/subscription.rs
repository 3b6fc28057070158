//! Which topics a consumer reads. Patterns are resolved against `topics.yaml`
//! ([`crate::config::TopicsConfig::resolve`]) into a sorted, de-duplicated topic list, so a
//! new exchange in the configuration is picked up by every pattern that covers it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::topic::{DataType, TopicName};

/// A set of constraints; an empty set means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionFilter {
    pub asset_classes: BTreeSet<String>,
    pub data_types: BTreeSet<DataType>,
    pub exchanges: BTreeSet<String>,
}

impl SubscriptionFilter {
    /// This filter narrowed by command-line filters (empty lists narrow nothing); `None` if
    /// they exclude everything it allows.
    pub fn narrowed(
        &self,
        exchanges: &[String],
        asset_classes: &[String],
        data_types: &[DataType],
    ) -> Option<SubscriptionFilter> {
        fn intersect<T: Ord + Clone>(base: &BTreeSet<T>, narrow: &[T]) -> Option<BTreeSet<T>> {
            if narrow.is_empty() {
                Some(base.clone())
            } else if base.is_empty() {
                Some(narrow.iter().cloned().collect())
            } else {
                let both: BTreeSet<T> = narrow
                    .iter()
                    .filter(|x| base.contains(x))
                    .cloned()
                    .collect();
                (!both.is_empty()).then_some(both)
            }
        }
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        Some(SubscriptionFilter {
            exchanges: intersect(&self.exchanges, &lower(exchanges))?,
            asset_classes: intersect(&self.asset_classes, &lower(asset_classes))?,
            data_types: intersect(&self.data_types, data_types)?,
        })
    }

    pub fn matches(&self, topic: &TopicName) -> bool {
        (self.asset_classes.is_empty() || self.asset_classes.contains(topic.asset_class()))
            && (self.data_types.is_empty() || self.data_types.contains(&topic.data_type()))
            && (self.exchanges.is_empty() || self.exchanges.contains(topic.exchange()))
    }
}

/// A subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Every configured topic that passes the filter.
    Filter(SubscriptionFilter),
    /// An explicit list of topics.
    Topics(Vec<TopicName>),
}

impl Subscription {
    /// Every configured topic.
    pub fn all() -> Self {
        Subscription::Filter(SubscriptionFilter::default())
    }

    /// All data types of one exchange.
    pub fn exchange(exchange: &str) -> Self {
        Subscription::Filter(SubscriptionFilter {
            exchanges: [exchange.to_ascii_lowercase()].into(),
            ..Default::default()
        })
    }

    /// One asset class, optionally restricted to some data types and exchanges (empty
    /// slices mean all of them).
    pub fn asset_class(asset_class: &str, data_types: &[DataType], exchanges: &[&str]) -> Self {
        Subscription::Filter(SubscriptionFilter {
            asset_classes: [asset_class.to_ascii_lowercase()].into(),
            data_types: data_types.iter().copied().collect(),
            exchanges: exchanges.iter().map(|e| e.to_ascii_lowercase()).collect(),
        })
    }

    /// One data type across every asset class and exchange.
    pub fn data_type(data_type: DataType) -> Self {
        Subscription::Filter(SubscriptionFilter {
            data_types: [data_type].into(),
            ..Default::default()
        })
    }

    /// An explicit list of (asset_class, data_type, exchange).
    pub fn topics(topics: impl IntoIterator<Item = TopicName>) -> Self {
        Subscription::Topics(topics.into_iter().collect())
    }
}
