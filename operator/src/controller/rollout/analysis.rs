//! Rollback analysis (pure): per-version error-rate samples over a sliding window, and the
//! decision that a version breached `strategy.rollback.maxErrorRate`.
//!
//! A version breaches when the mean of its samples over the last `windowSeconds` is above the
//! limit *and* the analysis has run for at least one whole window — one bad sample right
//! after a change does not roll back, a sustained error rate does. Samples live in memory: an
//! operator restart (or a new leader) starts the window again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Most samples kept (a bound on memory whatever the window and reconcile rate).
pub const MAX_SAMPLES: usize = 4096;

/// Error-rate samples of one rollout generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The `metadata.generation` the samples belong to.
    pub generation: Option<i64>,
    /// When this generation's analysis started.
    pub started: Instant,
    samples: VecDeque<(Instant, BTreeMap<String, f64>)>,
}

/// A version whose error rate is over the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The version.
    pub version: String,
    /// Its mean error rate over the window.
    pub rate: f64,
}

impl Analysis {
    /// A fresh analysis of `generation` starting at `now`.
    pub fn new(generation: Option<i64>, now: Instant) -> Self {
        Self {
            generation,
            started: now,
            samples: VecDeque::new(),
        }
    }

    /// Records the per-version error rates seen at `now`, dropping samples older than
    /// `window`.
    pub fn record(&mut self, now: Instant, rates: BTreeMap<String, f64>, window: Duration) {
        self.samples.push_back((now, rates));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
            || self.samples.len() > MAX_SAMPLES
        {
            self.samples.pop_front();
        }
    }

    /// Drops every sample (nothing is being analysed; keeps idle entries small).
    pub fn clear(&mut self) {
        self.samples = VecDeque::new();
    }

    /// Whether a whole window has passed since the analysis started.
    pub fn window_elapsed(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.started) >= window
    }

    /// Mean error rate of `version` over the samples of the last `window`.
    pub fn mean(&self, version: &str, now: Instant, window: Duration) -> Option<f64> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= window)
            .filter_map(|(_, rates)| rates.get(version).copied())
            .collect();
        if values.is_empty() {
            return None;
        }
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }

    /// The first of `versions` (by name) whose windowed mean is above `max`, once a whole
    /// window has been observed.
    pub fn breach(
        &self,
        versions: &BTreeSet<String>,
        now: Instant,
        window: Duration,
        max: f64,
    ) -> Option<Breach> {
        if !self.window_elapsed(now, window) {
            return None;
        }
        versions.iter().find_map(|version| {
            let rate = self.mean(version, now, window)?;
            (rate > max).then(|| Breach {
                version: version.clone(),
                rate,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(v2: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("v1".to_string(), 0.0), ("v2".to_string(), v2)])
    }

    #[test]
    fn a_sustained_error_rate_breaches_after_one_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let watched = BTreeSet::from(["v2".to_string()]);
        let mut analysis = Analysis::new(Some(2), t0);
        for second in 0..=10 {
            let now = t0 + Duration::from_secs(second);
            analysis.record(now, rates(0.2), window);
            let breach = analysis.breach(&watched, now, window, 0.05);
            if second < 10 {
                assert_eq!(breach, None, "second {second}: the window is not full yet");
            } else {
                let breach = breach.expect("breached");
                assert_eq!(breach.version, "v2");
                assert!((breach.rate - 0.2).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn a_short_spike_is_averaged_away_and_old_samples_expire() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let watched = BTreeSet::from(["v2".to_string()]);
        let mut analysis = Analysis::new(None, t0);
        analysis.record(t0, rates(0.9), window);
        for second in 1..=10 {
            analysis.record(t0 + Duration::from_secs(second), rates(0.0), window);
        }
        let now = t0 + Duration::from_secs(10);
        // 0.9 once among 11 samples: mean ≈ 0.08.
        assert_eq!(analysis.breach(&watched, now, window, 0.1), None);
        assert!(analysis.breach(&watched, now, window, 0.05).is_some());
        // Eleven seconds later the spike is out of the window.
        analysis.record(t0 + Duration::from_secs(11), rates(0.0), window);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(analysis.mean("v2", later, window), Some(0.0));
        // Versions not watched never breach; versions without samples neither.
        let v1 = BTreeSet::from(["v1".to_string(), "v9".to_string()]);
        assert_eq!(analysis.breach(&v1, later, window, 0.0), None);
    }

    #[test]
    fn samples_are_bounded() {
        let t0 = Instant::now();
        let mut analysis = Analysis::new(None, t0);
        for i in 0..(MAX_SAMPLES as u64 + 100) {
            analysis.record(
                t0 + Duration::from_millis(i),
                rates(0.0),
                Duration::from_secs(3600),
            );
        }
        assert_eq!(analysis.samples.len(), MAX_SAMPLES);
    }
}
