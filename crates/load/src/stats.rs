//! Figures per operation: latencies (every sample kept; a run has at most a few hundred
//! thousand), answers by status, transport errors.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

#[derive(Default)]
struct Op {
    millis: Vec<f64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

#[derive(Default)]
pub struct Stats {
    ops: Mutex<BTreeMap<&'static str, Op>>,
}

/// One operation's figures, as printed and written to the JSON results.
#[derive(Debug, Serialize)]
pub struct OpFigures {
    pub op: &'static str,
    pub count: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
}

/// The `p`-quantile of sorted samples (nearest rank); NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Stats {
    pub fn record(&self, op: &'static str, status: u16, took: Duration) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let o = ops.entry(op).or_default();
        o.millis.push(took.as_secs_f64() * 1000.0);
        *o.statuses.entry(status).or_default() += 1;
    }

    /// A latency measured elsewhere (the checkout's 202 to confirmed).
    pub fn sample(&self, op: &'static str, millis: f64) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(op).or_default().millis.push(millis);
    }

    pub fn transport_error(&self, op: &'static str) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.entry(op).or_default().transport_errors += 1;
    }

    /// Every operation's figures over a run of `seconds`.
    pub fn figures(&self, seconds: f64) -> Vec<OpFigures> {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.iter()
            .map(|(op, o)| {
                let mut sorted = o.millis.clone();
                sorted.sort_by(f64::total_cmp);
                OpFigures {
                    op,
                    count: sorted.len(),
                    per_sec: sorted.len() as f64 / seconds.max(0.001),
                    p50_ms: percentile(&sorted, 0.50),
                    p90_ms: percentile(&sorted, 0.90),
                    p99_ms: percentile(&sorted, 0.99),
                    max_ms: sorted.last().copied().unwrap_or(f64::NAN),
                    statuses: o.statuses.clone(),
                    transport_errors: o.transport_errors,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.50), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&samples, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn figures_count_statuses_and_errors_per_operation() {
        let stats = Stats::default();
        stats.record("view", 200, Duration::from_millis(2));
        stats.record("view", 404, Duration::from_millis(4));
        stats.transport_error("view");
        let figures = stats.figures(2.0);
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].count, 2);
        assert_eq!(figures[0].per_sec, 1.0);
        assert_eq!(figures[0].statuses[&404], 1);
        assert_eq!(figures[0].transport_errors, 1);
    }
}
