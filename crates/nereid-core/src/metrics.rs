//! Prometheus metrics with Triton's names and labels. The metrics frontend renders
//! [`registry`]; the core updates the families below.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::stats::ComputeTimes;

struct Families {
    success: IntCounterVec,
    failure: IntCounterVec,
    inference_count: IntCounterVec,
    exec_count: IntCounterVec,
    pending: IntGaugeVec,
    request_us: IntCounterVec,
    queue_us: IntCounterVec,
    input_us: IntCounterVec,
    infer_us: IntCounterVec,
    output_us: IntCounterVec,
}

static REGISTRY: OnceLock<(Registry, Families)> = OnceLock::new();

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn init() -> &'static (Registry, Families) {
    REGISTRY.get_or_init(|| {
        let r = Registry::new();
        let mv = &["model", "version"];
        let families = Families {
            success: counter(&r, "nv_inference_request_success", "Number of successful inference requests, all batch sizes", mv),
            failure: counter(&r, "nv_inference_request_failure", "Number of failed inference requests, all batch sizes", &["model", "version", "reason"]),
            inference_count: counter(&r, "nv_inference_count", "Number of inferences performed (does not include cached requests)", mv),
            exec_count: counter(&r, "nv_inference_exec_count", "Number of model executions performed (does not include cached requests)", mv),
            pending: {
                let g = IntGaugeVec::new(Opts::new("nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution per-model."), mv).expect("valid metric");
                r.register(Box::new(g.clone())).expect("metric registered once");
                g
            },
            request_us: counter(&r, "nv_inference_request_duration_us", "Cumulative inference request duration in microseconds (includes cached requests)", mv),
            queue_us: counter(&r, "nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds (includes cached requests)", mv),
            input_us: counter(&r, "nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds (does not include cached requests)", mv),
            infer_us: counter(&r, "nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds (does not include cached requests)", mv),
            output_us: counter(&r, "nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds (does not include cached requests)", mv),
        };
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(pc)).expect("process collector registered once");
        }
        (r, families)
    })
}

/// The registry the metrics endpoint renders.
pub fn registry() -> &'static Registry {
    &init().0
}

/// One model version's metric children, resolved once so the request path does no lookups.
pub(crate) struct ModelMetrics {
    labels: [String; 2],
    success: IntCounter,
    inference_count: IntCounter,
    exec_count: IntCounter,
    pending: IntGauge,
    request_us: IntCounter,
    queue_us: IntCounter,
    input_us: IntCounter,
    infer_us: IntCounter,
    output_us: IntCounter,
}

impl ModelMetrics {
    pub(crate) fn new(model: &str, version: i64) -> Self {
        let f = &init().1;
        let labels = [model.to_string(), version.to_string()];
        let l = [labels[0].as_str(), labels[1].as_str()];
        ModelMetrics {
            success: f.success.with_label_values(&l),
            inference_count: f.inference_count.with_label_values(&l),
            exec_count: f.exec_count.with_label_values(&l),
            pending: f.pending.with_label_values(&l),
            request_us: f.request_us.with_label_values(&l),
            queue_us: f.queue_us.with_label_values(&l),
            input_us: f.input_us.with_label_values(&l),
            infer_us: f.infer_us.with_label_values(&l),
            output_us: f.output_us.with_label_values(&l),
            labels,
        }
    }

    pub(crate) fn execution(&self, batch_size: u64) {
        self.exec_count.inc();
        self.inference_count.inc_by(batch_size);
    }

    pub(crate) fn success(&self, total: Duration, queue: Duration, c: ComputeTimes) {
        self.success.inc();
        self.request_us.inc_by(total.as_micros() as u64);
        self.queue_us.inc_by(queue.as_micros() as u64);
        self.input_us.inc_by(c.input.as_micros() as u64);
        self.infer_us.inc_by(c.infer.as_micros() as u64);
        self.output_us.inc_by(c.output.as_micros() as u64);
    }

    pub(crate) fn failure(&self, reason: &str) {
        init().1.failure.with_label_values(&[&self.labels[0], &self.labels[1], reason]).inc();
    }

    pub(crate) fn pending(&self, delta: i64) {
        self.pending.add(delta);
    }
}
