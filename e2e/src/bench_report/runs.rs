//! The bench runs of `results.jsonl`, grouped by figure, target and connection count, with the
//! statistics every table takes from them: medians with [min–max] over repetitions, per-core
//! rates, and the errors each point counted (pure; no I/O).

use std::collections::BTreeMap;

use serde_json::Value;

use super::records::{Record, load1, num};
use super::summary::{Stat, fmt_num, ratio};

/// Targets in the order they are shown.
pub const TARGETS: [&str; 5] = [
    "switchboard",
    "centrifugo",
    "centrifugo-json",
    "baseline",
    "tcp",
];

/// How each target is named in tables.
pub fn label(target: &str) -> &str {
    match target {
        "centrifugo" => "centrifugo (protobuf)",
        "centrifugo-json" => "centrifugo (JSON)",
        "baseline" => "bare WebSocket relay",
        "tcp" => "raw TCP relay",
        other => other,
    }
}

/// The bench JSON lines of every run, by (figure, target, connections), in record order.
#[derive(Debug, Default)]
pub struct Runs<'a> {
    map: BTreeMap<(String, String, u64), Vec<&'a Value>>,
}

impl<'a> Runs<'a> {
    /// Groups the `run` records.
    pub fn of(records: &'a [Record]) -> Self {
        let mut map: BTreeMap<(String, String, u64), Vec<&Value>> = BTreeMap::new();
        for r in records {
            if let Record::Run {
                figure,
                target,
                n,
                bench,
                ..
            } = r
            {
                map.entry((figure.clone(), target.clone(), *n))
                    .or_default()
                    .push(bench);
            }
        }
        Self { map }
    }

    /// The runs of one point.
    pub fn get(&self, figure: &str, target: &str, n: u64) -> Option<&[&'a Value]> {
        self.map
            .get(&(figure.to_string(), target.to_string(), n))
            .map(Vec::as_slice)
    }

    /// Connection counts measured for `figure`, ascending.
    pub fn ns(&self, figure: &str) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .map
            .keys()
            .filter(|(f, _, _)| f == figure)
            .map(|(_, _, n)| *n)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The points of `figure` in table order: by connections, then target.
    pub fn points(&self, figure: &str) -> Vec<(u64, &'static str, &[&'a Value])> {
        let mut out = Vec::new();
        for n in self.ns(figure) {
            for t in TARGETS {
                if let Some(b) = self.get(figure, t, n) {
                    out.push((n, t, b));
                }
            }
        }
        out
    }

    /// Median over the repetitions of `key` at one point.
    pub fn median(&self, figure: &str, target: &str, n: u64, key: &str) -> Option<f64> {
        self.get(figure, target, n)
            .and_then(|b| stat(b, key))
            .map(|s| s.median)
    }

    /// The (only or largest) connection count of `figure` for `target`.
    pub fn n_of(&self, figure: &str, target: &str) -> Option<u64> {
        self.map
            .keys()
            .filter(|(f, t, _)| f == figure && t == target)
            .map(|(_, _, n)| *n)
            .max()
    }
}

/// Statistics of `key` over `benches`.
pub fn stat(benches: &[&Value], key: &str) -> Option<Stat> {
    Stat::of(benches.iter().filter_map(|b| num(b, key)))
}

/// Delivered msgs/s per busy server core of one run.
pub fn per_core(b: &Value) -> Option<f64> {
    ratio(num(b, "msgs_per_sec"), num(b, "server_cpu_cores"))
}

/// Statistics of the per-core rate over `benches`.
pub fn per_core_stat(benches: &[&Value]) -> Option<Stat> {
    Stat::of(benches.iter().filter_map(|b| per_core(b)))
}

/// Messages sent per second of one run's load window.
pub fn sent_per_sec(b: &Value) -> Option<f64> {
    ratio(num(b, "msgs_sent"), num(b, "duration_s"))
}

/// A median [min–max] cell, or `–`.
pub fn cell(s: Option<Stat>, digits: usize) -> String {
    s.map_or_else(|| "–".into(), |s| s.cell(digits))
}

/// The median of a statistic.
pub fn median(s: Option<Stat>) -> Option<f64> {
    s.map(|s| s.median)
}

/// A connection count.
pub fn ns(n: u64) -> String {
    fmt_num(n as f64, 0)
}

/// Errors of the repetitions of one point: `0`, or the total and how many runs had any, in
/// bold.
pub fn errors_cell(benches: &[&Value]) -> String {
    let counts: Vec<f64> = benches.iter().filter_map(|b| num(b, "errors")).collect();
    let total: f64 = counts.iter().sum();
    match counts.len() {
        0 => "–".into(),
        _ if total == 0.0 => "0".into(),
        runs => format!(
            "**{} in {} of {runs} runs**",
            fmt_num(total, 0),
            counts.iter().filter(|c| **c > 0.0).count()
        ),
    }
}

/// Every error kind counted at one point, summed over its repetitions (`kind=n, …`).
pub fn error_kinds(benches: &[&Value]) -> String {
    let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
    for b in benches {
        if let Some(map) = b.get("error_kinds").and_then(Value::as_object) {
            for (kind, n) in map {
                *kinds.entry(kind.clone()).or_default() += n.as_f64().unwrap_or(0.0);
            }
        }
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k}={}", fmt_num(*n, 0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error footnote of a table: one line per point that counted errors.
pub fn error_notes<'a>(points: impl IntoIterator<Item = (String, &'a [&'a Value])>) -> String {
    let lines: Vec<String> = points
        .into_iter()
        .filter(|(_, b)| stat(b, "errors").is_some_and(|s| s.max > 0.0))
        .map(|(what, b)| {
            let total: f64 = b.iter().filter_map(|b| num(b, "errors")).sum();
            format!(
                "- {what}: {} errors over {} runs ({})",
                fmt_num(total, 0),
                b.len(),
                error_kinds(b)
            )
        })
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!("\nErrors counted:\n\n{}\n", lines.join("\n"))
    }
}

/// The 1-minute load averages recorded with the runs (all kinds of record).
pub fn run_loads(records: &[Record]) -> Vec<f64> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Run { loadavg, .. }
            | Record::Search { loadavg, .. }
            | Record::Cluster { loadavg, .. }
            | Record::Stress { loadavg, .. } => loadavg.as_deref().and_then(load1),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(figure: &str, target: &str, n: u64, bench: Value) -> Record {
        Record::Run {
            figure: figure.into(),
            target: target.into(),
            n,
            rep: 1,
            rate: 1000.0,
            exit: 0,
            loadavg: Some("1.5 1.0 0.5".into()),
            bench,
        }
    }

    #[test]
    fn groups_points_and_counts_errors() {
        let records = vec![
            run("conns", "baseline", 1000, json!({"errors": 0})),
            run("conns", "switchboard", 1000, json!({"errors": 0, "x": 1.0})),
            run(
                "conns",
                "switchboard",
                1000,
                json!({"errors": 3, "x": 3.0, "error_kinds": {"relay_lost": 3}}),
            ),
            run("conns", "switchboard", 5000, json!({"errors": 0})),
            run("churn", "switchboard", 5000, json!({})),
        ];
        let runs = Runs::of(&records);
        assert_eq!(runs.ns("conns"), vec![1000, 5000]);
        let order: Vec<(u64, &str)> = runs
            .points("conns")
            .iter()
            .map(|(n, t, _)| (*n, *t))
            .collect();
        assert_eq!(
            order,
            vec![
                (1000, "switchboard"),
                (1000, "baseline"),
                (5000, "switchboard")
            ]
        );
        assert_eq!(runs.median("conns", "switchboard", 1000, "x"), Some(2.0));
        let sb = runs.get("conns", "switchboard", 1000).unwrap();
        assert_eq!(errors_cell(sb), "**3 in 1 of 2 runs**");
        assert_eq!(
            errors_cell(runs.get("conns", "baseline", 1000).unwrap()),
            "0"
        );
        let notes = error_notes([("switchboard at 1,000".to_string(), sb)]);
        assert!(
            notes.contains("- switchboard at 1,000: 3 errors over 2 runs (relay_lost=3)"),
            "{notes}"
        );
        assert_eq!(runs.n_of("churn", "switchboard"), Some(5000));
        assert_eq!(run_loads(&records), vec![1.5; 5]);
    }
}
