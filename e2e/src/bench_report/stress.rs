//! The bad-input section: the node's RSS under slow consumers, a connect flood and twice its
//! connection limit (`bench --stress`), as a table and one plot of the RSS curves.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::ReportError;
use super::plots::{self, Series};
use super::records::{Record, num};
use super::summary::fmt_num;

/// What each scenario is, for the table.
fn describe(scenario: &str) -> &'static str {
    match scenario {
        "slow_consumer" => {
            "pairs in calls; each host sends 30 KiB offers at 40/s while its guest stops reading"
        }
        "connect_flood" => {
            "connections opened 1,000 at a time: a third TCP only, a third upgraded but silent, \
             a third joined; held past the 10 s handshake and Hello timeouts"
        }
        "over_limit" => "twice the node's maxConnections try to join and stay",
        _ => "",
    }
}

/// `k=v, …` of a JSON object of numbers.
fn pairs(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", fmt_num(v.as_f64().unwrap_or(0.0), 0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The bad-input section and its plot `stress_rss.svg`.
pub fn section(
    md: &mut String,
    records: &[Record],
    img_dir: &Path,
    img_rel: &str,
) -> Result<(), ReportError> {
    let runs: Vec<(&Value, &str)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Stress {
                report, serve_args, ..
            } => Some((report, serve_args.as_str())),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "\n### Bad input: the node's memory\n\nOne run each against a fresh node (default \
         settings unless shown), its VmRSS sampled every 100 ms. Outcomes are what the \
         clients saw (`closed_<code>`: the server closed with that code; `held`: still open at \
         the end); counters are the node's own, changed over the run.\n\n\
         | scenario | node settings | connections | RSS start → peak → end (MiB) | outcomes | node counters |\n\
         |---|---|---|---|---|---|"
    );
    let mib = |v: Option<f64>| v.map_or("?".into(), |k| format!("{:.1}", k / 1024.0));
    let mut series = Vec::new();
    for (report, serve_args) in &runs {
        let scenario = report
            .get("scenario")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let _ = writeln!(
            md,
            "| {scenario}: {} | {} | {} | {} → {} → {} | {} | {} |",
            describe(scenario),
            if serve_args.is_empty() {
                "default".to_string()
            } else {
                format!("`{serve_args}`")
            },
            num(report, "connections").map_or("?".into(), |n| fmt_num(n, 0)),
            mib(num(report, "rss_start_kib")),
            mib(num(report, "rss_peak_kib")),
            mib(num(report, "rss_end_kib")),
            pairs(report.get("outcomes")),
            pairs(report.get("counters")),
        );
        let points: Vec<(f64, f64)> = report
            .get("samples")
            .and_then(Value::as_array)
            .map(|samples| {
                samples
                    .iter()
                    .filter_map(|s| Some((s.get(0)?.as_f64()?, s.get(1)?.as_f64()? / 1024.0)))
                    .collect()
            })
            .unwrap_or_default();
        if !points.is_empty() {
            series.push(Series {
                name: scenario.to_string(),
                points,
            });
        }
    }
    plots::lines(
        &img_dir.join("stress_rss.svg"),
        "Node RSS under bad input",
        "seconds",
        "MiB",
        &series,
    )?;
    let _ = writeln!(
        md,
        "\n![Node RSS under bad input]({img_rel}/stress_rss.svg)"
    );
    Ok(())
}
