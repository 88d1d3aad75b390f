//! The core's statistics snapshot as Triton's `ModelStatistics` message.

use nereid_core::server::ModelStatistics;
use nereid_core::stats::Duration64;
use nereid_proto::inference as wire;

fn duration(d: Duration64) -> Option<wire::StatisticDuration> {
    Some(wire::StatisticDuration { count: d.count, ns: d.ns })
}

pub fn to_wire(m: ModelStatistics) -> wire::ModelStatistics {
    let s = m.stats;
    wire::ModelStatistics {
        name: m.name,
        version: m.version.to_string(),
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        // Triton always sends every duration, cache ones included (zero without a cache).
        inference_stats: Some(wire::InferStatistics {
            success: duration(s.success),
            fail: duration(s.fail),
            queue: duration(s.queue),
            compute_input: duration(s.compute_input),
            compute_infer: duration(s.compute_infer),
            compute_output: duration(s.compute_output),
            cache_hit: duration(Duration64::default()),
            cache_miss: duration(Duration64::default()),
        }),
        batch_stats: s
            .batch_stats
            .into_iter()
            .map(|b| wire::InferBatchStatistics {
                batch_size: b.batch_size,
                compute_input: duration(b.compute_input),
                compute_infer: duration(b.compute_infer),
                compute_output: duration(b.compute_output),
            })
            .collect(),
        memory_usage: Vec::new(),
        response_stats: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_core::stats::{BatchStats, StatsSnapshot};

    #[test]
    fn every_counter_is_carried() {
        let d = |count, ns| Duration64 { count, ns };
        let stats = StatsSnapshot {
            last_inference_ms: 1_700_000_000_000,
            inference_count: 7,
            execution_count: 3,
            success: d(4, 40),
            fail: d(1, 5),
            queue: d(4, 16),
            compute_input: d(4, 1),
            compute_infer: d(4, 2),
            compute_output: d(4, 3),
            batch_stats: vec![BatchStats {
                batch_size: 3,
                compute_input: d(2, 6),
                compute_infer: d(2, 7),
                compute_output: d(2, 8),
            }],
        };
        let w = to_wire(ModelStatistics { name: "m".into(), version: 2, stats });
        assert_eq!((w.name.as_str(), w.version.as_str()), ("m", "2"));
        assert_eq!((w.last_inference, w.inference_count, w.execution_count), (1_700_000_000_000, 7, 3));
        let i = w.inference_stats.unwrap();
        let pair = |s: Option<wire::StatisticDuration>| s.map(|s| (s.count, s.ns)).unwrap();
        assert_eq!(pair(i.success), (4, 40));
        assert_eq!(pair(i.fail), (1, 5));
        assert_eq!(pair(i.queue), (4, 16));
        assert_eq!(
            (pair(i.compute_input), pair(i.compute_infer), pair(i.compute_output)),
            ((4, 1), (4, 2), (4, 3))
        );
        assert_eq!((pair(i.cache_hit), pair(i.cache_miss)), ((0, 0), (0, 0)));
        let b = &w.batch_stats[0];
        assert_eq!(b.batch_size, 3);
        assert_eq!(
            (pair(b.compute_input), pair(b.compute_infer), pair(b.compute_output)),
            ((2, 6), (2, 7), (2, 8))
        );
    }
}
