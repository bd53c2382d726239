//! What a soak keeps of each run (one JSON line per run: its faults with their recovery, its
//! calls, its violations by kind) and the summary rendered from those lines alone, so a
//! report's numbers come from records the repo can keep (`e2e/soak --records`, `--render`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::run::RunOutcome;

/// One fault of a run as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultLine {
    /// Summary row: the kind's name, apart for the sole node of a pool.
    pub row: String,
    /// What was hit.
    pub target: String,
    /// Injected at (ms since the run started).
    pub at_ms: u64,
    /// Injection → every room committed a call transition again; `None`: not within the bound.
    pub recovery_ms: Option<u64>,
}

/// One run as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Seed of the run.
    pub seed: u64,
    /// Why the run could not run, if it could not (nothing else is then recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub could_not_run: Option<String>,
    /// Faults injected.
    pub faults: Vec<FaultLine>,
    /// Calls completed.
    pub calls_ok: u64,
    /// Calls that failed a step.
    pub calls_failed: u64,
    /// Of those, the ones a fault explains.
    pub calls_failed_explained: usize,
    /// Client records checked.
    pub records: usize,
    /// etcd writes checked.
    pub etcd_writes: usize,
    /// Violations by kind name.
    pub violations: BTreeMap<String, usize>,
}

impl RunRecord {
    /// The record of a finished run.
    pub fn of(o: &RunOutcome) -> Self {
        let mut violations = BTreeMap::new();
        for v in &o.violations {
            *violations.entry(v.kind.name().to_string()).or_default() += 1;
        }
        Self {
            seed: o.seed,
            could_not_run: None,
            faults: o
                .faults
                .iter()
                .map(|f| FaultLine {
                    row: f.row(),
                    target: f.target.clone(),
                    at_ms: f.at_ms,
                    recovery_ms: f.recovery.map(|d| d.as_millis() as u64),
                })
                .collect(),
            calls_ok: o.calls_ok,
            calls_failed: o.calls_failed,
            calls_failed_explained: o.calls_failed_explained,
            records: o.records,
            etcd_writes: o.etcd_writes,
            violations,
        }
    }

    /// The record of a run that could not run.
    pub fn could_not_run(seed: u64, why: String) -> Self {
        Self {
            seed,
            could_not_run: Some(why),
            ..Self::default()
        }
    }
}

/// Reads JSON lines of [`RunRecord`]s; a line that does not parse is an error naming it.
pub fn parse(text: &str) -> Result<Vec<RunRecord>, String> {
    crate::json_lines::parse(text)
}

/// Percentile (nearest rank) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The summary over `runs`, as Markdown.
pub fn summary(runs: &[RunRecord]) -> String {
    let checked: Vec<&RunRecord> = runs.iter().filter(|r| r.could_not_run.is_none()).collect();
    let mut by_row: BTreeMap<&str, Vec<&FaultLine>> = BTreeMap::new();
    for f in checked.iter().flat_map(|r| &r.faults) {
        by_row.entry(f.row.as_str()).or_default().push(f);
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, n) in checked.iter().flat_map(|r| &r.violations) {
        *kinds.entry(kind.as_str()).or_default() += n;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "runs: {} checked, {} could not run; calls completed {}, failed steps {} ({} explained \
         by a fault); client records checked {}, etcd writes checked {}; violations {}",
        checked.len(),
        runs.len() - checked.len(),
        checked.iter().map(|r| r.calls_ok).sum::<u64>(),
        checked.iter().map(|r| r.calls_failed).sum::<u64>(),
        checked
            .iter()
            .map(|r| r.calls_failed_explained)
            .sum::<usize>(),
        checked.iter().map(|r| r.records).sum::<usize>(),
        checked.iter().map(|r| r.etcd_writes).sum::<usize>(),
        kinds.values().sum::<usize>()
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| fault | injected | recovered | p50 ms | p90 ms | p99 ms | max ms |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (row, list) in &by_row {
        let mut times: Vec<Duration> = list
            .iter()
            .filter_map(|f| f.recovery_ms.map(Duration::from_millis))
            .collect();
        times.sort();
        let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| d.as_millis().to_string());
        let _ = writeln!(
            s,
            "| {row} | {} | {} | {} | {} | {} | {} |",
            list.len(),
            times.len(),
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 90.0)),
            ms(percentile(&times, 99.0)),
            ms(times.last().copied())
        );
    }
    if !kinds.is_empty() {
        let _ = writeln!(s, "\nviolations by kind: {kinds:?}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&v, 90.0), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn run(row: &str, recovery_ms: Option<u64>, violations: &[(&str, usize)]) -> RunRecord {
        RunRecord {
            seed: 1,
            faults: vec![FaultLine {
                row: row.into(),
                target: "default/x".into(),
                at_ms: 1,
                recovery_ms,
            }],
            calls_ok: 10,
            calls_failed: 2,
            calls_failed_explained: 2,
            violations: violations
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            ..RunRecord::default()
        }
    }

    #[test]
    fn the_summary_counts_faults_runs_and_violations_from_the_records() {
        let runs = vec![
            run("kill-9-node", Some(1500), &[("seq-gap", 1)]),
            run("kill-9-node (sole node of its pool)", None, &[]),
            RunRecord::could_not_run(3, "no Ready node".into()),
        ];
        let s = summary(&runs);
        assert!(s.contains("runs: 2 checked, 1 could not run"), "{s}");
        assert!(s.contains("failed steps 4 (4 explained by a fault)"), "{s}");
        assert!(s.contains("| kill-9-node | 1 | 1 | 1500 |"), "{s}");
        assert!(
            s.contains("| kill-9-node (sole node of its pool) | 1 | 0 | - |"),
            "{s}"
        );
        assert!(s.contains("violations 1"), "{s}");
        assert!(s.contains("seq-gap"), "{s}");
    }

    #[test]
    fn records_round_trip_through_json_lines_and_bad_lines_are_named() {
        let runs = vec![
            run("kill-9-node", Some(7), &[]),
            RunRecord::could_not_run(9, "x".into()),
        ];
        let text: String = runs
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert_eq!(parse(&text).unwrap(), runs);
        let err = parse(&format!("{text}{{\"seed\": \"x\"}}\n")).unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }
}
