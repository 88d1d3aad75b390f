//! Triton's dynamic batch scheduler: a model's queue (or one instance's, under the sequence
//! batcher's oldest strategy) and how instances take batches from it. Without
//! `dynamic_batching` every request runs alone, in arrival order (Triton's default scheduler).
//!
//! With it, a batch grows up to `max_batch_size` and is taken at once when it reaches a
//! preferred size, else when its oldest request has waited `max_queue_delay_microseconds`.
//! Requests whose variable-size inputs differ in shape (unless `allow_ragged_batch`) never share
//! a batch. Priorities and queue policies are the [`PriorityQueue`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::ModelConfig;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use tokio::sync::oneshot;

use crate::backend::BackendInstance;
use crate::error::{Error, Result};
use crate::infer_request::InferRequest;
use crate::infer_response::InferResponse;
use crate::model::{Pending, ResponseBuilder};
use crate::priority_queue::PriorityQueue;
use crate::scheduler::{unloaded, BatchSource, Instances, Job, Reply, Scheduler};
use crate::stats::ModelStats;

/// Which requests may share a batch: those that agree on the shapes of the inputs listed here
/// (Triton's `enforce_equal_shape_tensors`) and, when some inputs are optional, on which
/// inputs they have.
pub(crate) struct ShapeRules {
    batching: bool,
    /// Inputs with a variable-size dimension and no `allow_ragged_batch`, and shape tensors
    /// (`true`: their contents must agree too).
    equal: Vec<(String, bool)>,
    optional_inputs: bool,
}

impl ShapeRules {
    pub fn from_config(config: &ModelConfig) -> ShapeRules {
        let equal = config
            .input
            .iter()
            .filter(|i| i.is_shape_tensor || (!i.allow_ragged_batch && i.dims.contains(&-1)))
            .map(|i| (i.name.clone(), i.is_shape_tensor))
            .collect();
        ShapeRules {
            batching: config.max_batch_size > 0,
            equal,
            optional_inputs: config.input.iter().any(|i| i.optional),
        }
    }

    pub fn compatible(&self, a: &InferRequest, b: &InferRequest) -> bool {
        if self.optional_inputs
            && (a.inputs.len() != b.inputs.len() || a.inputs.iter().any(|t| b.input(&t.name).is_none()))
        {
            return false;
        }
        self.equal.iter().all(|(name, contents)| match (a.input(name), b.input(name)) {
            (Some(x), Some(y)) => {
                let skip = usize::from(self.batching && !contents);
                x.shape.get(skip..) == y.shape.get(skip..) && (!contents || x.data == y.data)
            }
            (x, y) => x.is_none() && y.is_none(),
        })
    }
}

/// Batch sizes and delays.
pub(crate) struct BatchRules {
    max_batch_size: usize,
    preferred: BTreeSet<usize>,
    delay: Duration,
    shapes: ShapeRules,
}

impl BatchRules {
    /// Triton's default scheduler: one request at a time.
    fn single(config: &ModelConfig) -> BatchRules {
        BatchRules {
            max_batch_size: 1,
            preferred: BTreeSet::new(),
            delay: Duration::ZERO,
            shapes: ShapeRules::from_config(config),
        }
    }

    pub fn new(config: &ModelConfig, preferred: &[i32], delay_us: u64) -> BatchRules {
        BatchRules {
            max_batch_size: config.max_batch_size.max(1) as usize,
            preferred: preferred.iter().map(|&p| p.max(1) as usize).collect(),
            delay: Duration::from_micros(delay_us),
            shapes: ShapeRules::from_config(config),
        }
    }
}

enum Decision {
    Take(usize),
    /// Until a request arrives, or until then.
    Wait(Option<Instant>),
}

impl BatchRules {
    /// Triton's `GetDynamicBatch` over the queue as it is now.
    fn decide(&self, queue: &PriorityQueue, now: Instant, closing: bool) -> Decision {
        let max_preferred = self.preferred.last().copied().unwrap_or(0);
        let (mut size, mut count, mut best) = (0, 0, None);
        let (mut oldest, mut closest_timeout) = (now, None::<Instant>);
        let mut send_now = false;
        let mut first = None;
        for (job, deadline) in queue.iter() {
            let n = job.request.batch_size(self.shapes.batching).max(1);
            if let Some(first) = first {
                if size + n > max_preferred && best.is_none() {
                    best = Some(count);
                }
                if size + n > self.max_batch_size || !self.shapes.compatible(first, &job.request) {
                    send_now = true;
                    break;
                }
            }
            first = first.or(Some(&job.request));
            size += n;
            count += 1;
            oldest = oldest.min(job.queued);
            closest_timeout = earliest(closest_timeout, deadline);
            if self.preferred.contains(&size) {
                best = Some(count);
            }
        }
        if count == 0 {
            return Decision::Wait(None);
        }
        let due = oldest + self.delay;
        let delay_exceeded = !self.delay.is_zero() && now >= due;
        match best {
            Some(n) if !delay_exceeded => Decision::Take(n),
            _ if send_now || size >= max_preferred || delay_exceeded || self.delay.is_zero() || closing => {
                Decision::Take(count)
            }
            // A pending request's timeout ends the wait too: it may leave the batch.
            _ => Decision::Wait(Some(closest_timeout.map_or(due, |t| t.min(due)))),
        }
    }
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `preserve_ordering`: responses go out in the order their requests left the queue.
#[derive(Default)]
pub(crate) struct ResponseOrder(Mutex<OrderState>);

#[derive(Default)]
struct OrderState {
    issued: u64,
    next: u64,
    done: BTreeMap<u64, (oneshot::Sender<Result<InferResponse>>, Result<InferResponse>)>,
}

impl ResponseOrder {
    fn ticket(&self) -> u64 {
        let mut s = self.0.lock();
        s.issued += 1;
        s.issued - 1
    }

    pub fn deliver(
        &self,
        ticket: u64,
        tx: oneshot::Sender<Result<InferResponse>>,
        response: Result<InferResponse>,
    ) {
        let mut ready = Vec::new();
        {
            let mut s = self.0.lock();
            s.done.insert(ticket, (tx, response));
            loop {
                let next = s.next;
                match s.done.remove(&next) {
                    Some(entry) => ready.push(entry),
                    None => break,
                }
                s.next += 1;
            }
        }
        for (tx, response) in ready {
            let _ = tx.send(response);
        }
    }
}

/// A queue that instances take batches from.
pub(crate) struct DynamicBatcher {
    rules: BatchRules,
    state: Mutex<QueueState>,
    /// Signalled when a request arrives, when a batch leaves requests behind, and at close.
    changed: Condvar,
    order: Option<Arc<ResponseOrder>>,
    stats: Arc<ModelStats>,
}

struct QueueState {
    queue: PriorityQueue,
    closed: bool,
}

impl DynamicBatcher {
    pub fn new(
        rules: BatchRules,
        queue: PriorityQueue,
        preserve_ordering: bool,
        stats: Arc<ModelStats>,
    ) -> Self {
        DynamicBatcher {
            rules,
            state: Mutex::new(QueueState { queue, closed: false }),
            changed: Condvar::new(),
            order: preserve_ordering.then(Default::default),
            stats,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().queue.is_empty()
    }

    /// Queues a job, or answers Triton's error for a full queue.
    pub fn enqueue(&self, job: Job) -> Result<()> {
        self.state.lock().queue.push(job)?;
        self.stats.pending(1);
        self.changed.notify_one();
        Ok(())
    }

    /// Queued requests still run; instances stop once the queue is empty.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.changed.notify_all();
    }

    fn take(&self, state: &mut MutexGuard<QueueState>, n: usize) -> Vec<Job> {
        let mut jobs = state.queue.take(n);
        self.stats.pending(-(jobs.len() as i64));
        if let Some(order) = &self.order {
            for job in &mut jobs {
                if let Reply::To(tx) = std::mem::replace(&mut job.reply, Reply::None) {
                    job.reply = Reply::Ordered(order.clone(), order.ticket(), tx);
                }
            }
        }
        jobs
    }
}

impl BatchSource for DynamicBatcher {
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.state.lock();
        loop {
            let now = Instant::now();
            let expired = state.queue.expire(now);
            if !expired.is_empty() {
                self.stats.pending(-(expired.len() as i64));
                MutexGuard::unlocked(&mut state, || {
                    for job in expired {
                        job.fail(&self.stats, Error::unavailable("Request timeout expired"), "REJECTED");
                    }
                });
                continue;
            }
            match self.rules.decide(&state.queue, now, state.closed) {
                Decision::Take(n) => {
                    let jobs = self.take(&mut state, n);
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        self.changed.notify_one();
                    }
                    return Some(jobs);
                }
                Decision::Wait(_) if state.closed && state.queue.is_empty() => return None,
                Decision::Wait(None) => self.changed.wait(&mut state),
                Decision::Wait(Some(until)) => {
                    self.changed.wait_until(&mut state, until);
                }
            }
        }
    }
}

/// The scheduler of models without sequence batching: one queue for all instances.
pub(crate) struct DynamicBatchScheduler {
    batcher: Arc<DynamicBatcher>,
    instances: Instances,
    /// Shutdown takes it for writing: no enqueue is then half done.
    open: RwLock<bool>,
    /// Whether a request may run on the submitting thread when nothing is queued: not while
    /// batches wait for more requests, nor when responses must keep their order.
    inline: bool,
}

impl DynamicBatchScheduler {
    pub fn start(
        config: &ModelConfig,
        instances: Vec<(String, Box<dyn BackendInstance>)>,
        responses: Arc<ResponseBuilder>,
        stats: Arc<ModelStats>,
    ) -> Result<DynamicBatchScheduler> {
        let batching = match &config.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(b)) => Some(b),
            _ => None,
        };
        let rules = match batching {
            Some(b) => BatchRules::new(config, &b.preferred_batch_size, b.max_queue_delay_microseconds),
            None => BatchRules::single(config),
        };
        let preserve_ordering = batching.is_some_and(|b| b.preserve_ordering);
        let inline = rules.delay.is_zero() && !preserve_ordering;
        let queue = PriorityQueue::from_config(batching);
        let batcher = Arc::new(DynamicBatcher::new(rules, queue, preserve_ordering, stats.clone()));
        let source = batcher.clone();
        let instances = Instances::start(instances, |_| source.clone(), responses, stats)?;
        Ok(DynamicBatchScheduler { batcher, instances, open: RwLock::new(true), inline })
    }
}

impl Scheduler for DynamicBatchScheduler {
    fn enqueue(&self, request: InferRequest) -> Result<Pending> {
        let (job, pending) = Job::new(request);
        let open = self.open.read();
        if !*open {
            return Err(unloaded());
        }
        let job = match self.inline && self.batcher.is_empty() {
            true => match self.instances.try_inline(job) {
                None => return Ok(pending),
                Some(job) => job,
            },
            false => job,
        };
        self.batcher.enqueue(job)?;
        Ok(pending)
    }

    fn shutdown(&self) {
        *self.open.write() = false;
        self.batcher.close();
        self.instances.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, Tensor};

    fn config(text: &str) -> ModelConfig {
        let mut c = crate::model_config::parse(text, std::path::Path::new("c")).unwrap();
        crate::model_config::fill_defaults(&mut c, "m");
        c
    }

    const IO: &str = r#"input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] },
                                { name: "R" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]"#;

    fn request(batch: i64, x: i64, r: i64) -> InferRequest {
        let mut req = InferRequest::new("m", None);
        req.inputs.push(Tensor::new(
            "X",
            DataType::Fp32,
            vec![batch, x],
            vec![0u8; (batch * x * 4) as usize],
        ));
        req.inputs.push(Tensor::new(
            "R",
            DataType::Fp32,
            vec![batch, r],
            vec![0u8; (batch * r * 4) as usize],
        ));
        req
    }

    fn queue_of(requests: Vec<InferRequest>) -> PriorityQueue {
        let mut q = PriorityQueue::from_config(None);
        for r in requests {
            q.push(Job::new(r).0).unwrap();
        }
        q
    }

    fn rules(extra: &str) -> BatchRules {
        let c = config(&format!("max_batch_size: 8 dynamic_batching {{ {extra} }} {IO}"));
        let Some(SchedulingChoice::DynamicBatching(b)) = &c.scheduling_choice else { unreachable!() };
        BatchRules::new(&c, &b.preferred_batch_size, b.max_queue_delay_microseconds)
    }

    fn taken(d: Decision) -> Option<usize> {
        match d {
            Decision::Take(n) => Some(n),
            Decision::Wait(_) => None,
        }
    }

    #[test]
    fn waits_for_preferred_size_until_the_delay() {
        let r = rules("preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 1000000");
        let q = queue_of((0..3).map(|_| request(1, 2, 1)).collect());
        let now = Instant::now();
        assert_eq!(taken(r.decide(&q, now, false)), None);
        assert_eq!(taken(r.decide(&q, now + Duration::from_secs(2), false)), Some(3), "delay exceeded");
        assert_eq!(taken(r.decide(&q, now, true)), Some(3), "closing sends what is queued");
        let q = queue_of((0..6).map(|_| request(1, 2, 1)).collect());
        assert_eq!(taken(r.decide(&q, now, false)), Some(4), "preferred size first");
        assert_eq!(taken(r.decide(&q, now + Duration::from_secs(2), false)), Some(6));
    }

    #[test]
    fn batch_sizes_add_up_to_the_maximum() {
        let r = rules("");
        let q = queue_of(vec![request(3, 2, 1), request(4, 2, 1), request(2, 2, 1)]);
        assert_eq!(taken(r.decide(&q, Instant::now(), false)), Some(2), "3 + 4 fit in 8, 3 + 4 + 2 do not");
        let q = queue_of(vec![request(3, 2, 1), request(5, 2, 1)]);
        assert_eq!(taken(r.decide(&q, Instant::now(), false)), Some(2), "8 is the preferred size");
    }

    #[test]
    fn variable_shapes_split_batches_unless_ragged() {
        let r = rules("");
        let q = queue_of(vec![request(1, 2, 1), request(1, 2, 7), request(1, 3, 1), request(1, 2, 1)]);
        assert_eq!(taken(r.decide(&q, Instant::now(), false)), Some(2));
    }
}
