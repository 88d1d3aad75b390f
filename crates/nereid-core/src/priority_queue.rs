//! The dynamic batcher's queue (Triton's `PriorityQueue`, scheduler_utils.cc): one FIFO per
//! priority level, lower levels first, each under its queue policy: a size limit, and a timeout
//! after which a request is rejected or delayed behind the level's unexpired requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use nereid_proto::inference::model_queue_policy::TimeoutAction;
use nereid_proto::inference::{ModelDynamicBatching, ModelQueuePolicy};

use crate::error::{Error, Result};
use crate::infer_request::log_prefix;
use crate::scheduler::Job;

#[derive(Clone, Copy, Debug, Default)]
struct Policy {
    delay_on_timeout: bool,
    timeout_us: u64,
    allow_override: bool,
    max_size: usize,
}

impl Policy {
    fn from_config(policy: Option<&ModelQueuePolicy>) -> Policy {
        policy.map_or_else(Policy::default, |p| Policy {
            delay_on_timeout: p.timeout_action() == TimeoutAction::Delay,
            timeout_us: p.default_timeout_microseconds,
            allow_override: p.allow_timeout_override,
            max_size: p.max_queue_size as usize,
        })
    }

    /// As Triton: a request's `timeout` may only shorten the level's default timeout.
    fn deadline(&self, requested_us: u64, now: Instant) -> Option<Instant> {
        let mut us = self.timeout_us;
        if self.allow_override && requested_us != 0 && requested_us < us {
            us = requested_us;
        }
        (us != 0).then(|| now + Duration::from_micros(us))
    }
}

#[derive(Default)]
struct Level {
    policy: Policy,
    /// Unexpired requests and when each expires.
    queue: VecDeque<(Job, Option<Instant>)>,
    /// Expired requests of a DELAY policy: served after the level's unexpired ones.
    delayed: VecDeque<Job>,
}

impl Level {
    fn len(&self) -> usize {
        self.queue.len() + self.delayed.len()
    }
}

pub(crate) struct PriorityQueue {
    levels: BTreeMap<u64, Level>,
    priority_levels: u64,
    default_level: u64,
    default_policy: Policy,
    policies: HashMap<u64, Policy>,
    len: usize,
}

impl PriorityQueue {
    /// The queue `dynamic_batching` describes; without it, one unbounded level.
    pub fn from_config(batching: Option<&ModelDynamicBatching>) -> PriorityQueue {
        let Some(b) = batching else {
            return PriorityQueue::from_config(Some(&ModelDynamicBatching::default()));
        };
        PriorityQueue {
            levels: BTreeMap::new(),
            priority_levels: b.priority_levels,
            default_level: if b.priority_levels == 0 { 0 } else { b.default_priority_level },
            default_policy: Policy::from_config(b.default_queue_policy.as_ref()),
            policies: b
                .priority_queue_policy
                .iter()
                .map(|(&l, p)| (l, Policy::from_config(Some(p))))
                .collect(),
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A request's level: its `priority`, or the default one when that is 0 or out of range.
    fn level_of(&self, priority: u64) -> u64 {
        if priority == 0 || priority > self.priority_levels {
            self.default_level
        } else {
            priority
        }
    }

    /// Queues a job, or answers Triton's error for a full level.
    pub fn push(&mut self, job: Job) -> Result<()> {
        let level = self.level_of(job.request.priority);
        let policy = self.policies.get(&level).copied().unwrap_or(self.default_policy);
        let entry = self.levels.entry(level).or_insert_with(|| Level { policy, ..Level::default() });
        if policy.max_size != 0 && entry.len() >= policy.max_size {
            let prefix = log_prefix(&job.request.id);
            return Err(Error::unavailable(format!("{prefix}Exceeds maximum queue size")));
        }
        let deadline = policy.deadline(job.request.timeout_us, job.queued);
        entry.queue.push_back((job, deadline));
        self.len += 1;
        Ok(())
    }

    /// Applies the timeouts: expired requests of a DELAY level move behind its unexpired
    /// ones; those of a REJECT level are returned to be answered.
    pub fn expire(&mut self, now: Instant) -> Vec<Job> {
        let mut rejected = Vec::new();
        for level in self.levels.values_mut().filter(|l| l.policy.timeout_us != 0) {
            if !level.queue.iter().any(|(_, d)| d.is_some_and(|d| d <= now)) {
                continue;
            }
            for (job, deadline) in std::mem::take(&mut level.queue) {
                match deadline {
                    Some(d) if d <= now && level.policy.delay_on_timeout => level.delayed.push_back(job),
                    Some(d) if d <= now => rejected.push(job),
                    _ => level.queue.push_back((job, deadline)),
                }
            }
        }
        self.len -= rejected.len();
        rejected
    }

    /// Queued jobs in the order batches take them, with their deadlines.
    pub fn iter(&self) -> impl Iterator<Item = (&Job, Option<Instant>)> {
        self.levels
            .values()
            .flat_map(|l| l.queue.iter().map(|(j, d)| (j, *d)).chain(l.delayed.iter().map(|j| (j, None))))
    }

    /// Takes the first `n` jobs in [`Self::iter`]'s order.
    pub fn take(&mut self, n: usize) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(n);
        for level in self.levels.values_mut() {
            while jobs.len() < n {
                match level.queue.pop_front().map(|(j, _)| j).or_else(|| level.delayed.pop_front()) {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
        }
        self.len -= jobs.len();
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer_request::InferRequest;

    fn job(priority: u64, timeout_us: u64) -> Job {
        let mut r = InferRequest::new("m", None);
        r.priority = priority;
        r.timeout_us = timeout_us;
        r.id = format!("{priority}/{timeout_us}");
        Job::new(r).0
    }

    fn ids(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.request.id.as_str()).collect()
    }

    fn queue(text: &str) -> PriorityQueue {
        let config = crate::model_config::parse(text, std::path::Path::new("c")).unwrap();
        let Some(nereid_proto::inference::model_config::SchedulingChoice::DynamicBatching(b)) =
            config.scheduling_choice
        else {
            panic!("dynamic_batching expected")
        };
        PriorityQueue::from_config(Some(&b))
    }

    #[test]
    fn levels_in_order_with_default_for_out_of_range() {
        let mut q = queue("dynamic_batching { priority_levels: 3 default_priority_level: 2 }");
        for p in [3, 0, 1, 9, 2] {
            q.push(job(p, 0)).unwrap();
        }
        assert_eq!(q.iter().count(), 5);
        assert_eq!(ids(&q.take(5)), ["1/0", "0/0", "9/0", "2/0", "3/0"]);
        assert!(q.is_empty());
    }

    #[test]
    fn size_limit_per_level() {
        let mut q = queue(
            "dynamic_batching { priority_levels: 2 default_priority_level: 1
               priority_queue_policy { key: 2 value: { max_queue_size: 1 } } }",
        );
        assert!(q.push(job(2, 0)).is_ok());
        assert!(q.push(job(2, 0)).is_err());
        assert!(q.push(job(1, 0)).is_ok(), "level 1 has the unbounded default policy");
    }

    #[test]
    fn timeouts_reject_or_delay_and_only_shorten() {
        let mut q = queue(
            "dynamic_batching { priority_levels: 2 default_priority_level: 1
               default_queue_policy { default_timeout_microseconds: 1000 allow_timeout_override: true }
               priority_queue_policy { key: 2 value: { timeout_action: DELAY default_timeout_microseconds: 1000 } } }",
        );
        for j in [job(1, 0), job(1, 100_000), job(1, 10), job(2, 0), job(2, 0)] {
            q.push(j).unwrap();
        }
        let later = Instant::now() + Duration::from_micros(500);
        assert_eq!(ids(&q.expire(later)), ["1/10"]);
        let much_later = Instant::now() + Duration::from_millis(5);
        assert_eq!(ids(&q.expire(much_later)), ["1/0", "1/100000"], "an override cannot lengthen");
        q.push(job(2, 0)).unwrap();
        assert_eq!(q.iter().count(), 3);
        // The fresh request of level 2 goes before its delayed ones.
        let order: Vec<_> = q.iter().map(|(j, d)| (j.request.id.clone(), d.is_some())).collect();
        assert_eq!(order, [("2/0".into(), true), ("2/0".into(), false), ("2/0".into(), false)]);
    }
}
