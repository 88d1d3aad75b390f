//! The ensemble scheduler: an ensemble's steps form a data-flow graph over named tensors. A
//! step goes to its composing model as soon as all of its input tensors exist, so independent
//! steps run in parallel, and the ensemble answers once its requested outputs exist. Composing
//! models are looked up per request, as Triton does, so reloading one needs no ensemble reload.
//!
//! At load, [`validate`] checks the steps against the composing models' configs with Triton's
//! messages (ensemble_utils.cc); the structure alone is checked with the config.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::{DataType as ConfigType, ModelConfig};

use crate::error::{Error, Result};
use crate::infer_request::{log_prefix, InferRequest, RequestedOutput};
use crate::infer_response::InferResponse;
use crate::model::{Model, Pending, ResponseBuilder};
use crate::scheduler::{unloaded, Scheduler};
use crate::stats::{ComputeSink, ModelStats};
use crate::tensor::Tensor;

/// How an ensemble finds a composing model: by name, and version (`None`: the latest ready).
pub(crate) type ModelLookup = Arc<dyn Fn(&str, Option<i64>) -> Result<Arc<Model>> + Send + Sync>;

struct Step {
    model: String,
    version: Option<i64>,
    /// (model input, ensemble tensor)
    inputs: Vec<(String, String)>,
    /// (model output, ensemble tensor)
    outputs: Vec<(String, String)>,
}

fn steps(config: &ModelConfig) -> Vec<Step> {
    let Some(SchedulingChoice::EnsembleScheduling(e)) = &config.scheduling_choice else { return Vec::new() };
    let sorted = |map: &HashMap<String, String>| {
        let mut pairs: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.sort();
        pairs
    };
    e.step
        .iter()
        .map(|s| Step {
            model: s.model_name.clone(),
            version: (s.model_version > 0).then_some(s.model_version),
            inputs: sorted(&s.input_map),
            outputs: sorted(&s.output_map),
        })
        .collect()
}

pub(crate) fn is_ensemble(config: &ModelConfig) -> bool {
    config.platform == "ensemble"
}

/// The models an ensemble's steps use, each once, in step order.
pub(crate) fn composing_models(config: &ModelConfig) -> Vec<(String, Option<i64>)> {
    let mut models: Vec<(String, Option<i64>)> = Vec::new();
    for step in steps(config) {
        if !models.contains(&(step.model.clone(), step.version)) {
            models.push((step.model, step.version));
        }
    }
    models
}

/// A tensor's type and shape as a model declares it (Triton's `TensorNode`).
struct Node {
    model: String,
    datatype: i32,
    dims: Vec<i64>,
    /// With the batch dimension when the model batches.
    full: Vec<i64>,
}

impl Node {
    fn new(model: &str, batching: bool, datatype: i32, dims: &[i64]) -> Node {
        let full = batching.then_some(-1).into_iter().chain(dims.iter().copied()).collect();
        Node { model: model.to_string(), datatype, dims: dims.to_vec(), full }
    }

    fn check(&self, other: &Node, prefix: &str) -> Result<()> {
        let type_name = |t: i32| ConfigType::try_from(t).map_or("TYPE_INVALID", |t| t.as_str_name());
        if self.datatype != other.datatype {
            return Err(Error::invalid_arg(format!(
                "{prefix}inconsistent data type: {} is inferred from model {} while {} is inferred from model {}",
                type_name(self.datatype),
                self.model,
                type_name(other.datatype),
                other.model
            )));
        }
        if !same_dims(&self.dims, &other.dims) && !same_dims(&self.full, &other.full) {
            return Err(Error::invalid_arg(format!(
                "{prefix}inconsistent shape: {} is inferred from model {} while {} is inferred from model {}",
                dims_text(&self.full),
                self.model,
                dims_text(&other.full),
                other.model
            )));
        }
        Ok(())
    }
}

/// Dimensions that agree, -1 agreeing with anything.
fn same_dims(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| x == y || x == -1 || y == -1)
}

fn dims_text(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

/// Triton's `ValidateEnsembleConfig`: the steps against the loaded composing models.
pub(crate) fn validate(config: &ModelConfig, lookup: &ModelLookup) -> Result<()> {
    let name = &config.name;
    let batching = config.max_batch_size > 0;
    let mut tensors: HashMap<String, Node> = HashMap::new();
    for io in config
        .input
        .iter()
        .map(|i| (&i.name, i.data_type, &i.dims, &i.reshape))
        .chain(config.output.iter().map(|o| (&o.name, o.data_type, &o.dims, &o.reshape)))
    {
        let dims = io.3.as_ref().map_or(io.2, |r| &r.shape);
        tensors.insert(io.0.clone(), Node::new(name, batching, io.1, dims));
    }
    for step in steps(config) {
        let model = lookup(&step.model, step.version).map_err(|_| match step.version {
            Some(v) => Error::invalid_arg(format!(
                "ensemble '{name}' depends on '{}' whose required version {v} is not loaded.",
                step.model
            )),
            None => Error::invalid_arg(format!(
                "ensemble '{name}' depends on '{}' which has no loaded version.",
                step.model
            )),
        })?;
        let c = &model.config;
        let m = &step.model;
        if c.max_batch_size != 0 && c.max_batch_size < config.max_batch_size {
            return Err(Error::invalid_arg(format!(
                "ensemble {name} allows maximum batch size {}, but it contains model {m} which only allows maximum batch size to be {}",
                config.max_batch_size, c.max_batch_size
            )));
        }
        let step_batching = c.max_batch_size > 0;
        for (input, tensor) in &step.inputs {
            if !c.input.iter().any(|i| &i.name == input) {
                return Err(Error::invalid_arg(format!(
                    "in ensemble {name}, ensemble tensor {tensor} is mapping to non-existing input {input} in model {m}"
                )));
            }
        }
        for input in &c.input {
            let Some((_, tensor)) = step.inputs.iter().find(|(i, _)| *i == input.name) else {
                if input.optional {
                    continue;
                }
                return Err(Error::invalid_arg(format!(
                    "in ensemble {name}, input {} in model {m} is not mapped to any ensemble tensors",
                    input.name
                )));
            };
            let node = Node::new(m, step_batching, input.data_type, &input.dims);
            match tensors.get(tensor) {
                Some(known) => {
                    known.check(&node, &format!("in ensemble {name}, ensemble tensor {tensor}: "))?
                }
                None => {
                    tensors.insert(tensor.clone(), node);
                }
            }
        }
        for (output, tensor) in &step.outputs {
            let Some(o) = c.output.iter().find(|o| &o.name == output) else {
                return Err(Error::invalid_arg(format!(
                    "in ensemble {name}, ensemble tensor {tensor} is mapped from non-existing output {output} in model {m}"
                )));
            };
            let node = Node::new(m, step_batching, o.data_type, &o.dims);
            match tensors.get(tensor) {
                Some(known) => {
                    known.check(&node, &format!("in ensemble {name}, ensemble tensor {tensor}: "))?
                }
                None => {
                    tensors.insert(tensor.clone(), node);
                }
            }
        }
    }
    Ok(())
}

/// Triton's `ReshapeTensorDims`: adds or drops the batch dimension where a tensor passes
/// between a batching and a non-batching model. `tensor_batch` is 0 for a tensor made without
/// a batch dimension.
fn reshape_dims(config_dims: &[i64], batching: bool, tensor_batch: usize, dims: &[i64]) -> Vec<i64> {
    if batching != (tensor_batch != 0) {
        if batching && same_dims(config_dims, dims) {
            return [&[1], dims].concat();
        }
        if !batching && tensor_batch == 1 && !same_dims(config_dims, dims) {
            return dims[1..].to_vec();
        }
    }
    dims.to_vec()
}

pub(crate) struct EnsembleScheduler(Arc<Ensemble>);

struct Ensemble {
    name: String,
    batching: bool,
    steps: Vec<Step>,
    /// The ensemble's outputs and their configured dims.
    outputs: Vec<(String, Vec<i64>)>,
    lookup: ModelLookup,
    responses: Arc<ResponseBuilder>,
    stats: Arc<ModelStats>,
    open: AtomicBool,
}

impl EnsembleScheduler {
    pub fn new(
        config: &ModelConfig,
        lookup: ModelLookup,
        responses: Arc<ResponseBuilder>,
        stats: Arc<ModelStats>,
    ) -> EnsembleScheduler {
        EnsembleScheduler(Arc::new(Ensemble {
            name: config.name.clone(),
            batching: config.max_batch_size > 0,
            steps: steps(config),
            outputs: config.output.iter().map(|o| (o.name.clone(), o.dims.clone())).collect(),
            lookup,
            responses,
            stats,
            open: AtomicBool::new(true),
        }))
    }
}

impl Scheduler for EnsembleScheduler {
    fn enqueue(&self, request: InferRequest) -> Result<Pending> {
        if !self.0.open.load(Ordering::Acquire) {
            return Err(unloaded());
        }
        let mut run = Run::new(self.0.clone(), request);
        // The first steps go now, so requests submitted in order reach them in order.
        run.launch();
        Ok(Pending::future(run.finish()))
    }

    /// Requests under way finish through the composing models.
    fn shutdown(&self) {
        self.0.open.store(false, Ordering::Release);
    }
}

type StepFuture = Pin<Box<dyn Future<Output = (usize, Result<InferResponse>)> + Send>>;

/// One request through the ensemble.
struct Run {
    ensemble: Arc<Ensemble>,
    /// The request, its inputs moved into `tensors`.
    request: InferRequest,
    batch_size: usize,
    /// Ensemble tensors that exist, with the batch size of the request that made them (0:
    /// made without a batch dimension).
    tensors: HashMap<String, (Tensor, usize)>,
    started: Vec<bool>,
    /// Each step's request batch size (0 when its model does not batch).
    step_batch: Vec<usize>,
    running: FuturesUnordered<StepFuture>,
    error: Option<Error>,
    compute: Arc<ComputeSink>,
}

impl Run {
    fn new(ensemble: Arc<Ensemble>, mut request: InferRequest) -> Run {
        let batch = if ensemble.batching { request.batch_size(true) } else { 0 };
        let tensors =
            std::mem::take(&mut request.inputs).into_iter().map(|t| (t.name.clone(), (t, batch))).collect();
        let steps = ensemble.steps.len();
        Run {
            ensemble,
            request,
            batch_size: batch.max(1),
            tensors,
            started: vec![false; steps],
            step_batch: vec![0; steps],
            running: FuturesUnordered::new(),
            error: None,
            compute: Arc::default(),
        }
    }

    /// Submits every step whose inputs all exist.
    fn launch(&mut self) {
        for index in 0..self.ensemble.steps.len() {
            if self.started[index] || self.error.is_some() {
                continue;
            }
            let step = &self.ensemble.steps[index];
            if !step.inputs.iter().all(|(_, t)| self.tensors.contains_key(t)) {
                continue;
            }
            self.started[index] = true;
            match self.submit(index) {
                Ok(pending) => self.running.push(Box::pin(pending.map(move |r| (index, r)))),
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn submit(&mut self, index: usize) -> Result<Pending> {
        let step = &self.ensemble.steps[index];
        let model = (self.ensemble.lookup)(&step.model, step.version)?;
        let batching = model.config.max_batch_size > 0;
        let r = &self.request;
        let mut request = InferRequest::new(step.model.clone(), step.version);
        request.id = r.id.clone();
        request.correlation_id = r.correlation_id.clone();
        (request.sequence_start, request.sequence_end) = (r.sequence_start, r.sequence_end);
        (request.priority, request.timeout_us) = (r.priority, r.timeout_us);
        request.parameters = r.parameters.clone();
        request.compute_sink = Some(self.compute.clone());
        for (input, tensor) in &step.inputs {
            let (t, batch) = &self.tensors[tensor];
            let dims = model.config.input.iter().find(|i| &i.name == input).map_or(&[][..], |i| &i.dims);
            let shape = reshape_dims(dims, batching, *batch, &t.shape);
            request.inputs.push(Tensor { name: input.clone(), shape, ..t.clone() });
        }
        request.requested_outputs =
            step.outputs.iter().map(|(o, _)| RequestedOutput { name: o.clone(), class_count: 0 }).collect();
        self.step_batch[index] = if batching { request.batch_size(true) } else { 0 };
        model.submit(request)
    }

    async fn finish(mut self) -> Result<InferResponse> {
        let result = self
            .drive()
            .await
            .map_err(|e| Error::new(e.code, format!("in ensemble '{}', {}", self.ensemble.name, e.message)));
        let stats = &self.ensemble.stats;
        let total = self.request.received.elapsed();
        match &result {
            Ok(_) => {
                let compute = self.compute.get();
                stats.record_success(total, Duration::ZERO, compute);
                stats.record_execution(self.batch_size as u64, compute);
                if let Some(outer) = &self.request.compute_sink {
                    outer.add(compute);
                }
            }
            Err(_) => stats.record_failure(total, "OTHER"),
        }
        result
    }

    async fn drive(&mut self) -> Result<InferResponse> {
        loop {
            if let Some(e) = self.error.take() {
                return Err(e);
            }
            if let Some(outputs) = self.outputs() {
                return self.ensemble.responses.build(&self.request, outputs);
            }
            let Some((index, result)) = self.running.next().await else {
                return Err(Error::invalid_arg(format!(
                    "{}unexpected deadlock, at least one output is not set while no more ensemble steps can be made",
                    log_prefix(&self.request.id)
                )));
            };
            let step = &self.ensemble.steps[index];
            for t in result?.outputs {
                if let Some((_, tensor)) = step.outputs.iter().find(|(o, _)| *o == t.name) {
                    self.tensors.insert(
                        tensor.clone(),
                        (Tensor { name: tensor.clone(), ..t }, self.step_batch[index]),
                    );
                }
            }
            self.launch();
        }
    }

    /// The ensemble's outputs, once every one the request asked for exists.
    fn outputs(&self) -> Option<Vec<Tensor>> {
        let wanted = |name: &str| {
            self.request.requested_outputs.is_empty()
                || self.request.requested_outputs.iter().any(|o| o.name == name)
        };
        let ensemble_batching = self.ensemble.batching;
        let mut outputs = Vec::new();
        for (name, dims) in self.ensemble.outputs.iter().filter(|(n, _)| wanted(n)) {
            let (t, batch) = self.tensors.get(name)?;
            let shape = reshape_dims(dims, ensemble_batching, *batch, &t.shape);
            outputs.push(Tensor { shape, ..t.clone() });
        }
        Some(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_dimension_between_batching_and_plain_models() {
        assert_eq!(reshape_dims(&[16], true, 0, &[16]), [1, 16], "into a batching model");
        assert_eq!(reshape_dims(&[16], false, 1, &[1, 16]), [16], "into a plain model");
        assert_eq!(reshape_dims(&[1, 16], false, 1, &[1, 16]), [1, 16], "the plain model wants it");
        assert_eq!(reshape_dims(&[16], true, 4, &[4, 16]), [4, 16]);
    }

    #[test]
    fn nodes_agree_on_type_and_shape() {
        let a = Node::new("a", true, ConfigType::TypeFp32 as i32, &[16]);
        let plain = Node::new("b", false, ConfigType::TypeFp32 as i32, &[-1, 16]);
        assert!(a.check(&plain, "").is_ok(), "[-1,16] matches a batching [16]");
        let other = Node::new("c", true, ConfigType::TypeInt32 as i32, &[16]);
        assert_eq!(
            a.check(&other, "p: ").unwrap_err().message,
            "p: inconsistent data type: TYPE_FP32 is inferred from model a while TYPE_INT32 is inferred from model c"
        );
        let wide = Node::new("d", true, ConfigType::TypeFp32 as i32, &[8]);
        assert_eq!(
            a.check(&wide, "").unwrap_err().message,
            "inconsistent shape: [-1,16] is inferred from model a while [-1,8] is inferred from model d"
        );
    }
}
