//! `grpc.health.v1.Health`: SERVING while the server is ready, as Triton answers it.

use std::sync::Arc;

use nereid_core::server::InferenceServer;
use nereid_proto::health::v1::health_check_response::ServingStatus;
use nereid_proto::health::v1::health_server::Health;
use nereid_proto::health::v1::{HealthCheckRequest, HealthCheckResponse};
use tonic::{Request, Response, Status};

pub struct HealthService {
    pub server: Arc<InferenceServer>,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let status = if self.server.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing };
        Ok(Response::new(HealthCheckResponse { status: status.into() }))
    }
}
