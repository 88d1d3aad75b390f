//! Triton's gRPC frontend: `inference.GRPCInferenceService` and `grpc.health.v1.Health`,
//! translating the wire messages into calls on the core's [`InferenceServer`].

mod contents;
mod decoupled;
mod health;
mod infer;
mod logging;
mod repository;
#[cfg(test)]
mod serve_tests;
mod service;
mod shared_memory;
mod stats;
mod status;
mod stream;

use std::future::Future;
use std::sync::Arc;

use nereid_core::server::InferenceServer;
use nereid_proto::health::v1::health_server::HealthServer;
use nereid_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// Triton accepts messages up to 2 GB.
const MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// Serves both services on `listener` until `shutdown` completes.
pub async fn serve(
    server: Arc<InferenceServer>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Small requests must not wait on Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let inference = GrpcInferenceServiceServer::new(service::InferenceService { server: server.clone() })
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate);
    let health = HealthServer::new(health::HealthService { server });
    Server::builder()
        .add_service(inference)
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
