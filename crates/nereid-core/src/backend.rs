//! The backend interface: everything the core needs from a backend, nothing more.
//!
//! A backend loads a model version from its folder and config (and may complete the config),
//! creates instances on a device, and an instance executes a batch of requests, returning one
//! result per request. Batching, sequences, ensembles, queues, statistics and shared memory
//! belong to the core.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nereid_proto::inference::ModelConfig;

use crate::error::Result;
use crate::infer_request::InferRequest;
use crate::server::ServerLink;
use crate::tensor::Tensor;

/// Where a model version lives and the settings its backend was given.
#[derive(Clone, Debug)]
pub struct ModelLocation {
    pub name: String,
    pub version: i64,
    /// The model's folder (`<repo>/<model>`).
    pub model_dir: PathBuf,
    /// The version's folder (`<repo>/<model>/<version>`).
    pub version_dir: PathBuf,
    /// `--backend-config=<backend>,<key>=<value>` settings for this backend.
    pub backend_config: BTreeMap<String, String>,
}

impl ModelLocation {
    /// The model file: `default_model_filename` inside the version folder.
    pub fn model_file(&self, config: &ModelConfig) -> PathBuf {
        self.version_dir.join(&config.default_model_filename)
    }
}

/// Triton's instance group kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    Auto,
    Gpu,
    Cpu,
    Model,
}

impl InstanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceKind::Auto => "KIND_AUTO",
            InstanceKind::Gpu => "KIND_GPU",
            InstanceKind::Cpu => "KIND_CPU",
            InstanceKind::Model => "KIND_MODEL",
        }
    }
}

/// One instance to create, expanded from the config's `instance_group`.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// Triton's instance name, `<group name>_<index>`.
    pub name: String,
    pub kind: InstanceKind,
    pub device_id: i32,
}

/// Timestamps an instance takes while executing, for Triton's compute statistics.
#[derive(Clone, Copy, Debug)]
pub struct ExecTimer {
    pub start: Instant,
    pub input_end: Option<Instant>,
    pub infer_end: Option<Instant>,
}

impl ExecTimer {
    pub fn start() -> Self {
        ExecTimer { start: Instant::now(), input_end: None, infer_end: None }
    }
    /// Inputs are in place; inference starts.
    pub fn input_done(&mut self) {
        self.input_end = Some(Instant::now());
    }
    /// Inference finished; outputs are being produced.
    pub fn infer_done(&mut self) {
        self.infer_end = Some(Instant::now());
    }
}

pub trait Backend: Send + Sync {
    /// The name configs use in `backend:` (e.g. "onnxruntime").
    fn name(&self) -> &'static str;

    /// Given once, before any model loads: the server, for backends that call back into it
    /// (Python's BLS and model loading API). It resolves once the server is running.
    fn set_server(&self, _server: ServerLink) {}

    /// Whether instances can run on a GPU now; when not, `KIND_AUTO` groups go on the CPU
    /// (e.g. the loaded runtime lacks GPU support).
    fn can_use_gpu(&self) -> bool {
        true
    }

    /// Fills in what the config leaves out, from the model itself (Triton's auto-complete).
    fn auto_complete_config(&self, _model: &ModelLocation, _config: &mut ModelConfig) -> Result<()> {
        Ok(())
    }

    /// Loads one version of a model with its final config.
    fn load_model(&self, model: &ModelLocation, config: &ModelConfig) -> Result<Arc<dyn BackendModel>>;
}

pub trait BackendModel: Send + Sync {
    fn create_instance(&self, instance: &InstanceSpec) -> Result<Box<dyn BackendInstance>>;

    /// Whether the model can serve now (Triton's `TRITONBACKEND_ModelInstanceReady`).
    fn is_ready(&self) -> bool {
        true
    }

    /// Called once at unload, after the last execution: release what the instances hold.
    fn unload(&self) {}
}

pub trait BackendInstance: Send {
    /// Executes a batch. Returns one result per request, in order: the request's output
    /// tensors, or the error for that request alone. Requests in a batch have been validated
    /// against the config (names, datatypes, shapes) by the core.
    ///
    /// A decoupled model's requests carry a [`crate::decoupled::ResponseSender`]: the backend
    /// sends their responses through it (now or later) and returns no outputs; returning an
    /// error instead means it has dropped the sender, and the error ends the request.
    fn execute(&mut self, requests: &[InferRequest], timer: &mut ExecTimer) -> Vec<Result<Vec<Tensor>>>;
}
