//! The sequence batcher (Triton's `SequenceBatchScheduler`): the requests of a sequence (one
//! correlation id, from its START request to its END one) run on one instance, in one of its
//! slots, in order. An instance has `max(1, max_batch_size)` slots (`oldest`:
//! `max_candidate_sequences`); a sequence that finds no free slot waits in a backlog until one
//! frees up, and a sequence idle for `max_sequence_idle_microseconds` loses its slot (the
//! reaper thread).
//!
//! - `direct` ([`direct`]): a batch holds one request per slot, in slot order, with padding rows
//!   (READY false) for slots with nothing ready.
//! - `oldest` ([`oldest`]): each instance has a dynamic batcher fed one request per sequence at
//!   a time; its batches mix sequences.
//!
//! A request gets its control inputs ([`control`]) and its sequence's implicit state
//! ([`crate::sequence_state`]) when it leaves its slot for a batch.

mod control;
mod direct;
mod oldest;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::model_sequence_batching::StrategyChoice;
use nereid_proto::inference::ModelConfig;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::backend::BackendInstance;
use crate::dynamic_batcher::{earliest, BatchRules, DynamicBatcher, ShapeRules};
use crate::error::{Error, Result};
use crate::infer_request::{CorrelationId, InferRequest};
use crate::model::{Pending, ResponseBuilder};
use crate::priority_queue::PriorityQueue;
use crate::scheduler::{unloaded, BatchSource, Instances, Job, Scheduler};
use crate::sequence_state::StateSpecs;
use crate::stats::ModelStats;
use crate::tensor::Tensor;

use control::Controls;

/// An instance and one of its slots.
type SlotId = (usize, usize);

pub(crate) struct SequenceBatchScheduler {
    shared: Arc<Shared>,
    instances: Instances,
    /// Shutdown takes it for writing: no enqueue is then half done.
    open: RwLock<bool>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    model: String,
    batching: bool,
    controls: Controls,
    states: StateSpecs,
    idle: Duration,
    strategy: Strategy,
    stats: Arc<ModelStats>,
    inner: Mutex<Inner>,
    /// One per instance (direct): signalled when its slots get work.
    wake: Vec<Condvar>,
    reaper_wake: Condvar,
}

enum Strategy {
    Direct(direct::Rules),
    Oldest(Vec<Arc<DynamicBatcher>>),
}

struct Inner {
    sequences: HashMap<CorrelationId, Sequence>,
    /// Sequences waiting for a slot, oldest first.
    backlog: VecDeque<Backlog>,
    /// Free slots; the lowest slot number first, as Triton hands them out.
    free: BinaryHeap<Reverse<(usize, usize)>>,
    /// `slots[instance][slot]`.
    slots: Vec<Vec<Slot>>,
    closed: bool,
}

/// A sequence that has started and not ended.
struct Sequence {
    /// `None` while in the backlog.
    slot: Option<SlotId>,
    seen: Instant,
}

struct Backlog {
    id: CorrelationId,
    jobs: VecDeque<Job>,
    ended: bool,
    /// The earliest request `timeout` among its requests.
    expires: Option<Instant>,
}

#[derive(Default)]
struct Slot {
    queue: VecDeque<Job>,
    /// The implicit state of the slot's sequence.
    state: Vec<Tensor>,
    /// Oldest: a request of the slot is in the dynamic batcher or executing.
    in_flight: bool,
    /// The reaper ended the slot's sequence: the slot is released once its queue is empty
    /// (nothing joins the queue of a sequence that has gone).
    idle_ended: bool,
}

impl SequenceBatchScheduler {
    pub fn start(
        config: &ModelConfig,
        model_dir: &Path,
        instances: Vec<(String, Box<dyn BackendInstance>)>,
        responses: Arc<ResponseBuilder>,
        stats: Arc<ModelStats>,
    ) -> Result<SequenceBatchScheduler> {
        let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice else {
            return Err(Error::internal("sequence batcher without sequence_batching"));
        };
        let count = instances.len();
        let mut slots_per_instance = config.max_batch_size.max(1) as usize;
        let strategy = match &sb.strategy_choice {
            Some(StrategyChoice::Oldest(o)) => {
                if o.max_candidate_sequences > 0 {
                    slots_per_instance = o.max_candidate_sequences as usize;
                }
                let batcher = || {
                    let rules =
                        BatchRules::new(config, &o.preferred_batch_size, o.max_queue_delay_microseconds);
                    let queue = PriorityQueue::from_config(None);
                    Arc::new(DynamicBatcher::new(rules, queue, o.preserve_ordering, stats.clone()))
                };
                Strategy::Oldest((0..count).map(|_| batcher()).collect())
            }
            Some(StrategyChoice::Direct(d)) => Strategy::Direct(direct::Rules {
                delay: Duration::from_micros(d.max_queue_delay_microseconds),
                min_utilization: d.minimum_slot_utilization,
                max_batch_size: slots_per_instance,
                shapes: ShapeRules::from_config(config),
            }),
            None => Strategy::Direct(direct::Rules {
                delay: Duration::ZERO,
                min_utilization: 0.0,
                max_batch_size: slots_per_instance,
                shapes: ShapeRules::from_config(config),
            }),
        };
        let free = (0..count).flat_map(|i| (0..slots_per_instance).map(move |s| Reverse((s, i)))).collect();
        let slots = (0..count).map(|_| (0..slots_per_instance).map(|_| Slot::default()).collect()).collect();
        let shared = Arc::new(Shared {
            model: config.name.clone(),
            batching: config.max_batch_size > 0,
            controls: Controls::from_config(config),
            states: StateSpecs::from_config(config, model_dir)?,
            idle: Duration::from_micros(sb.max_sequence_idle_microseconds),
            strategy,
            stats: stats.clone(),
            inner: Mutex::new(Inner {
                sequences: HashMap::new(),
                backlog: VecDeque::new(),
                free,
                slots,
                closed: false,
            }),
            wake: (0..count).map(|_| Condvar::new()).collect(),
            reaper_wake: Condvar::new(),
        });
        let source = |instance: usize| -> Arc<dyn BatchSource> {
            match &shared.strategy {
                Strategy::Direct(_) => Arc::new(direct::DirectBatch { shared: shared.clone(), instance }),
                Strategy::Oldest(batchers) => batchers[instance].clone(),
            }
        };
        let instances = Instances::start(instances, source, responses, stats)?;
        let reaper = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("{}_reaper", config.name))
                .spawn(move || shared.reap())
                .map_err(|e| Error::internal(format!("failed to start the sequence reaper: {e}")))?
        };
        Ok(SequenceBatchScheduler {
            shared,
            instances,
            open: RwLock::new(true),
            reaper: Mutex::new(Some(reaper)),
        })
    }
}

/// A correlation id as Triton prints it; `None` for "no id" (0 or "").
fn id_text(id: &CorrelationId) -> Option<String> {
    match id {
        CorrelationId::None | CorrelationId::Uint(0) => None,
        CorrelationId::String(s) if s.is_empty() => None,
        CorrelationId::Uint(u) => Some(u.to_string()),
        CorrelationId::String(s) => Some(s.clone()),
    }
}

impl Scheduler for SequenceBatchScheduler {
    fn enqueue(&self, request: InferRequest) -> Result<Pending> {
        let s = &self.shared;
        let model = &s.model;
        if request.batch_size(s.batching) > 1 {
            return Err(Error::invalid_arg(format!(
                "inference request to model '{model}' must specify batch-size 1 due to requirements of sequence batcher"
            )));
        }
        let Some(id_text) = id_text(&request.correlation_id) else {
            return Err(Error::invalid_arg(format!(
                "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
            )));
        };
        s.controls.check_correlation_id(&request)?;
        let (job, pending) = Job::new(request);
        let open = self.open.read();
        if !*open {
            return Err(unloaded());
        }
        let (id, start, end) =
            (job.request.correlation_id.clone(), job.request.sequence_start, job.request.sequence_end);
        let now = Instant::now();
        let mut inner = s.inner.lock();
        let known = inner.sequences.get(&id).map(|q| q.slot);
        match known {
            None if !start => {
                return Err(Error::invalid_arg(format!(
                    "inference request for sequence {id_text} to model '{model}' must specify the START flag on the first request of the sequence"
                )))
            }
            Some(_) if start => log::warn!(
                "sequence {id_text} for model '{model}' has a conflict. The previous sequence did not end before this sequence start. Previous sequence will be terminated early."
            ),
            _ => {}
        }
        s.stats.pending(1);
        let expires =
            (job.request.timeout_us != 0).then(|| now + Duration::from_micros(job.request.timeout_us));
        let at = match known {
            Some(at) => at,
            None => inner.free.pop().map(|Reverse((slot, instance))| (instance, slot)),
        };
        if end {
            inner.sequences.remove(&id);
        } else {
            inner.sequences.insert(id.clone(), Sequence { slot: at, seen: now });
        }
        match at {
            Some(at) => {
                inner.slots[at.0][at.1].queue.push_back(job);
                s.wake_slot(&mut inner, at);
            }
            None => {
                // A known sequence without a slot is in the backlog.
                let waiting =
                    known.and_then(|_| inner.backlog.iter_mut().rev().find(|b| b.id == id && !b.ended));
                match waiting {
                    Some(b) => {
                        b.jobs.push_back(job);
                        b.ended = end;
                        b.expires = earliest(b.expires, expires);
                    }
                    None => inner.backlog.push_back(Backlog {
                        id,
                        jobs: VecDeque::from([job]),
                        ended: end,
                        expires,
                    }),
                }
                if expires.is_some() {
                    s.reaper_wake.notify_one();
                }
            }
        }
        Ok(pending)
    }

    fn shutdown(&self) {
        *self.open.write() = false;
        let s = &self.shared;
        let backlog = {
            let mut inner = s.inner.lock();
            inner.closed = true;
            std::mem::take(&mut inner.backlog)
        };
        for job in backlog.into_iter().flat_map(|b| b.jobs) {
            s.stats.pending(-1);
            job.fail(&s.stats, unloaded(), "OTHER");
        }
        for wake in s.wake.iter().chain([&s.reaper_wake]) {
            wake.notify_all();
        }
        if let Some(reaper) = self.reaper.lock().take() {
            let _ = reaper.join();
        }
        if let Strategy::Oldest(batchers) = &s.strategy {
            batchers.iter().for_each(|b| b.close());
        }
        self.instances.join();
    }
}

impl Shared {
    /// The slot has something new: a request, or its end. Direct: its instance looks; oldest:
    /// the slot's next request goes to the batcher if none is there.
    fn wake_slot(self: &Arc<Self>, inner: &mut Inner, at: SlotId) {
        match &self.strategy {
            Strategy::Direct(_) => {
                self.wake[at.0].notify_one();
            }
            Strategy::Oldest(_) => oldest::issue(self, inner, at),
        }
    }

    /// The slot's sequence is over: the oldest backlogged sequence takes it, else it is free.
    fn release(&self, inner: &mut Inner, at: SlotId) {
        match inner.backlog.pop_front() {
            Some(b) => {
                if !b.ended {
                    if let Some(q) = inner.sequences.get_mut(&b.id) {
                        q.slot = Some(at);
                    }
                }
                inner.slots[at.0][at.1].queue.extend(b.jobs);
            }
            None => inner.free.push(Reverse((at.1, at.0))),
        }
    }

    /// Readies a request leaving its slot: control inputs, the sequence's state, and what to
    /// do once it ran.
    fn prepare(self: &Arc<Self>, slot: &mut Slot, job: &mut Job, at: SlotId) {
        self.controls.apply(&mut job.request, true);
        if !self.states.is_empty() {
            if job.request.sequence_start || slot.state.is_empty() {
                slot.state = self.states.initial();
            }
            job.request.inputs.extend(slot.state.iter().cloned());
        }
        if !self.states.is_empty() || matches!(self.strategy, Strategy::Oldest(_)) {
            let shared = self.clone();
            job.done = Some(Box::new(move |result| shared.complete(at, result)));
        }
    }

    /// A request of the slot ran: keep its state outputs; oldest issues the slot's next request.
    fn complete(self: &Arc<Self>, at: SlotId, result: &mut Result<Vec<Tensor>>) {
        let mut inner = self.inner.lock();
        let slot = &mut inner.slots[at.0][at.1];
        if let Ok(outputs) = result {
            self.states.capture(&mut slot.state, outputs);
        }
        if matches!(self.strategy, Strategy::Oldest(_)) {
            slot.in_flight = false;
            oldest::issue(self, &mut inner, at);
        }
    }

    /// The reaper: ends sequences idle for too long, and rejects backlogged requests whose
    /// timeout passed.
    fn reap(self: Arc<Self>) {
        let mut inner = self.inner.lock();
        while !inner.closed {
            let now = Instant::now();
            let mut next = now + self.idle;
            let mut idle = Vec::new();
            for (id, q) in &inner.sequences {
                match q.slot {
                    Some(at) if q.seen + self.idle <= now => idle.push((id.clone(), at)),
                    Some(_) => next = next.min(q.seen + self.idle),
                    None => {}
                }
            }
            for (id, at) in idle {
                log::debug!("Reaper: CORRID {id:?}: max sequence idle exceeded");
                inner.sequences.remove(&id);
                inner.slots[at.0][at.1].idle_ended = true;
                self.wake_slot(&mut inner, at);
            }
            let (expired, kept): (VecDeque<Backlog>, VecDeque<Backlog>) = std::mem::take(&mut inner.backlog)
                .into_iter()
                .partition(|b| b.expires.is_some_and(|e| e <= now));
            inner.backlog = kept;
            next = inner.backlog.iter().filter_map(|b| b.expires).fold(next, Instant::min);
            for b in expired {
                if !b.ended {
                    inner.sequences.remove(&b.id);
                }
                for job in b.jobs {
                    self.stats.pending(-1);
                    let error = Error::unavailable("timeout of the corresponding sequence has been expired");
                    job.fail(&self.stats, error, "REJECTED");
                }
            }
            self.reaper_wake.wait_until(&mut inner, next);
        }
    }
}
