//! The cluster-mode section: join latency of a node that commits every join to an fsyncing
//! etcd, beside the standalone node at the same connection count, and where the time goes
//! (the node's and etcd's histograms over each run, medians over the runs).

use std::fmt::Write as _;

use serde_json::Value;

use super::prom::{HistogramDelta, counter_delta};
use super::records::{Record, num};
use super::runs::{Runs, cell, error_notes, errors_cell, ns, stat};
use super::summary::{Stat, fmt_ratio, ratio};

/// One cluster run's bench line and its metric lines.
struct Run<'a> {
    bench: &'a Value,
    node: (&'a [String], &'a [String]),
    etcd: (&'a [String], &'a [String]),
}

fn cluster_runs(records: &[Record]) -> Vec<Run<'_>> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Cluster {
                bench,
                node_before,
                node_after,
                etcd_before,
                etcd_after,
                ..
            } => Some(Run {
                bench,
                node: (node_before, node_after),
                etcd: (etcd_before, etcd_after),
            }),
            _ => None,
        })
        .collect()
}

/// The connection count of the cluster runs.
pub fn cluster_n(records: &[Record]) -> Option<u64> {
    records.iter().find_map(|r| match r {
        Record::Cluster { n, .. } => Some(*n),
        _ => None,
    })
}

/// Median join P99 of the cluster runs, ms.
pub fn join_p99(records: &[Record]) -> Option<Stat> {
    let runs = cluster_runs(records);
    Stat::of(runs.iter().filter_map(|r| num(r.bench, "join_p99_ms")))
}

/// One row of the breakdown: a histogram's mean and P99 in ms, and its observations.
fn histogram_row(
    md: &mut String,
    what: &str,
    runs: &[Run],
    side: for<'r> fn(&Run<'r>) -> (&'r [String], &'r [String]),
    name: &str,
) {
    let deltas: Vec<HistogramDelta> = runs
        .iter()
        .filter_map(|r| {
            let (b, a) = side(r);
            HistogramDelta::between(b, a, name)
        })
        .collect();
    let ms = |f: &dyn Fn(&HistogramDelta) -> Option<f64>| {
        Stat::of(deltas.iter().filter_map(|d| f(d).map(|s| s * 1000.0)))
    };
    let _ = writeln!(
        md,
        "| {what} | `{name}` | {} | {} | {} |",
        cell(ms(&|d| Some(d.mean())), 3),
        cell(ms(&|d| d.quantile(0.99)), 3),
        cell(Stat::of(deltas.iter().map(|d| d.count)), 0),
    );
}

/// The cluster-mode section.
pub fn section(md: &mut String, records: &[Record], runs: &Runs) {
    let cluster = cluster_runs(records);
    let Some(n) = cluster_n(records) else {
        return;
    };
    let benches: Vec<&Value> = cluster.iter().map(|r| r.bench).collect();
    let standalone = runs.get("conns", "switchboard", n);
    let _ = writeln!(
        md,
        "\n### Cluster mode: join latency with durable state (ms)\n\nOne node owning all 64 \
         shards, every join committed to etcd (fsync on, group commit) before Joined; the same \
         load as the standalone rows above (open-loop arrivals at 2,000/s, then 1,000 relay \
         msgs/s and 50 flows/s). The node is pinned like every server, etcd shares the load \
         generator's CPU. Ratio: cluster ÷ standalone.\n\n\
         | node | connections | join P50 | join P99 | join P99.9 | setup P99 | P99 ÷ standalone | errors |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let row = |md: &mut String, what: &str, b: &[&Value]| {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} | {} | {} | {} | {} |",
            ns(n),
            cell(stat(b, "join_p50_ms"), 3),
            cell(stat(b, "join_p99_ms"), 3),
            cell(stat(b, "join_p999_ms"), 3),
            cell(stat(b, "setup_p99_ms"), 3),
            fmt_ratio(ratio(
                stat(b, "join_p99_ms").map(|s| s.median),
                standalone
                    .and_then(|s| stat(s, "join_p99_ms"))
                    .map(|s| s.median)
            )),
            errors_cell(b),
        );
    };
    row(md, "cluster (etcd)", &benches);
    if let Some(s) = standalone {
        row(md, "standalone", s);
    }
    md.push_str(&error_notes([("cluster".to_string(), benches.as_slice())]));
    let _ = writeln!(
        md,
        "\nWhere a join's time goes in cluster mode: the histograms' change over each run (the \
         whole run: the ramp's joins and the flows' commits), mean and P99 interpolated in \
         their buckets, medians over the runs. The server-side join runs from the Join's \
         arrival to Joined being queued and contains the room's commit wait, which contains the \
         queue wait and one etcd transaction, which contains etcd's WAL fsync.\n\n\
         | part | metric | mean (ms) | P99 (ms) | observations |\n|---|---|---|---|---|"
    );
    histogram_row(
        md,
        "server-side join",
        &cluster,
        node,
        "switchboard_join_latency_seconds",
    );
    histogram_row(
        md,
        "room commit wait",
        &cluster,
        node,
        "switchboard_room_commit_seconds",
    );
    histogram_row(
        md,
        "queue wait before the transaction",
        &cluster,
        node,
        "switchboard_store_queue_seconds",
    );
    histogram_row(
        md,
        "etcd transaction",
        &cluster,
        node,
        "switchboard_store_txn_seconds",
    );
    histogram_row(
        md,
        "etcd WAL fsync",
        &cluster,
        etcd,
        "etcd_disk_wal_fsync_duration_seconds",
    );
    histogram_row(
        md,
        "etcd backend commit",
        &cluster,
        etcd,
        "etcd_disk_backend_commit_duration_seconds",
    );
    let per_txn = Stat::of(cluster.iter().filter_map(|r| {
        let commits = counter_delta(r.node.0, r.node.1, "switchboard_store_commits_total");
        let txns = counter_delta(r.node.0, r.node.1, "switchboard_store_txns_total");
        ratio(Some(commits), Some(txns))
    }));
    let ramp_cpu = Stat::of(
        benches
            .iter()
            .filter_map(|b| num(b, "server_ramp_cpu_cores")),
    );
    let _ = writeln!(
        md,
        "\nBatching: {} room commits per etcd transaction. CPU: the node used {} of its core \
         during the ramp.",
        cell(per_txn, 1),
        cell(ramp_cpu, 2),
    );
}

/// The node's histograms of a run.
fn node<'r>(r: &Run<'r>) -> (&'r [String], &'r [String]) {
    r.node
}

/// etcd's histograms of a run.
fn etcd<'r>(r: &Run<'r>) -> (&'r [String], &'r [String]) {
    r.etcd
}
