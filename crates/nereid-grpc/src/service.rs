//! `inference.GRPCInferenceService`: each RPC translates its message into one core call.

use std::sync::Arc;

use nereid_core::infer_request::parse_version;
use nereid_core::server::InferenceServer;
use nereid_core::shared_memory_manager::MemoryKind;
use nereid_core::Error;
use nereid_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use nereid_proto::inference::model_metadata_response::TensorMetadata;
use nereid_proto::inference::*;
use tonic::{Request, Response, Status, Streaming};

use crate::status::{not_supported_yet, reply, to_status};
use crate::{infer, logging, repository, shared_memory, stats, stream};

pub struct InferenceService {
    pub server: Arc<InferenceServer>,
}

type Answer<T> = Result<Response<T>, Status>;

/// Empty names and versions mean "all" / "let the policy choose".
fn optional(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

/// Load and unload block while backends work, so they run off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> nereid_core::Result<T> + Send + 'static,
) -> Answer<T> {
    let result = tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("repository task failed: {e}"))));
    reply(result)
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Answer<ServerLiveResponse> {
        Ok(Response::new(ServerLiveResponse { live: self.server.is_live() }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Answer<ServerReadyResponse> {
        Ok(Response::new(ServerReadyResponse { ready: self.server.is_ready() }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Answer<ModelReadyResponse> {
        let r = request.into_inner();
        reply(
            parse_version(&r.version)
                .map(|v| ModelReadyResponse { ready: self.server.model_ready(&r.name, v) }),
        )
    }

    async fn server_metadata(&self, _: Request<ServerMetadataRequest>) -> Answer<ServerMetadataResponse> {
        Ok(Response::new(ServerMetadataResponse {
            name: self.server.id().to_string(),
            version: self.server.version().to_string(),
            extensions: self.server.extensions().into_iter().map(String::from).collect(),
        }))
    }

    async fn model_metadata(&self, request: Request<ModelMetadataRequest>) -> Answer<ModelMetadataResponse> {
        let r = request.into_inner();
        let tensor = |t: nereid_core::server::TensorMetadata| TensorMetadata {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        };
        reply(parse_version(&r.version).and_then(|v| self.server.model_metadata(&r.name, v)).map(|m| {
            ModelMetadataResponse {
                name: m.name,
                versions: m.versions,
                platform: m.platform,
                inputs: m.inputs.into_iter().map(tensor).collect(),
                outputs: m.outputs.into_iter().map(tensor).collect(),
            }
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Answer<ModelInferResponse> {
        reply(infer::run(&self.server, request.into_inner()).await)
    }

    type ModelStreamInferStream = stream::ResponseStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Answer<Self::ModelStreamInferStream> {
        Ok(Response::new(stream::start(self.server.clone(), request.into_inner())))
    }

    async fn model_config(&self, request: Request<ModelConfigRequest>) -> Answer<ModelConfigResponse> {
        let r = request.into_inner();
        reply(
            parse_version(&r.version)
                .and_then(|v| self.server.model_config(&r.name, v))
                .map(|config| ModelConfigResponse { config: Some(config) }),
        )
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Answer<ModelStatisticsResponse> {
        let r = request.into_inner();
        reply(parse_version(&r.version).and_then(|v| self.server.statistics(optional(&r.name), v)).map(
            |all| ModelStatisticsResponse { model_stats: all.into_iter().map(stats::to_wire).collect() },
        ))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Answer<RepositoryIndexResponse> {
        let r = request.into_inner();
        reply(repository::check_repository_name(&r.repository_name).map(|()| RepositoryIndexResponse {
            models: self.server.repository_index(r.ready).into_iter().map(repository::index_row).collect(),
        }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Answer<RepositoryModelLoadResponse> {
        let r = request.into_inner();
        repository::check_repository_name(&r.repository_name).map_err(to_status)?;
        let overrides = repository::load_override(r.parameters).map_err(to_status)?;
        let server = self.server.clone();
        blocking(move || server.load_model(&r.model_name, overrides)).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Answer<RepositoryModelUnloadResponse> {
        let r = request.into_inner();
        repository::check_repository_name(&r.repository_name).map_err(to_status)?;
        repository::check_unload_params(&r.parameters).map_err(to_status)?;
        let server = self.server.clone();
        blocking(move || server.unload_model(&r.model_name)).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<SystemSharedMemoryStatusRequest>,
    ) -> Answer<SystemSharedMemoryStatusResponse> {
        reply(shared_memory::system_status(self.server.shared_memory(), request.into_inner()))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Answer<SystemSharedMemoryRegisterResponse> {
        let r = request.into_inner();
        let registered = self.server.shared_memory().register_system(&r.name, &r.key, r.offset, r.byte_size);
        reply(registered.map(|()| SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Answer<SystemSharedMemoryUnregisterResponse> {
        let name = request.into_inner().name;
        let unregistered = self.server.shared_memory().unregister(MemoryKind::System, &name);
        reply(unregistered.map(|()| SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        request: Request<CudaSharedMemoryStatusRequest>,
    ) -> Answer<CudaSharedMemoryStatusResponse> {
        reply(shared_memory::cuda_status(self.server.shared_memory(), request.into_inner()))
    }

    async fn cuda_shared_memory_register(
        &self,
        request: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Answer<CudaSharedMemoryRegisterResponse> {
        let r = request.into_inner();
        let shm = self.server.shared_memory();
        let registered = shm.register_cuda(&r.name, &r.raw_handle, r.device_id, r.byte_size);
        reply(registered.map(|()| CudaSharedMemoryRegisterResponse {}))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        request: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Answer<CudaSharedMemoryUnregisterResponse> {
        let name = request.into_inner().name;
        let unregistered = self.server.shared_memory().unregister(MemoryKind::Cuda, &name);
        reply(unregistered.map(|()| CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(&self, _: Request<TraceSettingRequest>) -> Answer<TraceSettingResponse> {
        Err(not_supported_yet("trace setting"))
    }

    async fn log_settings(&self, request: Request<LogSettingsRequest>) -> Answer<LogSettingsResponse> {
        let settings = self.server.log_settings();
        logging::update(settings, &request.into_inner().settings).map_err(to_status)?;
        Ok(Response::new(LogSettingsResponse { settings: logging::current(settings) }))
    }
}
