//! Serving a Prometheus registry over HTTP: `/metrics` (OpenMetrics text), `/healthz` and
//! `/readyz` (see [`crate::health`]; `/health` is kept as an alias of `/healthz`). The sink
//! and scheduled maintenance each serve their own registry on `metrics.address`.
//!
//! Every K2 process also exports what it is and what it costs ([`ProcessMetrics`]): build
//! info, start time, uptime, resident memory and open files, read from `/proc` at scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::health::Probe;

#[doc(hidden)]
pub use prometheus_client as __prometheus;

/// Declares a set of metrics once: each field's type (and constructor, for histograms), its
/// name under the registry's prefix and its help text. The struct, its registration and
/// the list of names (for the test that the docs name every metric) all come from this one
/// list, so a metric cannot be declared without being exported or documented.
///
/// ```ignore
/// k2_common::metrics! {
///     /// What the sink counts.
///     pub struct Counters {
///         records_written: Family<TableLabels, Counter> = "records_written", "Records committed";
///     }
/// }
/// ```
#[macro_export]
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $field:ident : $ty:ty = $metric:literal, $help:literal $(, $ctor:expr)? ; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone)]
        $vis struct $name {
            $( pub $field: $ty, )*
        }

        impl $name {
            /// Creates every metric and registers it in `registry`.
            pub fn register(registry: &mut $crate::metrics::__prometheus::registry::Registry) -> Self {
                $(
                    let $field: $ty = $crate::metrics!(@new $ty $(, $ctor)?);
                    registry.register($metric, $help, $field.clone());
                )*
                $name { $( $field, )* }
            }

            /// Every metric's name (without the registry's prefix), in declaration order.
            pub const NAMES: &'static [&'static str] = &[$( $metric ),*];
        }
    };
    (@new $ty:ty) => { <$ty>::default() };
    (@new $ty:ty, $ctor:expr) => { $ctor };
}

/// True if `docs` names the metric `name` as a whole name: `k2_retries` is named by
/// "`k2_retries_total`" or "k2_retries{…}" but not by "k2_retries_exhausted_total" (a
/// counter's `_total` suffix is part of its name as exported).
pub fn documented(docs: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    docs.match_indices(name).any(|(at, _)| {
        let before = docs[..at].chars().next_back();
        let after = &docs[at + name.len()..];
        let after = after.strip_prefix("_total").unwrap_or(after);
        !before.is_some_and(ident) && !after.chars().next().is_some_and(ident)
    })
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

/// Work done just before each scrape is encoded (gauges computed from the current time).
pub type OnScrape = Arc<dyn Fn() + Send + Sync>;

/// Serves `registry` and `probe` on `addr` until the process ends; logs the bound address
/// (which differs from `addr` when that asked for port 0) as `metrics endpoint listening`.
/// `on_scrape` runs before every `/metrics` answer.
pub async fn serve(
    registry: Arc<Registry>,
    probe: Arc<dyn Probe>,
    on_scrape: OnScrape,
    addr: SocketAddr,
) -> std::io::Result<()> {
    let listener = bind(addr).await.map_err(|e| e.source)?;
    serve_on(listener, registry, probe, on_scrape).await
}

/// The metrics endpoint's address could not be bound: a configuration error (another
/// process listens there), reported before the program starts its work.
#[derive(Debug, thiserror::Error)]
#[error(
    "metrics.address: cannot listen on {address} (set metrics.address, or K2_METRICS__ADDRESS, to a free address; 127.0.0.1:0 picks one)"
)]
pub struct BindError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the metrics endpoint's address, so a program refuses to start without it rather
/// than run unobserved.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// [`serve`] on an already bound listener.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    probe: Arc<dyn Probe>,
    on_scrape: OnScrape,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics endpoint listening");
    let answer = |r: Result<(), String>| match r {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    };
    let live = {
        let probe = probe.clone();
        move || {
            let probe = probe.clone();
            async move { answer(probe.live()) }
        }
    };
    let ready = move || {
        let probe = probe.clone();
        async move { answer(probe.ready()) }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                let on_scrape = on_scrape.clone();
                async move {
                    on_scrape();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        encode(&registry),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(live.clone()))
        .route("/health", axum::routing::get(live))
        .route("/readyz", axum::routing::get(ready));
    axum::serve(listener, app).await
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// Build info and the process's own costs, registered into a program's registry.
#[derive(Clone)]
pub struct ProcessMetrics {
    started: Instant,
    uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
    resident: Gauge,
    open_fds: Gauge,
}

impl ProcessMetrics {
    /// Registers `build_info`, `process_start_time_seconds`, `uptime_seconds`,
    /// `process_resident_memory_bytes` and `process_open_fds` (under the registry's prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::VERSION.to_string(),
                commit: crate::COMMIT.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: version and commit (always 1)",
            build,
        );
        let start: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "process_start_time_seconds",
            "Unix time the process started",
            start,
        );
        let m = ProcessMetrics {
            started: Instant::now(),
            uptime: Gauge::default(),
            resident: Gauge::default(),
            open_fds: Gauge::default(),
        };
        registry.register(
            "uptime_seconds",
            "Seconds since the process started",
            m.uptime.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size (RSS)",
            m.resident.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors (files, sockets)",
            m.open_fds.clone(),
        );
        m
    }

    /// Reads the current values (at scrape).
    pub fn refresh(&self) {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_bytes() {
            self.resident.set(rss as i64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
    }
}

/// Resident set size from `/proc/self/statm` (pages × page size).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_documented_by_its_whole_name_only() {
        let docs = "`k2_retries_exhausted_total{operation}` and k2_ready.";
        assert!(
            !documented(docs, "k2_retries"),
            "a longer name is another metric"
        );
        assert!(documented(docs, "k2_retries_exhausted"));
        assert!(documented(docs, "k2_ready"));
        assert!(!documented(docs, "k2_rea"));
        assert!(documented("`k2_retries_total{operation}`", "k2_retries"));
    }

    #[test]
    fn process_metrics_read_the_process() {
        let mut registry = Registry::with_prefix("k2");
        let m = ProcessMetrics::register(&mut registry);
        m.refresh();
        let text = encode(&registry);
        assert!(text.contains(&format!(
            "k2_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            crate::VERSION,
            crate::COMMIT
        )));
        assert!(m.resident.get() > 1 << 20, "some memory is resident");
        assert!(m.open_fds.get() >= 3, "stdin, stdout, stderr at least");
    }
}
