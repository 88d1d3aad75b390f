//! A loaded model version: its final config, its instances behind a scheduler, its statistics.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use nereid_proto::inference::ModelConfig;
use tokio::sync::oneshot;

use crate::backend::{Backend, InstanceKind, InstanceSpec, ModelLocation};
use crate::classification::classify;
use crate::dynamic_batcher::BatchPolicy;
use crate::error::{Error, Result};
use crate::infer_request::InferRequest;
use crate::infer_response::InferResponse;
use crate::scheduler::Scheduler;
use crate::sequence_batcher::SequenceBatcher;
use crate::stats::ModelStats;
use crate::tensor::Tensor;

pub struct Model {
    pub name: String,
    pub version: i64,
    pub config: ModelConfig,
    pub stats: Arc<ModelStats>,
    sequences: Option<SequenceBatcher>,
    scheduler: Scheduler,
}

impl Model {
    pub(crate) fn load(
        backend: &dyn Backend,
        location: &ModelLocation,
        config: ModelConfig,
    ) -> Result<Model> {
        let backend_model = backend.load_model(location, &config)?;
        let mut instances = Vec::new();
        for spec in instance_specs(&config) {
            let instance = backend_model.create_instance(&spec)?;
            instances.push((spec.name, instance));
        }
        let stats = Arc::new(ModelStats::new(&location.name, location.version));
        let responses = Arc::new(ResponseBuilder::new(location, &config)?);
        let scheduler =
            Scheduler::start(instances, BatchPolicy::from_config(&config), responses, stats.clone())?;
        let sequences = SequenceBatcher::from_config(&config);
        Ok(Model {
            name: location.name.clone(),
            version: location.version,
            config,
            stats,
            sequences,
            scheduler,
        })
    }

    /// Validates the request against the config (and the sequence rules) and queues it now;
    /// the response arrives through the returned [`Pending`]. Requests submitted one after
    /// another reach the scheduler in that order.
    pub fn submit(&self, mut request: InferRequest) -> Result<Pending> {
        request.validate(&self.config)?;
        if let Some(sequences) = &self.sequences {
            sequences.prepare(&mut request)?;
        }
        Ok(Pending(self.scheduler.enqueue(request)))
    }

    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        self.submit(request)?.await
    }

    /// Finishes queued and running requests, then releases the instances.
    pub(crate) fn unload(&self) {
        self.scheduler.shutdown();
    }
}

/// A queued request's response.
pub struct Pending(oneshot::Receiver<Result<InferResponse>>);

impl Future for Pending {
    type Output = Result<InferResponse>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Error::internal("request dropped by the scheduler"))))
    }
}

/// Expands `instance_group` into named instances, as Triton names them.
pub fn instance_specs(config: &ModelConfig) -> Vec<InstanceSpec> {
    let mut specs = Vec::new();
    for group in &config.instance_group {
        let kind = match group.kind {
            1 => InstanceKind::Gpu,
            2 => InstanceKind::Cpu,
            3 => InstanceKind::Model,
            _ => InstanceKind::Auto,
        };
        let devices: Vec<i32> =
            if kind == InstanceKind::Gpu && !group.gpus.is_empty() { group.gpus.clone() } else { vec![0] };
        let count = group.count.max(1);
        let mut index = 0;
        for &device_id in &devices {
            for _ in 0..count {
                specs.push(InstanceSpec { name: format!("{}_{}", group.name, index), kind, device_id });
                index += 1;
            }
        }
    }
    if specs.is_empty() {
        specs.push(InstanceSpec {
            name: format!("{}_0", config.name),
            kind: InstanceKind::Cpu,
            device_id: 0,
        });
    }
    specs
}

/// Turns a backend's outputs into the response the client asked for.
pub(crate) struct ResponseBuilder {
    name: String,
    version: i64,
    batching: bool,
    labels: HashMap<String, Vec<String>>,
}

impl ResponseBuilder {
    fn new(location: &ModelLocation, config: &ModelConfig) -> Result<Self> {
        let mut labels = HashMap::new();
        for out in config.output.iter().filter(|o| !o.label_filename.is_empty()) {
            let path = location.model_dir.join(&out.label_filename);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::invalid_arg(format!("failed to read label file '{}': {e}", path.display()))
            })?;
            labels.insert(out.name.clone(), text.lines().map(str::to_string).collect());
        }
        Ok(ResponseBuilder {
            name: location.name.clone(),
            version: location.version,
            batching: config.max_batch_size > 0,
            labels,
        })
    }

    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Keeps the requested outputs (all when none were named), classified where asked.
    pub fn build(&self, request: &InferRequest, mut outputs: Vec<Tensor>) -> Result<InferResponse> {
        let outputs = if request.requested_outputs.is_empty() {
            outputs
        } else {
            let mut picked = Vec::with_capacity(request.requested_outputs.len());
            for want in &request.requested_outputs {
                let pos = outputs.iter().position(|t| t.name == want.name).ok_or_else(|| {
                    Error::internal(format!("model '{}' did not produce output '{}'", self.name, want.name))
                })?;
                let t = outputs.swap_remove(pos);
                picked.push(if want.class_count > 0 {
                    let labels = self.labels.get(&t.name).map(Vec::as_slice).unwrap_or(&[]);
                    classify(&t, want.class_count, self.batching, labels)?
                } else {
                    t
                });
            }
            picked
        };
        Ok(InferResponse {
            model_name: self.name.clone(),
            model_version: self.version,
            id: request.id.clone(),
            outputs,
            parameters: Default::default(),
        })
    }
}
