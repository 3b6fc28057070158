//! Serving a Prometheus registry over HTTP: `/metrics` (OpenMetrics text) and `/health`.
//! The sink and scheduled maintenance each serve their own registry on `metrics.address`.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

/// Serves `registry` on `addr` until the process ends; logs the bound address (which
/// differs from `addr` when that asked for port 0) as `metrics endpoint listening`.
pub async fn serve(registry: Arc<Registry>, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "metrics endpoint listening");
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
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
        .route("/health", axum::routing::get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}
