//! The served frontend through a real tonic client, on a server with no models.

use std::sync::Arc;

use nereid_core::model_repository_manager::{ControlMode, ModelRepositoryManager, RepositoryOptions};
use nereid_core::server::{InferenceServer, ServerOptions};
use nereid_proto::health::v1::health_check_response::ServingStatus;
use nereid_proto::health::v1::health_client::HealthClient;
use nereid_proto::health::v1::HealthCheckRequest;
use nereid_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use nereid_proto::inference::*;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

async fn start() -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let repository = Arc::new(ModelRepositoryManager::new(RepositoryOptions::default(), Vec::new()));
    let options = ServerOptions {
        id: "nereid-test".into(),
        control_mode: ControlMode::Explicit,
        strict_readiness: true,
        allow_client_shm: false,
    };
    let server = Arc::new(InferenceServer::new(options, repository));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(crate::serve(server, listener, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (channel, stop)
}

fn bad_request(id: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "missing".into(),
        model_version: "1".into(),
        id: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unary_rpcs_answer() {
    let (channel, _stop) = start().await;
    let mut client = GrpcInferenceServiceClient::new(channel.clone());
    let meta = client.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "nereid-test");
    assert!(meta.extensions.iter().any(|e| e == "statistics"));
    assert!(client.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    let health = HealthClient::new(channel).check(HealthCheckRequest::default()).await.unwrap().into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    let err = client.model_infer(bad_request("a")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "Request for unknown model: 'missing' is not found");
    let err =
        client.model_ready(ModelReadyRequest { name: "m".into(), version: "x".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let status = client.system_shared_memory_status(SystemSharedMemoryStatusRequest::default()).await.unwrap();
    assert!(status.into_inner().regions.is_empty());
    // Client shared memory is off unless --allow-client-shm=true.
    let register = SystemSharedMemoryRegisterRequest::default();
    let err = client.system_shared_memory_register(register).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let index = client.repository_index(RepositoryIndexRequest::default()).await.unwrap().into_inner();
    assert!(index.models.is_empty());
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Deflate] {
        let mut compressed = client.clone().send_compressed(encoding);
        assert!(compressed.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    }
}

#[tokio::test]
async fn stream_answers_each_request_in_order_and_ends_with_the_client() {
    let (channel, _stop) = start().await;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let requests = tokio_stream::iter(["r1", "r2", "r3"].map(bad_request));
    let mut responses = client.model_stream_infer(requests).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Some(r) = responses.message().await.unwrap() {
        assert_eq!(r.error_message, "Request for unknown model: 'missing' is not found");
        let infer = r.infer_response.unwrap();
        assert_eq!((infer.model_name.as_str(), infer.model_version.as_str()), ("missing", "1"));
        ids.push(infer.id);
    }
    assert_eq!(ids, ["r1", "r2", "r3"]);
}
