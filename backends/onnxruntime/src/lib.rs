//! The `onnxruntime` backend: runs ONNX models on ONNX Runtime, on the CPU or through the
//! execution providers the loaded library has (CUDA and TensorRT on Linux, CoreML on macOS).
//!
//! ONNX Runtime is loaded when the first ONNX model loads (see `library`), so the server builds
//! and starts without it, and a missing library is a model load error that says how to fix it.
//! As in Triton, every instance has its own session, created and checked against the config
//! when the instance is created.

mod batch;
mod config;
mod datatype;
mod instance;
mod library;
mod ort_tensor;
mod parse;
mod providers;
mod session_options;
#[cfg(test)]
mod tests;

/// The process's ONNX Runtime, loaded as the backend loads it (also for in-process baselines).
pub use library::environment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nereid_core::backend::{Backend, BackendInstance, BackendModel, InstanceSpec, ModelLocation};
use nereid_core::{Error, Result};
use nereid_proto::inference::ModelConfig;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Outlet, ValueType};

use crate::config::OnnxIo;
use crate::instance::OnnxInstance;
use crate::library::Platform;
use crate::providers::{Plan, Provider};
use crate::session_options::SessionOptions;

/// Triton's default for `--backend-config=default-max-batch-size`.
const DEFAULT_MAX_BATCH_SIZE: i32 = 4;

#[derive(Clone, Copy, Debug, Default)]
pub struct OnnxRuntimeBackend;

impl OnnxRuntimeBackend {
    pub fn new() -> Self {
        OnnxRuntimeBackend
    }
}

pub fn backend() -> Arc<dyn Backend> {
    Arc::new(OnnxRuntimeBackend)
}

impl Backend for OnnxRuntimeBackend {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    /// `KIND_AUTO` goes on the GPU only when the loaded library has this platform's GPU provider.
    fn can_use_gpu(&self) -> bool {
        let gpu = Provider::for_gpu(Platform::current()).ort_name();
        environment().is_ok() && providers::available().is_ok_and(|list| list.iter().any(|p| p == gpu))
    }

    fn auto_complete_config(&self, model: &ModelLocation, config: &mut ModelConfig) -> Result<()> {
        if !config::needs_auto_complete(config) {
            log::info!(
                "skipping model configuration auto-complete for '{}': inputs and outputs already specified",
                model.name
            );
            return Ok(());
        }
        let default_max_batch_size = default_max_batch_size(&model.backend_config)?;
        let path = model_path(model, config)?;
        // Only the signature is read, so skip the optimizations a serving session gets.
        let options = SessionOptions { optimization: GraphOptimizationLevel::Disable, ..Default::default() };
        let session = open(&model.name, &path, &options, &Plan::default())?.0;
        let signature = Signature::of(&session);
        config::auto_complete(config, &signature.inputs, &signature.outputs, default_max_batch_size)
            .map_err(Error::invalid_arg)
    }

    fn load_model(&self, model: &ModelLocation, config: &ModelConfig) -> Result<Arc<dyn BackendModel>> {
        let options = SessionOptions::from_config(config).map_err(Error::invalid_arg)?;
        let path = model_path(model, config)?;
        Ok(Arc::new(OnnxModel { config: config.clone(), path, options }))
    }
}

fn default_max_batch_size(backend_config: &BTreeMap<String, String>) -> Result<i32> {
    backend_config
        .get("default-max-batch-size")
        .map_or(Ok(DEFAULT_MAX_BATCH_SIZE), |value| parse::parse_int(value).map_err(Error::invalid_arg))
}

/// Triton's rule: `default_model_filename` (model.onnx unless the config says otherwise) in the
/// version folder; a folder of that name holds `model.onnx` with its external data files.
fn model_path(model: &ModelLocation, config: &ModelConfig) -> Result<PathBuf> {
    let mut path = model.model_file(config);
    if path.is_dir() {
        path.push("model.onnx");
    }
    if !path.exists() {
        return Err(Error::unavailable(format!(
            "unable to find '{}' for model instance '{}'",
            path.display(),
            model.name
        )));
    }
    Ok(path)
}

/// Opens a session with `options` and the execution providers of `plan`; returns it with the
/// providers that took.
fn open(model: &str, path: &Path, options: &SessionOptions, plan: &Plan) -> Result<(Session, Vec<Provider>)> {
    let env =
        environment().map_err(|e| Error::unavailable(format!("unable to load model '{model}': {e}")))?;
    let fail = |e: String| Error::internal(format!("unable to load model '{model}': {e}"));
    let mut builder = options.builder(&env).map_err(fail)?;
    let registered = providers::register(plan, &mut builder).map_err(fail)?;
    let session = builder.commit_from_file(path).map_err(|e| fail(e.to_string()))?;
    Ok((session, registered))
}

/// A session's inputs, overridable initializers (inputs with a default) and outputs.
struct Signature {
    inputs: Vec<OnnxIo>,
    initializers: Vec<OnnxIo>,
    outputs: Vec<OnnxIo>,
}

impl Signature {
    fn of(session: &Session) -> Signature {
        let io = |name: &str, dtype: &ValueType| {
            let (datatype, dims) = match dtype {
                ValueType::Tensor { ty, shape, .. } => {
                    (datatype::from_onnx(*ty).ok_or_else(|| dtype.to_string()), shape.to_vec())
                }
                other => (Err(other.to_string()), Vec::new()),
            };
            OnnxIo { name: name.to_string(), datatype, dims }
        };
        let outlets = |list: &[Outlet]| list.iter().map(|o| io(o.name(), o.dtype())).collect();
        Signature {
            inputs: outlets(session.inputs()),
            initializers: session
                .overridable_initializers()
                .iter()
                .map(|i| io(i.name(), i.dtype()))
                .collect(),
            outputs: outlets(session.outputs()),
        }
    }
}

/// A loaded model version: what each instance's session is made from.
struct OnnxModel {
    config: ModelConfig,
    path: PathBuf,
    options: SessionOptions,
}

impl BackendModel for OnnxModel {
    fn create_instance(&self, instance: &InstanceSpec) -> Result<Box<dyn BackendInstance>> {
        let config = &self.config;
        let plan = providers::plan(config, instance.kind, instance.device_id, Platform::current())
            .map_err(Error::invalid_arg)?;
        let (session, registered) = open(&config.name, &self.path, &self.options, &plan)?;
        let signature = Signature::of(&session);
        let inputs = config::input_specs(config, &signature.inputs, &signature.initializers)
            .map_err(Error::invalid_arg)?;
        let outputs = config::output_specs(config, &signature.outputs).map_err(Error::invalid_arg)?;
        let names: Vec<&str> =
            registered.iter().map(|p| p.ort_name()).chain(["CPUExecutionProvider"]).collect();
        log::info!(
            "model '{}' instance '{}' ({} device {}): ONNX Runtime session with {}",
            config.name,
            instance.name,
            instance.kind.as_str(),
            instance.device_id,
            names.join(", ")
        );
        let instance = OnnxInstance::new(session, config.max_batch_size > 0, inputs, outputs, &self.options)
            .map_err(|e| Error::internal(format!("unable to load model '{}': {e}", config.name)))?;
        Ok(Box::new(instance))
    }
}
