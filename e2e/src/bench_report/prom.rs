//! Prometheus text lines taken before and after a run, turned into what happened during it:
//! a histogram's count, mean and quantiles (interpolated inside buckets, as PromQL's
//! `histogram_quantile` does) and a counter's increase (pure; no I/O).

use std::collections::BTreeMap;

/// The samples of `lines` (`name{labels} value`), by series.
fn samples(lines: &[String]) -> BTreeMap<String, f64> {
    lines
        .iter()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.trim().rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// What one histogram recorded between two scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramDelta {
    /// Observations.
    pub count: f64,
    /// Sum of the observations.
    pub sum: f64,
    /// Cumulative counts by upper bound (`le`), ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

impl HistogramDelta {
    /// Histogram `name` (summed over its other labels) between `before` and `after`; `None`
    /// when it recorded nothing.
    pub fn between(before: &[String], after: &[String], name: &str) -> Option<Self> {
        let (b, a) = (samples(before), samples(after));
        let delta = |series: &str| {
            a.get(series).copied().unwrap_or(0.0) - b.get(series).copied().unwrap_or(0.0)
        };
        let sum_of = |suffix: &str| -> f64 {
            a.keys()
                .filter(|s| {
                    s.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix(suffix))
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                })
                .map(|s| delta(s))
                .sum()
        };
        let count = sum_of("_count");
        if count <= 0.0 {
            return None;
        }
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        let prefix = format!("{name}_bucket{{");
        for series in a.keys().filter(|s| s.starts_with(&prefix)) {
            let Some(le) = label(series, "le") else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            let entry = by_le.entry(bound.to_bits()).or_insert((bound, 0.0));
            entry.1 += delta(series);
        }
        let mut buckets: Vec<(f64, f64)> = by_le.into_values().collect();
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        Some(Self {
            count,
            sum: sum_of("_sum"),
            buckets,
        })
    }

    /// Mean observation.
    pub fn mean(&self) -> f64 {
        self.sum / self.count
    }

    /// The `q` quantile, linearly interpolated inside its bucket (the bucket's upper bound
    /// when it is the last finite one).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let inside = cumulative - lower.1;
                let frac = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * frac);
            }
            lower = (bound, cumulative);
        }
        None
    }
}

/// The increase of counter `name` (summed over its labels) between two scrapes.
pub fn counter_delta(before: &[String], after: &[String], name: &str) -> f64 {
    let (b, a) = (samples(before), samples(after));
    a.iter()
        .filter(|(s, _)| s.as_str() == name || s.starts_with(&format!("{name}{{")))
        .map(|(s, v)| v - b.get(s).copied().unwrap_or(0.0))
        .sum()
}

/// The value of label `key` in a series name.
fn label<'a>(series: &'a str, key: &str) -> Option<&'a str> {
    let labels = series.split_once('{')?.1.trim_end_matches('}');
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn histogram_deltas_and_quantiles() {
        let before = lines(
            "h_bucket{le=\"0.001\"} 10\nh_bucket{le=\"0.002\"} 10\nh_bucket{le=\"+Inf\"} 10\nh_sum 0.005\nh_count 10",
        );
        let after = lines(
            "# TYPE h histogram\nh_bucket{le=\"0.001\"} 60\nh_bucket{le=\"0.002\"} 100\nh_bucket{le=\"+Inf\"} 110\nh_sum 0.2\nh_count 110",
        );
        let h = HistogramDelta::between(&before, &after, "h").unwrap();
        assert_eq!(h.count, 100.0);
        assert!((h.mean() - 0.00195).abs() < 1e-9);
        // 50 of 100 are ≤ 1 ms: the median is the first bucket's upper bound.
        assert!((h.quantile(0.5).unwrap() - 0.001).abs() < 1e-12);
        // 75th: halfway through the (1 ms, 2 ms] bucket (40 observations, rank 75).
        assert!((h.quantile(0.75).unwrap() - 0.0016250).abs() < 1e-9);
        // 99th falls in +Inf: reported as the last finite bound.
        assert_eq!(h.quantile(0.99), Some(0.002));
        assert!(HistogramDelta::between(&after, &after, "h").is_none());
        assert!(HistogramDelta::between(&before, &after, "missing").is_none());
    }

    #[test]
    fn labelled_histograms_sum_and_counters_increase() {
        let before = lines("c_total{a=\"x\"} 1\nc_total{a=\"y\"} 2\nc_totalx 5");
        let after = lines("c_total{a=\"x\"} 4\nc_total{a=\"y\"} 3\nc_totalx 50");
        assert_eq!(counter_delta(&before, &after, "c_total"), 4.0);
        let after = lines(
            "h_bucket{op=\"a\",le=\"1\"} 2\nh_bucket{op=\"b\",le=\"1\"} 3\nh_bucket{op=\"a\",le=\"+Inf\"} 2\nh_bucket{op=\"b\",le=\"+Inf\"} 3\nh_count{op=\"a\"} 2\nh_count{op=\"b\"} 3\nh_sum{op=\"a\"} 1\nh_sum{op=\"b\"} 1",
        );
        let h = HistogramDelta::between(&[], &after, "h").unwrap();
        assert_eq!(h.count, 5.0);
        assert_eq!(h.buckets, vec![(1.0, 5.0), (f64::INFINITY, 5.0)]);
    }
}
