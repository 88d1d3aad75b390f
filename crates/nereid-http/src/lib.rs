//! Triton's HTTP/REST frontend (KServe v2 with Triton's extensions) and the metrics endpoint.

mod compression;
mod infer_codec;
mod json_data;
mod metrics;
mod routes;
mod shared_memory;
mod triton_json;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use nereid_core::server::InferenceServer;
use nereid_core::shared_memory_manager::MemoryKind;

pub use metrics::serve_metrics;

/// Triton's default `--http-max-input-size`.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub fn router(server: Arc<InferenceServer>) -> Router {
    use routes::*;
    let model = |suffix: &str| format!("/v2/models/{{model}}{suffix}");
    let versioned = |suffix: &str| format!("/v2/models/{{model}}/versions/{{version}}{suffix}");
    let mut r = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(model_stats))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route("/v2/repository/models/{model}/unload", post(repository_unload))
        .route("/v2/logging", get(get_logging).post(post_logging))
        .route("/v2/trace/setting", get(unsupported).post(unsupported));
    for (prefix, kind) in [("/v2/systemsharedmemory", MemoryKind::System), ("/v2/cudasharedmemory", MemoryKind::Cuda)] {
        for base in [prefix.to_string(), format!("{prefix}/region/{{region}}")] {
            r = r
                .route(&format!("{base}/status"), get(move |s, p| shared_memory::status(kind, s, p)))
                .route(&format!("{base}/register"), post(move |s, p, b| shared_memory::register(kind, s, p, b)))
                .route(&format!("{base}/unregister"), post(move |s, p| shared_memory::unregister(kind, s, p)));
        }
    }
    for path in [model(""), versioned("")] {
        r = r.route(&path, get(model_metadata));
    }
    for path in [model("/ready"), versioned("/ready")] {
        r = r.route(&path, get(model_ready));
    }
    for path in [model("/config"), versioned("/config")] {
        r = r.route(&path, get(model_config));
    }
    for path in [model("/stats"), versioned("/stats")] {
        r = r.route(&path, get(model_stats));
    }
    for path in [model("/infer"), versioned("/infer")] {
        r = r.route(&path, post(infer));
    }
    for path in [model("/trace/setting"), versioned("/trace/setting")] {
        r = r.route(&path, get(unsupported).post(unsupported));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(decompress_request))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(server)
}

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    server: Arc<InferenceServer>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(server)).with_graceful_shutdown(shutdown).await
}
