//! The `onnxruntime` backend: runs ONNX models on ONNX Runtime's CPU execution provider.
//!
//! ONNX Runtime is loaded when the first ONNX model loads (see `library`), so the server builds
//! and starts without it, and a missing library is a model load error that says how to fix it.

mod batch;
mod config;
mod datatype;
mod library;
mod ort_tensor;
#[cfg(test)]
mod tests;

/// The process's ONNX Runtime, loaded as the backend loads it (also for in-process baselines).
pub use library::environment;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use nereid_core::backend::{
    Backend, BackendInstance, BackendModel, ExecTimer, InstanceKind, InstanceSpec, ModelLocation,
};
use nereid_core::infer_request::InferRequest;
use nereid_core::tensor::Tensor;
use nereid_core::{Error, Result};
use nereid_proto::inference::ModelConfig;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Outlet, ValueType};

use crate::config::{IoSpec, OnnxIo};

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

    fn auto_complete_config(&self, model: &ModelLocation, config: &mut ModelConfig) -> Result<()> {
        if !config::needs_auto_complete(config) {
            return Ok(());
        }
        let default_max_batch_size = default_max_batch_size(&model.backend_config)?;
        let source = ModelSource::new(model, config)?;
        let (inputs, outputs) = source.signature(&source.open()?);
        config::auto_complete(config, &inputs, &outputs, default_max_batch_size).map_err(Error::invalid_arg)
    }

    fn load_model(&self, model: &ModelLocation, config: &ModelConfig) -> Result<Arc<dyn BackendModel>> {
        let source = ModelSource::new(model, config)?;
        let session = source.open()?;
        let (inputs, outputs) = source.signature(&session);
        let state = ModelState {
            inputs: config::input_specs(config, &inputs).map_err(Error::invalid_arg)?,
            outputs: config::output_specs(config, &outputs).map_err(Error::invalid_arg)?,
            batching: config.max_batch_size > 0,
            source,
            spare: Mutex::new(Some(session)),
        };
        Ok(Arc::new(OnnxModel(Arc::new(state))))
    }
}

fn default_max_batch_size(backend_config: &BTreeMap<String, String>) -> Result<i32> {
    match backend_config.get("default-max-batch-size") {
        None => Ok(DEFAULT_MAX_BATCH_SIZE),
        Some(value) => value.trim().parse().map_err(|_| {
            Error::invalid_arg(format!("invalid value '{value}' for backend config default-max-batch-size"))
        }),
    }
}

/// Where a model's sessions come from: its file and session options.
struct ModelSource {
    name: String,
    path: PathBuf,
    intra_op_threads: Option<usize>,
    env: Environment,
}

impl ModelSource {
    fn new(model: &ModelLocation, config: &ModelConfig) -> Result<ModelSource> {
        let name = model.name.clone();
        let intra_op_threads = match config.parameters.get("intra_op_thread_count") {
            None => None,
            Some(p) => match p.string_value.trim().parse::<usize>() {
                Ok(0) => None, // 0 lets ONNX Runtime choose, as in Triton
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(Error::invalid_arg(format!(
                        "unable to load model '{name}', invalid intra_op_thread_count '{}'",
                        p.string_value
                    )))
                }
            },
        };
        let mut path = match config.default_model_filename.as_str() {
            "" => model.version_dir.join("model.onnx"),
            _ => model.model_file(config),
        };
        // As in Triton, the model may be a folder holding model.onnx (e.g. with external weights).
        if path.is_dir() {
            path.push("model.onnx");
        }
        if !path.is_file() {
            return Err(Error::not_found(format!(
                "unable to load model '{name}', '{}' not found",
                path.display()
            )));
        }
        let env = library::environment()
            .map_err(|e| Error::unavailable(format!("unable to load model '{name}': {e}")))?;
        Ok(ModelSource { name, path, intra_op_threads, env })
    }

    fn open(&self) -> Result<Session> {
        let fail = |e: String| Error::internal(format!("unable to load model '{}': {e}", self.name));
        let mut builder = Session::builder(&self.env)
            .map_err(|e| fail(e.to_string()))?
            .with_execution_providers([ort::ep::CPU::default().build()])
            .map_err(|e| fail(e.to_string()))?;
        if let Some(threads) = self.intra_op_threads {
            builder = builder.with_intra_threads(threads).map_err(|e| fail(e.to_string()))?;
        }
        builder.commit_from_file(&self.path).map_err(|e| fail(e.to_string()))
    }

    /// The model's inputs and outputs.
    fn signature(&self, session: &Session) -> (Vec<OnnxIo>, Vec<OnnxIo>) {
        let list = |outlets: &[Outlet]| -> Vec<OnnxIo> {
            outlets
                .iter()
                .map(|outlet| {
                    let (datatype, dims) = match outlet.dtype() {
                        ValueType::Tensor { ty, shape, .. } => {
                            (datatype::from_onnx(*ty).ok_or_else(|| format!("tensor({ty})")), shape.to_vec())
                        }
                        other => (Err(other.to_string()), Vec::new()),
                    };
                    OnnxIo { name: outlet.name().to_string(), datatype, dims }
                })
                .collect()
        };
        (list(session.inputs()), list(session.outputs()))
    }
}

struct ModelState {
    source: ModelSource,
    batching: bool,
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
    /// The session opened to check the config at load, kept for the first instance.
    spare: Mutex<Option<Session>>,
}

struct OnnxModel(Arc<ModelState>);

impl BackendModel for OnnxModel {
    fn create_instance(&self, instance: &InstanceSpec) -> Result<Box<dyn BackendInstance>> {
        if instance.kind == InstanceKind::Gpu {
            log::warn!(
                "model '{}' instance '{}': the onnxruntime backend has only the CPU execution provider so far; running on CPU",
                self.0.source.name,
                instance.name
            );
        }
        let spare = self.0.spare.lock().unwrap_or_else(PoisonError::into_inner).take();
        let session = match spare {
            Some(session) => session,
            None => self.0.source.open()?,
        };
        Ok(Box::new(OnnxInstance { model: Arc::clone(&self.0), session }))
    }
}

struct OnnxInstance {
    model: Arc<ModelState>,
    session: Session,
}

/// One request's tensor for one model input.
struct Feed<'r> {
    /// Index into `ModelState::inputs`.
    input: usize,
    tensor: &'r Tensor,
    /// The shape the model sees, batch dimension included when batching.
    shape: Vec<i64>,
}

impl ModelState {
    /// A request's inputs as the model takes them.
    fn feeds<'r>(&self, request: &'r InferRequest) -> Result<Vec<Feed<'r>>> {
        let mut feeds = Vec::with_capacity(self.inputs.len());
        for (input, spec) in self.inputs.iter().enumerate() {
            let Some(tensor) = request.input(&spec.name) else {
                if spec.optional {
                    continue;
                }
                return Err(Error::invalid_arg(format!("missing input '{}'", spec.name)));
            };
            let shape = match (self.batching, tensor.shape.split_first()) {
                (true, Some((&batch, dims))) => {
                    spec.model_dims(dims).map(|dims| [vec![batch], dims].concat())
                }
                (true, None) => None,
                (false, _) => spec.model_dims(&tensor.shape),
            };
            let shape = shape.ok_or_else(|| {
                Error::invalid_arg(format!(
                    "input '{}' with shape {:?} does not fit the model",
                    spec.name, tensor.shape
                ))
            })?;
            feeds.push(Feed { input, tensor, shape });
        }
        Ok(feeds)
    }

    /// The shape clients see for an output of the model's `shape`.
    fn client_shape(&self, spec: &IoSpec, shape: &[i64]) -> Option<Vec<i64>> {
        match (self.batching, shape.split_first()) {
            (true, Some((&batch, dims))) => spec.client_dims(dims).map(|dims| [vec![batch], dims].concat()),
            (true, None) => None,
            (false, _) => spec.client_dims(shape),
        }
    }
}

/// Requests can run as one batch when they feed the same inputs with the same non-batch shapes.
fn joinable(fed: &[(usize, Vec<Feed>)]) -> bool {
    let Some((_, first)) = fed.first() else { return true };
    fed.iter().all(|(_, feeds)| {
        feeds.len() == first.len()
            && feeds.iter().zip(first).all(|(a, b)| a.input == b.input && a.shape[1..] == b.shape[1..])
    })
}

impl BackendInstance for OnnxInstance {
    fn execute(&mut self, requests: &[InferRequest], timer: &mut ExecTimer) -> Vec<Result<Vec<Tensor>>> {
        let batching = self.model.batching;
        let mut results = vec![Err(Error::internal("request was not executed")); requests.len()];
        // A request whose inputs cannot be fed fails alone.
        let mut fed = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            match self.model.feeds(request) {
                Ok(feeds) => fed.push((i, feeds)),
                Err(e) => results[i] = Err(e),
            }
        }
        let groups: Vec<Vec<(usize, Vec<Feed>)>> = if batching && fed.len() > 1 && joinable(&fed) {
            vec![fed]
        } else {
            fed.into_iter().map(|f| vec![f]).collect()
        };
        for group in groups {
            let sizes: Vec<usize> = group.iter().map(|(i, _)| requests[*i].batch_size(batching)).collect();
            match self.run(&group, &sizes, timer) {
                Ok(outputs) => {
                    for ((i, _), out) in group.iter().zip(outputs) {
                        results[*i] = Ok(out);
                    }
                }
                Err(e) => {
                    for (i, _) in &group {
                        results[*i] = Err(e.clone());
                    }
                }
            }
        }
        results
    }
}

impl OnnxInstance {
    /// Runs a group of requests (joined along the batch dimension) once; returns each request's
    /// outputs in config order.
    fn run(
        &mut self,
        group: &[(usize, Vec<Feed>)],
        sizes: &[usize],
        timer: &mut ExecTimer,
    ) -> Result<Vec<Vec<Tensor>>> {
        let model = &self.model;
        let mut inputs = Vec::with_capacity(group[0].1.len());
        for (k, feed) in group[0].1.iter().enumerate() {
            let spec = &model.inputs[feed.input];
            let tensors: Vec<&Tensor> = group.iter().map(|(_, feeds)| feeds[k].tensor).collect();
            let joined = batch::join(&tensors);
            let mut shape = feed.shape.clone();
            if model.batching {
                shape[0] = joined.shape[0];
            }
            let value = ort_tensor::to_ort(spec.datatype, &shape, &joined.data)
                .map_err(|e| Error::invalid_arg(format!("input '{}': {e}", spec.name)))?;
            inputs.push((spec.name.as_str(), value));
        }
        timer.input_done();
        let mut outputs =
            self.session.run(inputs).map_err(|e| Error::internal(format!("onnx runtime error: {e}")))?;
        timer.infer_done();

        let mut per_request = vec![Vec::with_capacity(model.outputs.len()); group.len()];
        for spec in &model.outputs {
            let value = outputs
                .remove(&spec.name)
                .ok_or_else(|| Error::internal(format!("model produced no output '{}'", spec.name)))?;
            let mut tensor = ort_tensor::from_ort(&spec.name, value).map_err(Error::internal)?;
            tensor.shape = model.client_shape(spec, &tensor.shape).ok_or_else(|| {
                Error::internal(format!(
                    "output '{}' has shape {:?}, which does not fit the config",
                    spec.name, tensor.shape
                ))
            })?;
            let parts = if model.batching {
                batch::split(tensor, sizes).map_err(Error::internal)?
            } else {
                vec![tensor]
            };
            for (out, part) in per_request.iter_mut().zip(parts) {
                out.push(part);
            }
        }
        Ok(per_request)
    }
}
