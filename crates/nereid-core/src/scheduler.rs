//! The scheduler: a queue per model version and one thread per instance taking work from it.
//!
//! Without `dynamic_batching` each request executes alone (Triton's default scheduler); with
//! it, an instance gathers a batch first (see [`crate::dynamic_batcher`]). Responses and
//! statistics are produced here, at the same boundaries Triton measures.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::backend::{BackendInstance, ExecTimer};
use crate::dynamic_batcher::BatchPolicy;
use crate::error::{Error, Result};
use crate::infer_request::InferRequest;
use crate::infer_response::InferResponse;
use crate::model::ResponseBuilder;
use crate::stats::{ComputeTimes, ModelStats};
use crate::tensor::Tensor;

pub(crate) struct Job {
    pub request: InferRequest,
    pub reply: oneshot::Sender<Result<InferResponse>>,
    pub queued: Instant,
}

pub(crate) struct Scheduler {
    queue: RwLock<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<ModelStats>,
}

impl Scheduler {
    pub fn start(
        instances: Vec<(String, Box<dyn BackendInstance>)>,
        policy: BatchPolicy,
        responses: Arc<ResponseBuilder>,
        stats: Arc<ModelStats>,
    ) -> Result<Scheduler> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for (name, instance) in instances {
            let worker = Worker {
                rx: rx.clone(),
                instance,
                policy: policy.clone(),
                responses: responses.clone(),
                stats: stats.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.run())
                .map_err(|e| Error::internal(format!("failed to start instance thread: {e}")))?;
            threads.push(handle);
        }
        Ok(Scheduler { queue: RwLock::new(Some(tx)), threads: Mutex::new(threads), stats })
    }

    pub fn enqueue(&self, request: InferRequest) -> oneshot::Receiver<Result<InferResponse>> {
        let (reply, rx) = oneshot::channel();
        let job = Job { request, reply, queued: Instant::now() };
        match self.queue.read().as_ref() {
            Some(tx) => {
                self.stats.pending(1);
                if let Err(e) = tx.send(job) {
                    self.stats.pending(-1);
                    let _ = e.into_inner().reply.send(Err(unloaded()));
                }
            }
            None => {
                let _ = job.reply.send(Err(unloaded()));
            }
        }
        rx
    }

    /// Stops taking requests, lets queued and running ones finish, then joins the instances.
    pub fn shutdown(&self) {
        self.queue.write().take();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

fn unloaded() -> Error {
    Error::unavailable("model is unloading and no longer accepts requests")
}

struct Worker {
    rx: Receiver<Job>,
    instance: Box<dyn BackendInstance>,
    policy: BatchPolicy,
    responses: Arc<ResponseBuilder>,
    stats: Arc<ModelStats>,
}

impl Worker {
    fn run(mut self) {
        let mut carry = None;
        while let Some(jobs) = self.policy.next_batch(&self.rx, &mut carry) {
            self.stats.pending(-(jobs.len() as i64));
            self.execute(jobs);
        }
    }

    fn execute(&mut self, jobs: Vec<Job>) {
        let (requests, meta): (Vec<InferRequest>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, (j.reply, j.queued))).unzip();
        let mut timer = ExecTimer::start();
        let results = self.instance.execute(&requests, &mut timer);
        let end = Instant::now();
        let input_end = timer.input_end.unwrap_or(timer.start);
        let infer_end = timer.infer_end.unwrap_or(input_end).max(input_end);
        let times = ComputeTimes {
            input: input_end - timer.start,
            infer: infer_end - input_end,
            output: end.saturating_duration_since(infer_end),
        };
        let batching = self.responses.batching();
        let batch_size: usize = requests.iter().map(|r| r.batch_size(batching)).sum();
        self.stats.record_execution(batch_size as u64, times);
        let mut results = results.into_iter();
        for (request, (reply, queued)) in requests.into_iter().zip(meta) {
            let result: Result<Vec<Tensor>> = results
                .next()
                .unwrap_or_else(|| Err(Error::internal("backend returned fewer results than requests")));
            let response = result.and_then(|outputs| self.responses.build(&request, outputs));
            let total = request.received.elapsed();
            match &response {
                Ok(_) => {
                    self.stats.record_success(total, timer.start.saturating_duration_since(queued), times)
                }
                Err(_) => self.stats.record_failure(total, "BACKEND"),
            }
            let _ = reply.send(response);
        }
    }
}
