//! Python models' custom metrics (`pb_utils.MetricFamily` / `Metric`): counters, gauges and
//! histograms kept here and shown on /metrics through the core's Prometheus registry.
//!
//! A family is shared by every stub that names it (with the same kind and description), as is a
//! metric with the same labels. What a stub created goes away when the stub lets go of it or
//! exits; a family leaves /metrics with its last user.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use nereid_core::{Error, Result};
use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn parse(kind: &str) -> Result<Kind> {
        match kind {
            "COUNTER" => Ok(Kind::Counter),
            "GAUGE" => Ok(Kind::Gauge),
            "HISTOGRAM" => Ok(Kind::Histogram),
            _ => Err(Error::invalid_arg(format!("unknown metric kind '{kind}'"))),
        }
    }
}

type Labels = Vec<(String, String)>;

pub struct Family {
    desc: Desc,
    kind: Kind,
    state: Mutex<FamilyState>,
}

#[derive(Default)]
struct FamilyState {
    users: usize,
    metrics: BTreeMap<Labels, Metric>,
}

struct Metric {
    users: usize,
    value: f64,
    /// Histograms: bucket upper bounds, counts per bucket (not cumulative) and the count.
    buckets: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
}

/// Every family, by name.
pub struct CustomMetrics {
    families: Mutex<HashMap<String, Arc<Family>>>,
}

pub fn custom_metrics() -> &'static CustomMetrics {
    static METRICS: OnceLock<CustomMetrics> = OnceLock::new();
    METRICS.get_or_init(|| CustomMetrics { families: Mutex::new(HashMap::new()) })
}

struct Registered(Arc<Family>);

impl Collector for Registered {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let family = &self.0;
        let mut out = proto::MetricFamily::default();
        out.set_name(family.desc.fq_name.clone());
        out.set_help(family.desc.help.clone());
        out.set_field_type(match family.kind {
            Kind::Counter => proto::MetricType::COUNTER,
            Kind::Gauge => proto::MetricType::GAUGE,
            Kind::Histogram => proto::MetricType::HISTOGRAM,
        });
        let metrics = family.state.lock().metrics.iter().map(|(labels, m)| family.render(labels, m)).collect();
        out.set_metric(metrics);
        vec![out]
    }
}

impl Family {
    fn render(&self, labels: &Labels, metric: &Metric) -> proto::Metric {
        let pairs = labels
            .iter()
            .map(|(k, v)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name(k.clone());
                pair.set_value(v.clone());
                pair
            })
            .collect();
        let mut out = proto::Metric::from_label(pairs);
        match self.kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(metric.value);
                out.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(metric.value);
                out.set_gauge(g);
            }
            Kind::Histogram => {
                let mut h = proto::Histogram::default();
                h.set_sample_sum(metric.value);
                h.set_sample_count(metric.count);
                let mut cumulative = 0;
                let buckets = metric
                    .buckets
                    .iter()
                    .zip(&metric.counts)
                    .map(|(&bound, &count)| {
                        cumulative += count;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                h.set_bucket(buckets);
                out.set_histogram(h);
            }
        }
        out
    }
}

impl CustomMetrics {
    /// The family `name`, created (and shown on /metrics) if new.
    pub fn family(&self, name: &str, description: &str, kind: Kind) -> Result<Arc<Family>> {
        let mut families = self.families.lock();
        if let Some(family) = families.get(name) {
            if family.kind != kind || family.desc.help != description {
                return Err(Error::invalid_arg(format!(
                    "metric family '{name}' already exists with a different kind or description"
                )));
            }
            family.state.lock().users += 1;
            return Ok(family.clone());
        }
        let desc = Desc::new(name.to_string(), description.to_string(), Vec::new(), HashMap::new())
            .map_err(|e| Error::invalid_arg(format!("invalid metric family '{name}': {e}")))?;
        let family = Arc::new(Family { desc, kind, state: Mutex::new(FamilyState { users: 1, ..Default::default() }) });
        nereid_core::metrics::registry()
            .register(Box::new(Registered(family.clone())))
            .map_err(|e| Error::invalid_arg(format!("metric family '{name}' cannot be registered: {e}")))?;
        families.insert(name.to_string(), family.clone());
        Ok(family)
    }

    /// A metric of `family` with `labels`, shared with any other user of the same labels.
    pub fn metric(&self, family: &Family, labels: Labels, buckets: Option<Vec<f64>>) -> Result<Labels> {
        let mut labels = labels;
        labels.sort();
        let buckets = match (family.kind, buckets) {
            (Kind::Histogram, Some(b)) if b.windows(2).all(|w| w[0] < w[1]) => b,
            (Kind::Histogram, _) => {
                return Err(Error::invalid_arg("a histogram metric needs increasing bucket boundaries"))
            }
            (_, Some(_)) => return Err(Error::invalid_arg("only histogram metrics take buckets")),
            (_, None) => Vec::new(),
        };
        let mut state = family.state.lock();
        let metric = state.metrics.entry(labels.clone()).or_insert_with(|| Metric {
            users: 0,
            value: 0.0,
            counts: vec![0; buckets.len()],
            buckets,
            count: 0,
        });
        metric.users += 1;
        Ok(labels)
    }

    pub fn update(&self, family: &Family, labels: &Labels, action: &str, value: f64) -> Result<()> {
        let mut state = family.state.lock();
        let metric = state.metrics.get_mut(labels).ok_or_else(|| Error::internal("the metric was deleted"))?;
        match (family.kind, action) {
            (Kind::Counter, "increment") if value < 0.0 => {
                Err(Error::invalid_arg("a counter metric cannot be incremented by a negative value"))
            }
            (Kind::Counter | Kind::Gauge, "increment") => {
                metric.value += value;
                Ok(())
            }
            (Kind::Gauge, "set") => {
                metric.value = value;
                Ok(())
            }
            (Kind::Histogram, "observe") => {
                metric.value += value;
                metric.count += 1;
                if let Some(i) = metric.buckets.iter().position(|&bound| value <= bound) {
                    metric.counts[i] += 1;
                }
                Ok(())
            }
            (kind, action) => Err(Error::unsupported(format!("{kind:?} metrics do not support '{action}'"))),
        }
    }

    pub fn value(&self, family: &Family, labels: &Labels) -> Result<f64> {
        let state = family.state.lock();
        let metric = state.metrics.get(labels).ok_or_else(|| Error::internal("the metric was deleted"))?;
        match family.kind {
            Kind::Histogram => Err(Error::unsupported("histogram metrics do not support 'value'")),
            _ => Ok(metric.value),
        }
    }

    pub fn release_metric(&self, family: &Arc<Family>, labels: &Labels) {
        let mut state = family.state.lock();
        if let Some(metric) = state.metrics.get_mut(labels) {
            metric.users -= 1;
            if metric.users == 0 {
                state.metrics.remove(labels);
            }
        }
        drop(state);
        self.drop_unused(family);
    }

    pub fn release_family(&self, family: &Arc<Family>) {
        family.state.lock().users -= 1;
        self.drop_unused(family);
    }

    fn drop_unused(&self, family: &Arc<Family>) {
        let mut families = self.families.lock();
        let state = family.state.lock();
        if state.users == 0 && state.metrics.is_empty() {
            drop(state);
            if families.get(&family.desc.fq_name).is_some_and(|f| Arc::ptr_eq(f, family)) {
                families.remove(&family.desc.fq_name);
                let _ = nereid_core::metrics::registry().unregister(Box::new(Registered(family.clone())));
            }
        }
    }
}

/// What one stub created, by the ids it knows them by; released when the stub exits.
#[derive(Default)]
pub struct StubMetrics {
    next: u64,
    families: HashMap<u64, Arc<Family>>,
    metrics: HashMap<u64, (Arc<Family>, Labels)>,
}

impl StubMetrics {
    pub fn add_family(&mut self, family: Arc<Family>) -> u64 {
        self.next += 1;
        self.families.insert(self.next, family);
        self.next
    }

    pub fn family(&self, id: u64) -> Result<Arc<Family>> {
        self.families.get(&id).cloned().ok_or_else(|| Error::internal("unknown metric family"))
    }

    pub fn add_metric(&mut self, family: Arc<Family>, labels: Labels) -> u64 {
        self.next += 1;
        self.metrics.insert(self.next, (family, labels));
        self.next
    }

    pub fn metric(&self, id: u64) -> Result<(Arc<Family>, Labels)> {
        self.metrics.get(&id).cloned().ok_or_else(|| Error::internal("unknown metric"))
    }

    pub fn remove_family(&mut self, id: u64) {
        if let Some(family) = self.families.remove(&id) {
            custom_metrics().release_family(&family);
        }
    }

    pub fn remove_metric(&mut self, id: u64) {
        if let Some((family, labels)) = self.metrics.remove(&id) {
            custom_metrics().release_metric(&family, &labels);
        }
    }
}

impl Drop for StubMetrics {
    fn drop(&mut self) {
        let metrics: Vec<u64> = self.metrics.keys().copied().collect();
        metrics.into_iter().for_each(|id| self.remove_metric(id));
        let families: Vec<u64> = self.families.keys().copied().collect();
        families.into_iter().for_each(|id| self.remove_family(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &nereid_core::metrics::registry().gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn metrics_are_shown_until_their_stub_lets_go() {
        let metrics = custom_metrics();
        let mut stub = StubMetrics::default();
        let family = metrics.family("test_requests_total", "Requests seen", Kind::Counter).unwrap();
        let fid = stub.add_family(family.clone());
        let labels = metrics.metric(&family, vec![("model".into(), "m".into())], None).unwrap();
        let mid = stub.add_metric(family.clone(), labels.clone());
        metrics.update(&family, &labels, "increment", 2.0).unwrap();
        assert!(metrics.update(&family, &labels, "increment", -1.0).is_err());
        assert!(metrics.update(&family, &labels, "set", 1.0).is_err());
        assert_eq!(metrics.value(&family, &labels).unwrap(), 2.0);
        assert!(rendered().contains("test_requests_total{model=\"m\"} 2"));
        assert!(metrics.family("test_requests_total", "other text", Kind::Counter).is_err());
        let (_, same) = stub.metric(mid).unwrap();
        assert_eq!(same, labels);
        stub.remove_family(fid);
        assert!(rendered().contains("test_requests_total"), "metrics keep their family");
        drop(stub);
        assert!(!rendered().contains("test_requests_total"));
    }

    #[test]
    fn histograms_count_into_buckets() {
        let metrics = custom_metrics();
        let mut stub = StubMetrics::default();
        let family = metrics.family("test_latency", "Latency", Kind::Histogram).unwrap();
        stub.add_family(family.clone());
        assert!(metrics.metric(&family, vec![], None).is_err());
        let labels = metrics.metric(&family, vec![], Some(vec![1.0, 10.0])).unwrap();
        stub.add_metric(family.clone(), labels.clone());
        for v in [0.5, 5.0, 50.0] {
            metrics.update(&family, &labels, "observe", v).unwrap();
        }
        let text = rendered();
        assert!(text.contains("test_latency_bucket{le=\"1\"} 1"), "{text}");
        assert!(text.contains("test_latency_bucket{le=\"10\"} 2"), "{text}");
        assert!(text.contains("test_latency_count 3"), "{text}");
        assert!(text.contains("test_latency_sum 55.5"), "{text}");
    }
}
