//! The JSON `failover-bench --kills N --json FILE` writes, and what the report takes from it.

use std::path::Path;

use serde::Deserialize;

use super::{ReportError, read};

/// Detection-to-resume latencies of one failure kind.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Samples {
    /// Every kill's latency, milliseconds.
    #[serde(default)]
    pub samples_ms: Vec<f64>,
    /// Median as failover-bench computed it.
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// P99 as failover-bench computed it.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

/// One event of the failover timeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TimelineEvent {
    /// Milliseconds since the kill.
    pub t_ms: f64,
    /// What happened (`kill`, `lease_expired`, `reassigned`, `resumed`, …).
    pub event: String,
}

/// failover-bench's whole report.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FailoverReport {
    /// Owner process killed (-9) → calls resumed elsewhere.
    #[serde(default)]
    pub process_exit: Samples,
    /// Owner goes dark (lease expires) → calls resumed elsewhere.
    #[serde(default)]
    pub lease_expiry: Samples,
    /// Time to restore 1,000 rooms on the new owner.
    #[serde(default)]
    pub restore_1000_rooms_ms: Samples,
    /// One kill's events in order.
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
}

impl FailoverReport {
    /// Parses the JSON text.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        Self::parse(&read(path)?).map_err(|reason| ReportError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The empirical CDF of `samples`: sorted values with their cumulative fraction.
    pub fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        v.into_iter()
            .enumerate()
            .map(|(i, x)| (x, (i + 1) as f64 / n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's example shape.
    const SAMPLE: &str = r#"{
      "process_exit": {"samples_ms": [310, 290, 355, 402], "p50_ms": 332.5, "p99_ms": 401},
      "lease_expiry": {"samples_ms": [5200, 5100], "p50_ms": 5150, "p99_ms": 5199},
      "restore_1000_rooms_ms": {"samples_ms": [80, 95, 90], "p50_ms": 90},
      "timeline": [{"t_ms": 0, "event": "kill"}, {"t_ms": 12, "event": "detected"},
                   {"t_ms": 290, "event": "resumed"}]
    }"#;

    #[test]
    fn parses_the_contract_json() {
        let r = FailoverReport::parse(SAMPLE).unwrap();
        assert_eq!(r.process_exit.samples_ms.len(), 4);
        assert_eq!(r.lease_expiry.p99_ms, Some(5199.0));
        assert_eq!(r.restore_1000_rooms_ms.p50_ms, Some(90.0));
        assert_eq!(r.restore_1000_rooms_ms.p99_ms, None);
        assert_eq!(r.timeline[2].event, "resumed");
        let cdf = FailoverReport::cdf(&r.process_exit.samples_ms);
        assert_eq!(cdf.first(), Some(&(290.0, 0.25)));
        assert_eq!(cdf.last(), Some(&(402.0, 1.0)));
        assert!(FailoverReport::parse("[1,2]").is_err());
        // Missing sections are empty rather than an error (an older failover-bench).
        let partial = FailoverReport::parse(r#"{"process_exit": {"samples_ms": [1]}}"#).unwrap();
        assert!(partial.timeline.is_empty());
    }
}
