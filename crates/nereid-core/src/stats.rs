//! Per model-version statistics: Triton's `InferStatistics` counters, exported both for the
//! statistics extension and as Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::metrics::ModelMetrics;

/// A count and a cumulative duration (Triton's `StatisticDuration`).
#[derive(Default, Debug)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Duration64 {
    pub count: u64,
    pub ns: u64,
}

impl DurationStat {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    fn get(&self) -> Duration64 {
        Duration64 { count: self.count.load(Relaxed), ns: self.ns.load(Relaxed) }
    }
}

/// Compute durations of one execution.
#[derive(Clone, Copy, Default, Debug)]
pub struct ComputeTimes {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

/// Compute durations summed over several executions: an ensemble request's, over the requests
/// of its steps (Triton's secondary stats aggregator).
#[derive(Default, Debug)]
pub struct ComputeSink {
    input_ns: AtomicU64,
    infer_ns: AtomicU64,
    output_ns: AtomicU64,
}

impl ComputeSink {
    pub fn add(&self, t: ComputeTimes) {
        self.input_ns.fetch_add(t.input.as_nanos() as u64, Relaxed);
        self.infer_ns.fetch_add(t.infer.as_nanos() as u64, Relaxed);
        self.output_ns.fetch_add(t.output.as_nanos() as u64, Relaxed);
    }

    pub fn get(&self) -> ComputeTimes {
        ComputeTimes {
            input: Duration::from_nanos(self.input_ns.load(Relaxed)),
            infer: Duration::from_nanos(self.infer_ns.load(Relaxed)),
            output: Duration::from_nanos(self.output_ns.load(Relaxed)),
        }
    }
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct BatchStats {
    pub batch_size: u64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
}

/// A snapshot, as the statistics extension reports it.
#[derive(Clone, Default, Debug)]
pub struct StatsSnapshot {
    pub last_inference_ms: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: Duration64,
    pub fail: Duration64,
    pub queue: Duration64,
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
    pub batch_stats: Vec<BatchStats>,
}

pub struct ModelStats {
    last_inference_ms: AtomicU64,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    success: DurationStat,
    fail: DurationStat,
    queue: DurationStat,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
    batches: Mutex<BTreeMap<u64, BatchStats>>,
    metrics: ModelMetrics,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ModelStats {
    pub fn new(model: &str, version: i64) -> Self {
        ModelStats {
            last_inference_ms: AtomicU64::new(0),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            success: DurationStat::default(),
            fail: DurationStat::default(),
            queue: DurationStat::default(),
            compute_input: DurationStat::default(),
            compute_infer: DurationStat::default(),
            compute_output: DurationStat::default(),
            batches: Mutex::new(BTreeMap::new()),
            metrics: ModelMetrics::new(model, version),
        }
    }

    /// One execution of `batch_size` inferences (the sum of the requests' batch sizes).
    pub fn record_execution(&self, batch_size: u64, times: ComputeTimes) {
        self.execution_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(batch_size, Relaxed);
        self.metrics.execution(batch_size);
        let mut batches = self.batches.lock();
        let b = batches.entry(batch_size).or_insert(BatchStats { batch_size, ..Default::default() });
        for (stat, d) in [
            (&mut b.compute_input, times.input),
            (&mut b.compute_infer, times.infer),
            (&mut b.compute_output, times.output),
        ] {
            stat.count += 1;
            stat.ns += d.as_nanos() as u64;
        }
    }

    /// A request that got its response; `total` runs from its arrival to its response.
    pub fn record_success(&self, total: Duration, queue: Duration, compute: ComputeTimes) {
        self.last_inference_ms.store(now_ms(), Relaxed);
        self.success.add(total);
        self.queue.add(queue);
        self.compute_input.add(compute.input);
        self.compute_infer.add(compute.infer);
        self.compute_output.add(compute.output);
        self.metrics.success(total, queue, compute);
    }

    /// A request that failed; `reason` is Triton's failure label (REJECTED, BACKEND, OTHER...).
    pub fn record_failure(&self, total: Duration, reason: &'static str) {
        self.last_inference_ms.store(now_ms(), Relaxed);
        self.fail.add(total);
        self.metrics.failure(reason);
    }

    pub fn pending(&self, delta: i64) {
        self.metrics.pending(delta);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            last_inference_ms: self.last_inference_ms.load(Relaxed),
            inference_count: self.inference_count.load(Relaxed),
            execution_count: self.execution_count.load(Relaxed),
            success: self.success.get(),
            fail: self.fail.get(),
            queue: self.queue.get(),
            compute_input: self.compute_input.get(),
            compute_infer: self.compute_infer.get(),
            compute_output: self.compute_output.get(),
            batch_stats: self.batches.lock().values().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_and_requests_add_up() {
        let s = ModelStats::new("stats_test_model", 1);
        let t = ComputeTimes {
            input: Duration::from_micros(1),
            infer: Duration::from_micros(2),
            output: Duration::from_micros(3),
        };
        s.record_execution(3, t);
        s.record_execution(1, t);
        s.record_execution(3, t);
        for _ in 0..4 {
            s.record_success(Duration::from_micros(10), Duration::from_micros(4), t);
        }
        s.record_failure(Duration::from_micros(5), "BACKEND");
        let snap = s.snapshot();
        assert_eq!(snap.execution_count, 3);
        assert_eq!(snap.inference_count, 7);
        assert_eq!(snap.success, Duration64 { count: 4, ns: 40_000 });
        assert_eq!(snap.queue.ns, 16_000);
        assert_eq!(snap.fail, Duration64 { count: 1, ns: 5_000 });
        let sizes: Vec<_> = snap.batch_stats.iter().map(|b| (b.batch_size, b.compute_infer.count)).collect();
        assert_eq!(sizes, vec![(1, 1), (3, 2)]);
        assert!(snap.last_inference_ms > 0);
    }
}
