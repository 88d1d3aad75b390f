//! The scheduler: a queue per model version and one thread per instance taking work from it.
//!
//! Without `dynamic_batching` each request executes alone (Triton's default scheduler); with
//! it, an instance gathers a batch first (see [`crate::dynamic_batcher`]). Responses and
//! statistics are produced here, at the same boundaries Triton measures.
//!
//! A model whose executions are short runs a request on the submitting thread when an instance
//! is free and nothing is queued: two thread hand-offs cost more than such an execution.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// Executions shorter than this (on average) may run on the submitting thread.
const INLINE_LIMIT: Duration = Duration::from_micros(200);

pub(crate) struct Job {
    pub request: InferRequest,
    pub reply: oneshot::Sender<Result<InferResponse>>,
    pub queued: Instant,
}

type Slot = Arc<Mutex<Box<dyn BackendInstance>>>;

pub(crate) struct Scheduler {
    queue: RwLock<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    slots: Vec<Slot>,
    inline: bool,
    exec: Arc<Executor>,
}

impl Scheduler {
    pub fn start(
        instances: Vec<(String, Box<dyn BackendInstance>)>,
        policy: BatchPolicy,
        responses: Arc<ResponseBuilder>,
        stats: Arc<ModelStats>,
    ) -> Result<Scheduler> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let exec = Arc::new(Executor { responses, stats, average_ns: AtomicU64::new(u64::MAX) });
        let mut threads = Vec::new();
        let mut slots = Vec::new();
        for (name, instance) in instances {
            let slot: Slot = Arc::new(Mutex::new(instance));
            slots.push(slot.clone());
            let (rx, policy, exec) = (rx.clone(), policy.clone(), exec.clone());
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || run_instance(rx, slot, policy, exec))
                .map_err(|e| Error::internal(format!("failed to start instance thread: {e}")))?;
            threads.push(handle);
        }
        let inline = matches!(policy, BatchPolicy::Single);
        Ok(Scheduler { queue: RwLock::new(Some(tx)), threads: Mutex::new(threads), slots, inline, exec })
    }

    pub fn enqueue(&self, request: InferRequest) -> oneshot::Receiver<Result<InferResponse>> {
        let (reply, rx) = oneshot::channel();
        let job = Job { request, reply, queued: Instant::now() };
        let queue = self.queue.read();
        let Some(tx) = queue.as_ref() else {
            let _ = job.reply.send(Err(unloaded()));
            return rx;
        };
        if self.inline && tx.is_empty() && self.exec.is_fast() {
            if let Some(mut instance) = self.slots.iter().find_map(|s| s.try_lock()) {
                self.exec.execute(instance.as_mut(), vec![job]);
                return rx;
            }
        }
        self.exec.stats.pending(1);
        if let Err(e) = tx.send(job) {
            self.exec.stats.pending(-1);
            let _ = e.into_inner().reply.send(Err(unloaded()));
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

fn run_instance(rx: Receiver<Job>, slot: Slot, policy: BatchPolicy, exec: Arc<Executor>) {
    let mut carry = None;
    while let Some(jobs) = policy.next_batch(&rx, &mut carry) {
        exec.stats.pending(-(jobs.len() as i64));
        exec.execute(slot.lock().as_mut(), jobs);
    }
}

/// Runs batches on an instance and answers their requests.
struct Executor {
    responses: Arc<ResponseBuilder>,
    stats: Arc<ModelStats>,
    /// A running average of execution times, to decide on inline execution.
    average_ns: AtomicU64,
}

impl Executor {
    fn is_fast(&self) -> bool {
        self.average_ns.load(Relaxed) < INLINE_LIMIT.as_nanos() as u64
    }

    fn execute(&self, instance: &mut dyn BackendInstance, jobs: Vec<Job>) {
        let (requests, meta): (Vec<InferRequest>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, (j.reply, j.queued))).unzip();
        let mut timer = ExecTimer::start();
        let results = instance.execute(&requests, &mut timer);
        let end = Instant::now();
        let input_end = timer.input_end.unwrap_or(timer.start);
        let infer_end = timer.infer_end.unwrap_or(input_end).max(input_end);
        let times = ComputeTimes {
            input: input_end - timer.start,
            infer: infer_end - input_end,
            output: end.saturating_duration_since(infer_end),
        };
        let took = (end - timer.start).as_nanos() as u64;
        let average = self.average_ns.load(Relaxed);
        let average = if average == u64::MAX { took } else { (average * 7 + took) / 8 };
        self.average_ns.store(average, Relaxed);
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
