//! The server: the one API the frontends call. It owns the model repository manager and
//! answers Triton's server, model, repository, statistics and logging requests.

use std::sync::{Arc, OnceLock, Weak};

use nereid_proto::inference::ModelConfig;

use crate::decoupled::ResponseStream;
use crate::error::{Error, Result};
use crate::infer_request::InferRequest;
use crate::infer_response::InferResponse;
use crate::logging::LogSettings;
use crate::model::{Model, Pending};
use crate::model_repository_manager::{
    ControlMode, IndexEntry, LoadOverride, ModelRepositoryManager, ModelState,
};
use crate::shared_memory_manager::SharedMemoryManager;
use crate::stats::StatsSnapshot;
use crate::tensor::DataType;

/// Extensions that really work; perf_analyzer and clients read this list (see
/// [`InferenceServer::extensions`], which adds CUDA shared memory where CUDA loads).
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "model_repository",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "sequence",
    "statistics",
    "logging",
    "system_shared_memory",
];

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `--id`: the server name clients see.
    pub id: String,
    pub control_mode: ControlMode,
    pub strict_readiness: bool,
    /// `--allow-client-shm`: clients may register shared memory regions.
    pub allow_client_shm: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Clone, Debug)]
pub struct ModelStatistics {
    pub name: String,
    pub version: i64,
    pub stats: StatsSnapshot,
}

/// The running server, as a backend sees it: set once [`InferenceServer::into_shared`] has
/// run, empty before (while the startup models load) and after the server is gone.
#[derive(Clone, Default)]
pub struct ServerLink(Arc<OnceLock<Weak<InferenceServer>>>);

impl ServerLink {
    pub fn get(&self) -> Option<Arc<InferenceServer>> {
        self.0.get()?.upgrade()
    }
}

impl std::fmt::Debug for ServerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() { "ServerLink(linked)" } else { "ServerLink(unlinked)" })
    }
}

pub struct InferenceServer {
    options: ServerOptions,
    repository: Arc<ModelRepositoryManager>,
    logging: &'static LogSettings,
    shared_memory: SharedMemoryManager,
}

impl InferenceServer {
    pub fn new(options: ServerOptions, repository: Arc<ModelRepositoryManager>) -> Self {
        let shared_memory = SharedMemoryManager::new(options.allow_client_shm);
        InferenceServer { options, repository, logging: crate::logging::settings(), shared_memory }
    }

    pub fn extensions(&self) -> Vec<&'static str> {
        let cuda = self.shared_memory.cuda_available().then_some("cuda_shared_memory");
        EXTENSIONS.iter().copied().chain(cuda).collect()
    }

    pub fn shared_memory(&self) -> &SharedMemoryManager {
        &self.shared_memory
    }

    pub fn id(&self) -> &str {
        &self.options.id
    }

    pub fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    pub fn repository(&self) -> &ModelRepositoryManager {
        &self.repository
    }

    pub fn is_live(&self) -> bool {
        true
    }

    /// Ready once started; with strict readiness, only while every model asked for is ready.
    pub fn is_ready(&self) -> bool {
        !self.options.strict_readiness || self.repository.all_ready()
    }

    pub fn model(&self, name: &str, version: Option<i64>) -> Result<Arc<Model>> {
        self.repository.get_model(name, version)
    }

    pub fn model_ready(&self, name: &str, version: Option<i64>) -> bool {
        self.repository.get_model(name, version).is_ok_and(|m| m.is_ready())
    }

    pub fn model_config(&self, name: &str, version: Option<i64>) -> Result<ModelConfig> {
        Ok(self.model(name, version)?.config.clone())
    }

    pub fn model_metadata(&self, name: &str, version: Option<i64>) -> Result<ModelMetadata> {
        let model = self.model(name, version)?;
        let config = &model.config;
        let batch_dim = config.max_batch_size > 0;
        let tensor = |name: &str, data_type: i32, dims: &[i64]| TensorMetadata {
            name: name.to_string(),
            datatype: DataType::from_config(data_type).map(|d| d.as_str()).unwrap_or("INVALID").to_string(),
            shape: batch_dim.then_some(-1).into_iter().chain(dims.iter().copied()).collect(),
        };
        let versions = self
            .repository
            .versions(name)
            .into_iter()
            .filter(|(_, s)| *s == ModelState::Ready)
            .map(|(v, _)| v.to_string())
            .collect();
        Ok(ModelMetadata {
            name: name.to_string(),
            versions,
            platform: config.platform.clone(),
            inputs: config.input.iter().map(|i| tensor(&i.name, i.data_type, &i.dims)).collect(),
            outputs: config.output.iter().map(|o| tensor(&o.name, o.data_type, &o.dims)).collect(),
        })
    }

    /// Queues a request now (see [`Model::submit`]); await the result for its response.
    pub fn submit(&self, request: InferRequest) -> Result<Pending> {
        self.model(&request.model_name, request.model_version)?.submit(request)
    }

    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        self.submit(request)?.await
    }

    /// Queues a request for any model; its responses arrive through the stream (see
    /// [`Model::submit_stream`]).
    pub fn submit_stream(&self, request: InferRequest) -> Result<ResponseStream> {
        self.model(&request.model_name, request.model_version)?.submit_stream(request)
    }

    /// Shares the server and links it to the backends that call back into it.
    pub fn into_shared(self) -> Arc<InferenceServer> {
        let server = Arc::new(self);
        let _ = server.repository.server_link().0.set(Arc::downgrade(&server));
        server
    }

    /// Statistics of one model (all its ready versions, or one), or of every model.
    pub fn statistics(&self, name: Option<&str>, version: Option<i64>) -> Result<Vec<ModelStatistics>> {
        let mut models = self.repository.ready_models();
        if let Some(n) = name {
            models.retain(|m| m.name == n);
            if models.is_empty() {
                return Err(Error::invalid_arg(format!("requested model '{n}' is not available")));
            }
            if let Some(v) = version {
                models.retain(|m| m.version == v);
                if models.is_empty() {
                    return Err(Error::invalid_arg(format!(
                        "requested model version is not available for model '{n}'"
                    )));
                }
            }
        }
        Ok(models
            .into_iter()
            .map(|m| ModelStatistics { name: m.name.clone(), version: m.version, stats: m.stats.snapshot() })
            .collect())
    }

    pub fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        self.repository.index(ready_only)
    }

    /// Explicit-mode load; blocks while the model loads (call it off the async runtime).
    pub fn load_model(&self, name: &str, overrides: Option<LoadOverride>) -> Result<()> {
        self.check_explicit()?;
        self.repository.load(name, overrides)
    }

    pub fn unload_model(&self, name: &str) -> Result<()> {
        self.check_explicit()?;
        self.repository.unload(name)
    }

    fn check_explicit(&self) -> Result<()> {
        if self.options.control_mode == ControlMode::Explicit {
            Ok(())
        } else {
            Err(Error::unavailable("explicit model load / unload is not allowed if polling is enabled"))
        }
    }

    pub fn log_settings(&self) -> &'static LogSettings {
        self.logging
    }
}
