//! A loaded model version: its final config, its instances behind a scheduler, its statistics.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::ModelConfig;
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendModel, InstanceKind, InstanceSpec, ModelLocation};
use crate::classification::classify;
use crate::decoupled::{ResponseSender, ResponseStream};
use crate::dynamic_batcher::DynamicBatchScheduler;
use crate::ensemble_scheduler::{EnsembleScheduler, ModelLookup};
use crate::error::{Error, Result};
use crate::infer_request::{InferRequest, RequestedOutput};
use crate::infer_response::InferResponse;
use crate::model_warmup;
use crate::scheduler::Scheduler;
use crate::sequence_batcher::SequenceBatchScheduler;
use crate::sequence_state;
use crate::stats::ModelStats;
use crate::tensor::Tensor;

pub struct Model {
    pub name: String,
    pub version: i64,
    pub config: ModelConfig,
    pub stats: Arc<ModelStats>,
    scheduler: Box<dyn Scheduler>,
    /// `None` for an ensemble, which has no backend.
    backend: Option<Arc<dyn BackendModel>>,
    responses: Arc<ResponseBuilder>,
}

impl Model {
    pub(crate) fn load(
        backend: &dyn Backend,
        location: &ModelLocation,
        config: ModelConfig,
    ) -> Result<Model> {
        let backend_model = backend.load_model(location, &sequence_state::backend_config(&config))?;
        let warmup = model_warmup::samples(&config, &location.model_dir)?;
        let mut instances = Vec::new();
        for spec in instance_specs(&config) {
            let mut instance = backend_model.create_instance(&spec)?;
            model_warmup::run(instance.as_mut(), &warmup)?;
            instances.push((spec.name, instance));
        }
        let stats = Arc::new(ModelStats::new(&location.name, location.version));
        let responses = Arc::new(ResponseBuilder::new(location, &config)?);
        let (r, s) = (responses.clone(), stats.clone());
        let scheduler: Box<dyn Scheduler> = match &config.scheduling_choice {
            Some(SchedulingChoice::SequenceBatching(_)) => {
                Box::new(SequenceBatchScheduler::start(&config, &location.model_dir, instances, r, s)?)
            }
            _ => Box::new(DynamicBatchScheduler::start(&config, instances, r, s)?),
        };
        Ok(Model {
            name: location.name.clone(),
            version: location.version,
            config,
            stats,
            scheduler,
            backend: Some(backend_model),
            responses,
        })
    }

    /// An ensemble: its steps run on the models `lookup` finds.
    pub(crate) fn load_ensemble(
        location: &ModelLocation,
        config: ModelConfig,
        lookup: ModelLookup,
    ) -> Result<Model> {
        let stats = Arc::new(ModelStats::new(&location.name, location.version));
        let responses = Arc::new(ResponseBuilder::new(location, &config)?);
        let scheduler = EnsembleScheduler::new(&config, lookup, responses.clone(), stats.clone());
        Ok(Model {
            name: location.name.clone(),
            version: location.version,
            config,
            stats,
            scheduler: Box::new(scheduler),
            backend: None,
            responses,
        })
    }

    /// `model_transaction_policy { decoupled: true }`: any number of responses per request.
    pub fn is_decoupled(&self) -> bool {
        self.config.model_transaction_policy.is_some_and(|p| p.decoupled)
    }

    /// The backend's view of readiness (e.g. a Python model's stub processes are up).
    pub fn is_ready(&self) -> bool {
        self.backend.as_ref().is_none_or(|b| b.is_ready())
    }

    /// Validates the request against the config and queues it now (its scheduler may refuse
    /// it: a full queue, a sequence's rules); the response arrives through the returned
    /// [`Pending`]. Requests submitted one after another reach the scheduler in that order.
    pub fn submit(&self, request: InferRequest) -> Result<Pending> {
        request.validate(&self.config)?;
        self.scheduler.enqueue(request)
    }

    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        self.submit(request)?.await
    }

    /// Like [`Self::submit`], for any model: a decoupled model's responses arrive through the
    /// stream as its backend sends them, another model's one response as the stream's only item.
    pub fn submit_stream(&self, mut request: InferRequest) -> Result<ResponseStream> {
        if !self.is_decoupled() {
            return Ok(ResponseStream::single(self.submit(request)?));
        }
        let (sender, rx) = ResponseSender::new(self.responses.clone(), &request);
        request.response_sender = Some(sender);
        Ok(ResponseStream::decoupled(rx, self.submit(request)?))
    }

    /// Finishes queued and running requests, then releases the instances.
    pub(crate) fn unload(&self) {
        self.scheduler.shutdown();
        if let Some(backend) = &self.backend {
            backend.unload();
        }
    }
}

/// A queued request's response.
pub struct Pending(PendingKind);

enum PendingKind {
    Queued(oneshot::Receiver<Result<InferResponse>>),
    /// An ensemble request, whose later steps go out as this is polled.
    Future(Pin<Box<dyn Future<Output = Result<InferResponse>> + Send>>),
}

impl Pending {
    pub(crate) fn queued(rx: oneshot::Receiver<Result<InferResponse>>) -> Pending {
        Pending(PendingKind::Queued(rx))
    }

    pub(crate) fn future(f: impl Future<Output = Result<InferResponse>> + Send + 'static) -> Pending {
        Pending(PendingKind::Future(Box::pin(f)))
    }
}

impl Future for Pending {
    type Output = Result<InferResponse>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            PendingKind::Queued(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or_else(|_| Err(dropped()))),
            PendingKind::Future(f) => f.as_mut().poll(cx),
        }
    }
}

impl Pending {
    /// Waits for the response on a thread outside the async runtime.
    pub fn wait(self) -> Result<InferResponse> {
        match self.0 {
            PendingKind::Queued(rx) => rx.blocking_recv().unwrap_or_else(|_| Err(dropped())),
            PendingKind::Future(f) => futures::executor::block_on(f),
        }
    }
}

fn dropped() -> Error {
    Error::internal("request dropped by the scheduler")
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
    /// A decoupled model answers through its response sender; its execution returns no outputs.
    decoupled: bool,
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
            decoupled: config.model_transaction_policy.is_some_and(|p| p.decoupled),
            labels,
        })
    }

    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Keeps the requested outputs (all when none were named), classified where asked.
    pub fn build(&self, request: &InferRequest, outputs: Vec<Tensor>) -> Result<InferResponse> {
        if self.decoupled && outputs.is_empty() {
            return self.build_parts(&request.id, &[], outputs);
        }
        self.build_parts(&request.id, &request.requested_outputs, outputs)
    }

    /// [`Self::build`] from the parts of a request a response needs.
    pub fn build_parts(
        &self,
        id: &str,
        requested: &[RequestedOutput],
        mut outputs: Vec<Tensor>,
    ) -> Result<InferResponse> {
        let outputs = if requested.is_empty() {
            outputs
        } else {
            let mut picked = Vec::with_capacity(requested.len());
            for want in requested {
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
            id: id.to_string(),
            outputs,
            parameters: Default::default(),
        })
    }
}
