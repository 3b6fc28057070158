//! The librdkafka client context of k2-admin's Kafka clients: it keeps the broker
//! connection's last error so that "cannot reach the cluster" can say why — a refused
//! password or an untrusted certificate arrives as a librdkafka error event, while the
//! failed request itself only reports a transport failure.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

/// Why the brokers in `config` cannot be reached, as ` (the broker connection: …)`, or
/// nothing when librdkafka reported no reason. Error events reach a client's context only
/// when its main queue is polled, which an admin client never does: a short-lived consumer
/// asks for metadata and is polled until its events are drained.
pub fn diagnose(config: &ClientConfig) -> String {
    let Ok(probe) =
        config.create_with_context::<_, BaseConsumer<BrokerContext>>(BrokerContext::default())
    else {
        return String::new();
    };
    let _ = probe.fetch_metadata(None, Duration::from_secs(5));
    drain(&probe)
}

/// Whether the brokers in `config` answer, found out in seconds: a refused connection, a
/// refused login or an untrusted certificate is an error at once (with librdkafka's reason)
/// rather than after a request's whole timeout; a broker that merely answers slowly is left
/// to the request's own timeout (`Ok`).
pub fn refusal(config: &ClientConfig) -> Result<(), String> {
    let Ok(probe) =
        config.create_with_context::<_, BaseConsumer<BrokerContext>>(BrokerContext::default())
    else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if probe
            .fetch_metadata(None, Duration::from_millis(500))
            .is_ok()
        {
            return Ok(());
        }
        for _ in 0..1000 {
            if probe.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        if let Some(reason) = probe.context().last_error()
            && refused(&reason)
        {
            return Err(format!(" (the broker connection: {reason})"));
        }
    }
    Ok(())
}

/// Reasons that mean the broker will not answer however long one waits.
fn refused(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "connection refused",
        "authentication",
        "sasl",
        "ssl handshake",
        "certificate",
        "name or service not known",
        "no address",
    ]
    .iter()
    .any(|k| r.contains(k))
}

/// Serves the events a consumer holds (logs and errors go to its context), then explains.
pub fn drain(consumer: &BaseConsumer<BrokerContext>) -> String {
    for _ in 0..1000 {
        if consumer.poll(Duration::ZERO).is_none() {
            break;
        }
    }
    consumer.context().explain()
}

#[derive(Default)]
pub struct BrokerContext {
    last_error: Mutex<Option<String>>,
}

impl BrokerContext {
    /// What the broker connection last failed with, if anything did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, reason: &str) {
        // Log lines begin with librdkafka's thread name, `[thrd:…]: `.
        let reason = match reason.strip_prefix("[thrd:") {
            Some(rest) => rest.split_once("]: ").map_or(reason, |(_, r)| r),
            None => reason,
        };
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_string());
    }

    /// ` (the broker connection: …)` for an error message, or nothing.
    pub fn explain(&self) -> String {
        self.last_error()
            .map(|e| format!(" (the broker connection: {e})"))
            .unwrap_or_default()
    }
}

impl ClientContext for BrokerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // A broker connection's failure (refused login, TLS handshake) is logged as FAIL,
        // sometimes without an error event.
        let serious = !matches!(
            level,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug
        );
        if fac == "FAIL" && serious {
            self.remember(message);
        }
        match level {
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            _ => tracing::warn!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", error = %error, "{reason}");
        self.remember(reason);
    }
}

impl ConsumerContext for BrokerContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn the_last_broker_error_explains_a_failure() {
        let c = BrokerContext::default();
        assert_eq!(c.explain(), "");
        c.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed",
        );
        assert_eq!(
            c.explain(),
            " (the broker connection: SASL authentication error: Authentication failed)"
        );
        c.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "[thrd:ssl://b:9093/bootstrap]: ssl://b:9093/bootstrap: SSL handshake failed",
        );
        assert_eq!(
            c.explain(),
            " (the broker connection: ssl://b:9093/bootstrap: SSL handshake failed)"
        );
    }
}
