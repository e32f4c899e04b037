//! The Prometheus endpoint that the coordinator and the workers both serve: `GET /metrics`
//! in the text exposition format, on its own port, beside the gRPC server.

use std::future::Future;
use std::net::SocketAddr;

use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

/// Serve `registry` on `addr` until `shutdown` resolves. Returns the bound address (pass
/// port 0 to pick a free one).
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut buf = Vec::new();
                if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
                    tracing::warn!(error = %e, "encoding metrics");
                }
                ([("content-type", "text/plain; version=0.0.4")], buf)
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
