//! What librdkafka's statistics (every `statistics.interval.ms`) tell the metrics: consumer
//! lag per topic, the fetch queue, broker round trips, and whether any broker is connected
//! (a readiness reason when none is). Read from the statistics librdkafka computes anyway,
//! rather than from extra watermark requests.

use std::collections::HashMap;

use rdkafka::Statistics;

use super::Metrics;
use super::labels::{BrokerLabels, TopicLabels};

impl Metrics {
    /// Consumer lag, fetch queue and broker round trips from librdkafka's statistics.
    pub fn kafka_statistics(&self, stats: &Statistics) {
        let mut lag: HashMap<TopicLabels, i64> = HashMap::new();
        let mut queued = 0;
        for (name, topic) in &stats.topics {
            let labels = TopicLabels::of(name);
            for p in topic.partitions.values() {
                // Partition -1 is librdkafka's internal "unassigned" entry; an unknown
                // position or watermark (-1) has no lag to tell.
                if p.partition < 0 || p.hi_offset < 0 || p.app_offset < 0 {
                    continue;
                }
                *lag.entry(labels.clone()).or_default() += (p.hi_offset - p.app_offset).max(0);
                queued += p.fetchq_cnt;
            }
        }
        self.consumer_lag.clear();
        for (labels, n) in lag {
            self.consumer_lag.get_or_create(&labels).set(n);
        }
        self.kafka_fetch_queue.set(queued);
        self.health
            .trouble("kafka", unreachable_brokers(stats.brokers.values()));
        for broker in stats.brokers.values() {
            if let Some(rtt) = &broker.rtt {
                self.kafka_broker_rtt
                    .get_or_create(&BrokerLabels {
                        broker: broker.name.clone(),
                    })
                    .set(rtt.avg as f64 / 1e6);
            }
        }
    }
}

/// A readiness reason when the brokers librdkafka learned from metadata are all
/// disconnected: nothing is consumed then, whatever the group's last state was. (Bootstrap
/// and internal entries do not count; librdkafka connects sparsely, so one broker up is
/// enough.)
fn unreachable_brokers<'a>(
    brokers: impl IntoIterator<Item = &'a rdkafka::statistics::Broker>,
) -> Option<String> {
    let learned: Vec<_> = brokers
        .into_iter()
        .filter(|b| b.source == "learned")
        .collect();
    if learned.is_empty() || learned.iter().any(|b| b.state == "UP") {
        return None;
    }
    let states: Vec<_> = learned
        .iter()
        .map(|b| format!("{} {}", b.name, b.state))
        .collect();
    Some(format!("no broker connected ({})", states.join(", ")))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn no_learned_broker_up_is_a_readiness_reason() {
        use rdkafka::statistics::Broker;
        let broker = |name: &str, source: &str, state: &str| Broker {
            name: name.into(),
            source: source.into(),
            state: state.into(),
            ..Default::default()
        };
        let bootstrap = broker("127.0.0.1:9092/bootstrap", "configured", "DOWN");
        let coordinator = broker("GroupCoordinator", "logical", "DOWN");
        let b1 = broker("127.0.0.1:9092/1", "learned", "UP");
        let b2 = broker("127.0.0.1:9094/2", "learned", "CONNECT");
        assert_eq!(unreachable_brokers([&bootstrap]), None, "before metadata");
        assert_eq!(
            unreachable_brokers([&bootstrap, &coordinator, &b1, &b2]),
            None
        );
        let b1_down = broker("127.0.0.1:9092/1", "learned", "DOWN");
        assert_eq!(
            unreachable_brokers([&bootstrap, &b1_down, &b2]).as_deref(),
            Some("no broker connected (127.0.0.1:9092/1 DOWN, 127.0.0.1:9094/2 CONNECT)")
        );

        let m = Metrics::new();
        m.kafka_statistics(&rdkafka::Statistics {
            brokers: [("b1".to_string(), b1_down)].into(),
            ..Default::default()
        });
        let why = m.health().ready_at(Instant::now()).unwrap_err();
        assert!(why.contains("kafka: no broker connected"), "{why}");
    }
}
