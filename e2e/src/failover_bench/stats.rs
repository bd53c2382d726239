//! Sample summaries for the benchmark report: percentiles (nearest rank), medians, min/max.

use serde_json::{Value, json};

/// The `p`-th percentile (0–100) of `samples` by nearest rank; None when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Min, P50, P99, max and mean of a sample set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 99th percentile (nearest rank; the maximum below 100 samples).
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarizes `samples`; None when empty.
    pub fn of(samples: &[f64]) -> Option<Self> {
        Some(Self {
            count: samples.len(),
            min: percentile(samples, 0.0)?,
            p50: percentile(samples, 50.0)?,
            p99: percentile(samples, 99.0)?,
            max: percentile(samples, 100.0)?,
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        })
    }
}

/// `{"samples_ms": [...], "p50_ms", "p99_ms", "min_ms", "max_ms", "mean_ms"}` (nulls when
/// there are no samples).
pub fn samples_json(samples: &[f64]) -> Value {
    let s = Summary::of(samples);
    json!({
        "samples_ms": samples.iter().map(|v| round(*v)).collect::<Vec<_>>(),
        "p50_ms": s.map(|s| round(s.p50)),
        "p99_ms": s.map(|s| round(s.p99)),
        "min_ms": s.map(|s| round(s.min)),
        "max_ms": s.map(|s| round(s.max)),
        "mean_ms": s.map(|s| round(s.mean)),
    })
}

/// Rounds to 0.1 ms.
pub fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
        let few = [3.0, 1.0, 2.0];
        assert_eq!(percentile(&few, 50.0), Some(2.0));
        assert_eq!(percentile(&few, 99.0), Some(3.0));
    }

    #[test]
    fn summary_and_json() {
        let s = Summary::of(&[10.0, 30.0, 20.0]).unwrap();
        assert_eq!((s.min, s.p50, s.max, s.mean), (10.0, 20.0, 30.0, 20.0));
        let v = samples_json(&[1.04, 2.0]);
        assert_eq!(v["samples_ms"], json!([1.0, 2.0]));
        assert_eq!(v["p50_ms"], json!(1.0));
        assert!(samples_json(&[])["p99_ms"].is_null());
    }
}
