//! What every model's scheduler shares. A model queues requests through its [`Scheduler`]
//! (the dynamic batcher, the sequence batcher or the ensemble scheduler); one thread per
//! instance takes batches from a [`BatchSource`], and the [`Executor`] runs them and answers the
//! requests, recording statistics at the boundaries Triton measures.
//!
//! A model whose executions are short may run a request on the submitting thread when an
//! instance is free and nothing is queued ([`Instances::try_inline`]): two thread hand-offs cost
//! more than such an execution.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::backend::{BackendInstance, ExecTimer};
use crate::dynamic_batcher::ResponseOrder;
use crate::error::{Error, Result};
use crate::infer_request::InferRequest;
use crate::infer_response::InferResponse;
use crate::model::{Pending, ResponseBuilder};
use crate::stats::{ComputeTimes, ModelStats};
use crate::tensor::Tensor;

/// Executions shorter than this (on average) may run on the submitting thread.
const INLINE_LIMIT: Duration = Duration::from_micros(200);

/// Triton's `Scheduler`: how a model takes requests.
pub(crate) trait Scheduler: Send + Sync {
    /// Queues a validated request. An error is Triton's enqueue error: nothing was queued.
    fn enqueue(&self, request: InferRequest) -> Result<Pending>;

    /// Stops taking requests, lets queued and running ones finish, then joins the instances.
    fn shutdown(&self);
}

/// Where an instance thread takes its batches from.
pub(crate) trait BatchSource: Send + Sync {
    /// Blocks for the next batch; `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Job>>;

    /// Whether a batch whose execution failed as a whole is re-run one request at a time, so
    /// that a request's failure does not fail its batch-mates. Not where batch positions are
    /// sequence slots.
    fn rerun_alone(&self) -> bool {
        true
    }
}

/// Runs with a request's result before its response is built (a sequence's state, the next
/// request of its slot).
pub(crate) type Done = Box<dyn FnOnce(&mut Result<Vec<Tensor>>) + Send>;

/// A request on its way to an instance.
pub(crate) struct Job {
    pub request: InferRequest,
    pub reply: Reply,
    pub queued: Instant,
    pub done: Option<Done>,
}

impl Job {
    pub fn new(request: InferRequest) -> (Job, Pending) {
        let (tx, rx) = oneshot::channel();
        (Job { request, reply: Reply::To(tx), queued: Instant::now(), done: None }, Pending::queued(rx))
    }

    /// Answers without executing; `reason` is Triton's failure label (REJECTED, OTHER...).
    pub fn fail(self, stats: &ModelStats, error: Error, reason: &'static str) {
        stats.record_failure(self.request.received.elapsed(), reason);
        self.reply.send(Err(error));
    }
}

/// Who gets a request's response.
pub(crate) enum Reply {
    To(oneshot::Sender<Result<InferResponse>>),
    /// `preserve_ordering`: responses leave in the order their requests left the queue.
    Ordered(Arc<ResponseOrder>, u64, oneshot::Sender<Result<InferResponse>>),
    /// A padding row of a sequence batch: nobody waits for it and it is not counted.
    None,
}

impl Reply {
    pub fn send(self, response: Result<InferResponse>) {
        match self {
            Reply::To(tx) => {
                let _ = tx.send(response);
            }
            Reply::Ordered(order, ticket, tx) => order.deliver(ticket, tx, response),
            Reply::None => {}
        }
    }
}

/// The error for requests that arrive once a model has begun to unload.
pub(crate) fn unloaded() -> Error {
    Error::unavailable("model is unloading and no longer accepts requests")
}

/// Instance threads wait for queue delays of a hundred microseconds or so; Linux would let such
/// a wait run 50 us long (the default timer slack).
#[cfg(target_os = "linux")]
fn precise_timers() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only sets the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(not(target_os = "linux"))]
fn precise_timers() {}

type Slot = Arc<Mutex<Box<dyn BackendInstance>>>;

/// A model's instances, each on its own thread taking batches from its source.
pub(crate) struct Instances {
    slots: Vec<Slot>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    exec: Arc<Executor>,
}

impl Instances {
    /// Starts one thread per instance; `source(i)` is where instance `i` takes its batches.
    pub fn start(
        instances: Vec<(String, Box<dyn BackendInstance>)>,
        mut source: impl FnMut(usize) -> Arc<dyn BatchSource>,
        responses: Arc<ResponseBuilder>,
        stats: Arc<ModelStats>,
    ) -> Result<Instances> {
        let exec = Arc::new(Executor { responses, stats, average_ns: AtomicU64::new(u64::MAX) });
        let mut threads = Vec::new();
        let mut slots = Vec::new();
        for (index, (name, instance)) in instances.into_iter().enumerate() {
            let slot: Slot = Arc::new(Mutex::new(instance));
            slots.push(slot.clone());
            let (source, exec) = (source(index), exec.clone());
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    precise_timers();
                    while let Some(jobs) = source.next_batch() {
                        exec.execute(slot.lock().as_mut(), jobs, source.rerun_alone());
                    }
                })
                .map_err(|e| Error::internal(format!("failed to start instance thread: {e}")))?;
            threads.push(handle);
        }
        Ok(Instances { slots, threads: Mutex::new(threads), exec })
    }

    /// Runs the job here when executions are short and an instance is free; else hands it back.
    pub fn try_inline(&self, job: Job) -> Option<Job> {
        if !self.exec.is_fast() {
            return Some(job);
        }
        match self.slots.iter().find_map(|s| s.try_lock()) {
            Some(mut instance) => {
                self.exec.execute(instance.as_mut(), vec![job], false);
                None
            }
            None => Some(job),
        }
    }

    /// Waits for the instance threads to finish (their sources must be closed).
    pub fn join(&self) {
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// A job while its request is with the backend.
struct Meta {
    reply: Reply,
    queued: Instant,
    done: Option<Done>,
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

    fn execute(&self, instance: &mut dyn BackendInstance, jobs: Vec<Job>, rerun_alone: bool) {
        let (requests, jobs): (Vec<InferRequest>, Vec<Meta>) = jobs
            .into_iter()
            .map(|Job { request, reply, queued, done }| (request, Meta { reply, queued, done }))
            .unzip();
        let mut timer = ExecTimer::start();
        let results = catch_unwind(AssertUnwindSafe(|| instance.execute(&requests, &mut timer)))
            .unwrap_or_else(|_| vec![Err(Error::internal("the backend panicked")); requests.len()]);
        let end = Instant::now();
        // A decoupled request may have sent responses already: it is not run twice.
        let rerun = rerun_alone && requests.len() > 1 && requests.iter().all(|r| r.response_sender.is_none());
        if rerun && results.iter().all(Result::is_err) {
            for (request, Meta { reply, queued, done }) in requests.into_iter().zip(jobs) {
                self.execute(instance, vec![Job { request, reply, queued, done }], false);
            }
            return;
        }
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
        // As Triton's backends do: an execution counts unless every request failed; padding
        // rows of sequence batches are not inferences anyone asked for.
        if results.iter().any(Result::is_ok) {
            let batching = self.responses.batching();
            let batch_size: usize = requests
                .iter()
                .zip(&jobs)
                .filter(|(_, j)| !matches!(j.reply, Reply::None))
                .map(|(r, _)| r.batch_size(batching))
                .sum();
            self.stats.record_execution(batch_size as u64, times);
        }
        let mut results = results.into_iter();
        for (request, job) in requests.into_iter().zip(jobs) {
            let mut result = results
                .next()
                .unwrap_or_else(|| Err(Error::internal("backend returned fewer results than requests")));
            if let Some(done) = job.done {
                done(&mut result);
            }
            if matches!(job.reply, Reply::None) {
                continue;
            }
            let response = result.and_then(|outputs| self.responses.build(&request, outputs));
            let total = request.received.elapsed();
            match &response {
                Ok(_) => {
                    let queue = timer.start.saturating_duration_since(job.queued);
                    self.stats.record_success(total, queue, times);
                    if let Some(sink) = &request.compute_sink {
                        sink.add(times);
                    }
                }
                Err(_) => self.stats.record_failure(total, "BACKEND"),
            }
            job.reply.send(response);
        }
    }
}
