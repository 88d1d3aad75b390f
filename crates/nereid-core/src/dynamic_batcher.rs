//! How an instance takes its next batch from the model's queue: one request at a time
//! (default scheduler), or batches gathered under `dynamic_batching`.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::ModelConfig;

use crate::scheduler::Job;

#[derive(Clone, Debug)]
pub(crate) enum BatchPolicy {
    Single,
    Dynamic { max_batch_size: usize, preferred: Vec<usize>, max_delay: Duration },
}

impl BatchPolicy {
    pub fn from_config(config: &ModelConfig) -> BatchPolicy {
        match &config.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(db)) if config.max_batch_size > 0 => {
                BatchPolicy::Dynamic {
                    max_batch_size: config.max_batch_size as usize,
                    preferred: db.preferred_batch_size.iter().map(|&p| p.max(1) as usize).collect(),
                    max_delay: Duration::from_micros(db.max_queue_delay_microseconds),
                }
            }
            _ => BatchPolicy::Single,
        }
    }

    /// Blocks for the next batch; `None` once the queue is closed and drained. A request that
    /// cannot join the batch being formed waits in `carry` for the next one.
    pub fn next_batch(&self, rx: &Receiver<Job>, carry: &mut Option<Job>) -> Option<Vec<Job>> {
        let first = match carry.take() {
            Some(job) => job,
            None => rx.recv().ok()?,
        };
        let BatchPolicy::Dynamic { max_batch_size, preferred, max_delay } = self else {
            return Some(vec![first]);
        };
        let deadline = first.queued + *max_delay;
        let mut size = first.request.batch_size(true);
        let mut batch = vec![first];
        while size < *max_batch_size && !preferred.contains(&size) {
            let next = match rx.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let n = next.request.batch_size(true);
            if size + n > *max_batch_size || !same_shapes(&batch[0], &next) {
                *carry = Some(next);
                break;
            }
            size += n;
            batch.push(next);
        }
        Some(batch)
    }
}

/// Requests batch together only when every input agrees beyond the batch dimension.
fn same_shapes(a: &Job, b: &Job) -> bool {
    let (a, b) = (&a.request.inputs, &b.request.inputs);
    a.len() == b.len()
        && a.iter().all(|ta| b.iter().any(|tb| tb.name == ta.name && tb.shape.get(1..) == ta.shape.get(1..)))
}
