//! The Prometheus endpoint (`/metrics` on the metrics port).

use std::future::Future;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};

async fn metrics() -> ([(header::HeaderName, &'static str); 1], Vec<u8>) {
    let mut out = Vec::new();
    let families = nereid_core::metrics::registry().gather();
    let _ = TextEncoder::new().encode(&families, &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, Router::new().route("/metrics", get(metrics)))
        .with_graceful_shutdown(shutdown)
        .await
}
