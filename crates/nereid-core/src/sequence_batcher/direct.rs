//! The direct strategy: an instance's batch holds the next request of each of its slots, in
//! slot order, so a batch position is a sequence slot. Slots with nothing ready (or whose
//! request differs in shape from the first) get a padding row whose READY control is false.
//! `minimum_slot_utilization` and `max_queue_delay_microseconds` let a batch wait for more slots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Shared, Strategy};
use crate::dynamic_batcher::ShapeRules;
use crate::infer_request::InferRequest;
use crate::scheduler::{BatchSource, Job, Reply};
use crate::tensor::{element_count, Tensor};

pub(super) struct Rules {
    pub delay: Duration,
    pub min_utilization: f32,
    pub max_batch_size: usize,
    pub shapes: ShapeRules,
}

/// Where one instance takes its batches.
pub(super) struct DirectBatch {
    pub shared: Arc<Shared>,
    pub instance: usize,
}

impl BatchSource for DirectBatch {
    fn next_batch(&self) -> Option<Vec<Job>> {
        let (s, i) = (&self.shared, self.instance);
        let Strategy::Direct(rules) = &s.strategy else { return None };
        let mut inner = s.inner.lock();
        loop {
            for k in 0..inner.slots[i].len() {
                let slot = &mut inner.slots[i][k];
                if slot.queue.is_empty() && std::mem::take(&mut slot.idle_ended) {
                    s.release(&mut inner, (i, k));
                }
            }
            let fronts: Vec<(usize, Instant)> = (inner.slots[i].iter().enumerate())
                .filter_map(|(k, slot)| slot.queue.front().map(|job| (k, job.queued)))
                .collect();
            if fronts.is_empty() {
                if inner.closed {
                    return None;
                }
                s.wake[i].wait(&mut inner);
                continue;
            }
            if !rules.delay.is_zero() && rules.min_utilization > 0.0 && !inner.closed {
                let due = fronts.iter().map(|&(_, q)| q).min().unwrap_or_else(Instant::now) + rules.delay;
                let utilization = fronts.len() as f32 / rules.max_batch_size as f32;
                if Instant::now() < due && utilization < rules.min_utilization {
                    s.wake[i].wait_until(&mut inner, due);
                    continue;
                }
            }
            let ready: Vec<usize> = fronts.into_iter().map(|(k, _)| k).collect();
            let mut rows: Vec<Option<Job>> = (0..=ready[ready.len() - 1]).map(|_| None).collect();
            for &k in &ready {
                let slot = &mut inner.slots[i][k];
                if let (Some(first), Some(next)) = (&rows[ready[0]], slot.queue.front()) {
                    if !rules.shapes.compatible(&first.request, &next.request) {
                        continue;
                    }
                }
                let Some(mut job) = slot.queue.pop_front() else { continue };
                s.prepare(slot, &mut job, (i, k));
                s.stats.pending(-1);
                if job.request.sequence_end {
                    s.release(&mut inner, (i, k));
                }
                rows[k] = Some(job);
            }
            // The first ready slot's request is always taken: it is the padding's template.
            let template = rows[ready[0]].as_ref().map(|first| padding(&first.request, s));
            let now = Instant::now();
            let pad = |request: &InferRequest| Job {
                request: request.clone(),
                reply: Reply::None,
                queued: now,
                done: None,
            };
            return Some(
                rows.into_iter().filter_map(|row| row.or_else(|| template.as_ref().map(pad))).collect(),
            );
        }
    }

    fn rerun_alone(&self) -> bool {
        false
    }
}

/// A row for an empty slot: the first request's inputs, zeroed, with READY false.
fn padding(first: &InferRequest, s: &Shared) -> InferRequest {
    let mut r = InferRequest::new(first.model_name.clone(), first.model_version);
    r.inputs = first
        .inputs
        .iter()
        .map(|t| {
            let len = match t.datatype.byte_size() {
                Some(_) => t.data.len(),
                // A BYTES element is a 4-byte length: zeros are empty strings.
                None => element_count(&t.shape).unwrap_or(0) * 4,
            };
            Tensor { data: vec![0u8; len].into(), ..t.clone() }
        })
        .collect();
    s.controls.apply(&mut r, false);
    r
}
