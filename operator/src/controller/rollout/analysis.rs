//! Rollback analysis (pure), kept in the rollout's status (`status.analysis`) so an operator
//! restart or a new leader carries on where the last one stopped.
//!
//! Every `sampleIntervalSeconds` each version's error rate (from the nodes' reports or a
//! Prometheus query) is folded into a running mean per version. The verdict waits until
//! `windowSeconds` passed since the analysis started and every watched version (one gaining
//! weight over the last stable weights) has `minSamples` samples. A watched version then
//! breaches when its mean is above `maxErrorRate` and, with `maxIncreaseOverStable`, above the
//! stable versions' mean by more than that. Samples are taken at a fixed cadence, not per
//! reconcile, so the status write that records one does not cause the next.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{AnalysisStatus, RollbackPolicy, VersionSamples};

/// A version whose error rate is over the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The version.
    pub version: String,
    /// Its mean error rate over the analysis.
    pub rate: f64,
    /// The stable versions' mean, when compared with it.
    pub stable: Option<f64>,
}

/// What the analysis says now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not judged yet (window or samples missing); the message says what it waits for.
    Pending(String),
    /// Judged clean.
    Clean,
    /// A watched version breached.
    Breach(Breach),
}

/// Seconds from `a` to `b` (0 when `b` is earlier).
fn seconds_between(a: &Time, b: &Time) -> u64 {
    u64::try_from((b.0.as_second() - a.0.as_second()).max(0)).unwrap_or(0)
}

/// The analysis of `generation` after looking at `rates` at `now`: a fresh one when the
/// generation changed, one more sample per version when the interval passed, else unchanged.
pub fn sample(
    previous: Option<&AnalysisStatus>,
    generation: Option<i64>,
    watched: &BTreeSet<String>,
    rates: &BTreeMap<String, f64>,
    source: &str,
    policy: &RollbackPolicy,
    now: &Time,
) -> AnalysisStatus {
    let mut analysis = match previous {
        Some(a) if a.generation == generation && a.started_at.is_some() => a.clone(),
        _ => AnalysisStatus {
            generation,
            started_at: Some(now.clone()),
            source: source.to_string(),
            ..Default::default()
        },
    };
    let interval = u64::try_from(policy.sample_interval_seconds.max(1)).unwrap_or(1);
    let due = analysis
        .last_sample_at
        .as_ref()
        .is_none_or(|last| seconds_between(last, now) >= interval);
    if !due {
        return analysis;
    }
    analysis.last_sample_at = Some(now.clone());
    analysis.source = source.to_string();
    for (name, rate) in rates {
        let rate = rate.clamp(0.0, 1.0);
        match analysis.versions.iter_mut().find(|v| &v.name == name) {
            Some(v) => {
                v.samples = v.samples.saturating_add(1);
                v.mean_error_rate += (rate - v.mean_error_rate) / f64::from(v.samples);
                // Four decimals: enough to read, and the status does not churn on noise.
                v.mean_error_rate = (v.mean_error_rate * 10_000.0).round() / 10_000.0;
            }
            None => analysis.versions.push(VersionSamples {
                name: name.clone(),
                watched: false,
                samples: 1,
                mean_error_rate: (rate * 10_000.0).round() / 10_000.0,
            }),
        }
    }
    for v in &mut analysis.versions {
        v.watched = watched.contains(&v.name);
    }
    analysis.versions.sort_by(|a, b| a.name.cmp(&b.name));
    analysis
}

/// The verdict on `analysis` at `now` under `policy`.
pub fn verdict(analysis: &AnalysisStatus, policy: &RollbackPolicy, now: &Time) -> Verdict {
    let window = u64::try_from(policy.window_seconds.max(1)).unwrap_or(1);
    let elapsed = analysis
        .started_at
        .as_ref()
        .map_or(0, |start| seconds_between(start, now));
    let min = policy.min_samples.max(1);
    let watched: Vec<&VersionSamples> = analysis.versions.iter().filter(|v| v.watched).collect();
    let short: Vec<String> = watched
        .iter()
        .filter(|v| v.samples < min)
        .map(|v| format!("{} {}/{min}", v.name, v.samples))
        .collect();
    if elapsed < window || !short.is_empty() || watched.is_empty() {
        let mut waiting = Vec::new();
        if elapsed < window {
            waiting.push(format!("{elapsed} of {window} s"));
        }
        if watched.is_empty() {
            waiting.push("samples of the new versions".to_string());
        }
        if !short.is_empty() {
            waiting.push(format!("samples {}", short.join(", ")));
        }
        return Verdict::Pending(format!("analysing: waiting for {}", waiting.join(", ")));
    }
    let stable: Vec<&VersionSamples> = analysis
        .versions
        .iter()
        .filter(|v| !v.watched && v.samples > 0)
        .collect();
    let stable_mean = (!stable.is_empty()).then(|| {
        let total: f64 = stable
            .iter()
            .map(|v| v.mean_error_rate * f64::from(v.samples))
            .sum();
        let count: f64 = stable.iter().map(|v| f64::from(v.samples)).sum();
        total / count
    });
    for v in watched {
        if v.mean_error_rate <= policy.max_error_rate {
            continue;
        }
        let worse_than_stable = match (policy.max_increase_over_stable, stable_mean) {
            (Some(margin), Some(stable)) => v.mean_error_rate - stable > margin,
            _ => true,
        };
        if worse_than_stable {
            return Verdict::Breach(Breach {
                version: v.name.clone(),
                rate: v.mean_error_rate,
                stable: policy.max_increase_over_stable.and(stable_mean),
            });
        }
    }
    Verdict::Clean
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_750_000_000 + second).unwrap())
    }

    fn policy() -> RollbackPolicy {
        RollbackPolicy {
            max_error_rate: 0.05,
            window_seconds: 60,
            min_samples: 3,
            sample_interval_seconds: 10,
            max_increase_over_stable: None,
            prometheus: None,
        }
    }

    fn rates(v1: f64, v2: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("v1".to_string(), v1), ("v2".to_string(), v2)])
    }

    fn run(policy: &RollbackPolicy, v1: f64, v2: f64, until: i64) -> AnalysisStatus {
        let watched = BTreeSet::from(["v2".to_string()]);
        let mut analysis: Option<AnalysisStatus> = None;
        for second in 0..=until {
            let next = sample(
                analysis.as_ref(),
                Some(2),
                &watched,
                &rates(v1, v2),
                "nodes",
                policy,
                &at(second),
            );
            analysis = Some(next);
        }
        analysis.unwrap()
    }

    #[test]
    fn samples_follow_the_interval_and_survive_a_restart() {
        let p = policy();
        let a = run(&p, 0.0, 0.2, 25);
        // Seconds 0, 10, 20: three samples, whatever the reconcile rate.
        let v2 = a.versions.iter().find(|v| v.name == "v2").unwrap();
        assert_eq!((v2.samples, v2.watched), (3, true));
        assert!((v2.mean_error_rate - 0.2).abs() < 1e-9);
        // What the status holds is all a new leader needs: it continues the same analysis.
        let stored: AnalysisStatus =
            serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        let watched = BTreeSet::from(["v2".to_string()]);
        let later = sample(
            Some(&stored),
            Some(2),
            &watched,
            &rates(0.0, 0.2),
            "nodes",
            &p,
            &at(30),
        );
        assert_eq!(
            later
                .versions
                .iter()
                .find(|v| v.name == "v2")
                .unwrap()
                .samples,
            4
        );
        assert_eq!(later.started_at, Some(at(0)));
        // A new generation starts over.
        let fresh = sample(
            Some(&stored),
            Some(3),
            &watched,
            &rates(0.0, 0.2),
            "nodes",
            &p,
            &at(30),
        );
        assert_eq!(fresh.started_at, Some(at(30)));
        assert_eq!(
            fresh
                .versions
                .iter()
                .find(|v| v.name == "v2")
                .unwrap()
                .samples,
            1
        );
    }

    #[test]
    fn judged_only_after_the_window_and_the_minimum_samples() {
        let mut p = policy();
        let a = run(&p, 0.0, 0.2, 59);
        assert!(
            matches!(verdict(&a, &p, &at(59)), Verdict::Pending(m) if m.contains("59 of 60 s"))
        );
        let a = run(&p, 0.0, 0.2, 60);
        assert_eq!(
            verdict(&a, &p, &at(60)),
            Verdict::Breach(Breach {
                version: "v2".into(),
                rate: 0.2,
                stable: None
            })
        );
        p.min_samples = 10;
        assert!(matches!(verdict(&a, &p, &at(60)), Verdict::Pending(m) if m.contains("v2 7/10")));
        let clean = run(&policy(), 0.0, 0.01, 60);
        assert_eq!(verdict(&clean, &policy(), &at(60)), Verdict::Clean);
    }

    #[test]
    fn the_comparison_with_the_stable_version() {
        let mut p = policy();
        p.max_increase_over_stable = Some(0.05);
        // Everyone fails alike (an etcd outage): no rollback.
        let shared = run(&p, 0.3, 0.32, 60);
        assert_eq!(verdict(&shared, &p, &at(60)), Verdict::Clean);
        // The new version alone is bad: rollback, with the stable mean recorded.
        let alone = run(&p, 0.01, 0.3, 60);
        match verdict(&alone, &p, &at(60)) {
            Verdict::Breach(b) => {
                assert_eq!(b.version, "v2");
                assert!((b.stable.unwrap() - 0.01).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
    }
}
