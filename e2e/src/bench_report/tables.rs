//! The tables of the generated section that come from bench runs: join and relay latency,
//! memory per idle connection, connection churn and relayed messages per core (at one offered
//! rate for every target and at each target's own highest rate). Every row shows its errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::records::{Record, num};
use super::runs::{
    Runs, TARGETS, cell, error_notes, errors_cell, label, median, ns, per_core_stat, sent_per_sec,
    stat,
};
use super::summary::{Stat, fmt_num, fmt_ratio, ratio};

/// The P99 bound of the throughput search, ms.
pub const P99_BOUND_MS: f64 = 20.0;

/// Busy cores from which a server counts as saturated (its one core is the limit).
pub const SATURATED_CORES: f64 = 0.9;

/// Join latency at every connection count.
pub fn join(md: &mut String, runs: &Runs) {
    let points = runs.points("conns");
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Join latency (ms)\n\nHello→Welcome + Join→Joined, measured by the client \
         (Centrifugo: connect + subscribe replies; the relays: hello + join messages). \
         Connections arrive open loop at 2,000/s; setup is TCP connect to Joined, counted from \
         each connection's scheduled start. Ratio: target ÷ Switchboard.\n\n\
         | target | connections | P50 | P99 | P99.9 | setup P99 | P50 ÷ SB | P99 ÷ SB | errors |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for &(n, t, b) in &points {
        let (p50, p99) = (stat(b, "join_p50_ms"), stat(b, "join_p99_ms"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(t),
            ns(n),
            cell(p50, 3),
            cell(p99, 3),
            cell(stat(b, "join_p999_ms"), 3),
            cell(stat(b, "setup_p99_ms"), 3),
            fmt_ratio(ratio(
                median(p50),
                runs.median("conns", "switchboard", n, "join_p50_ms")
            )),
            fmt_ratio(ratio(
                median(p99),
                runs.median("conns", "switchboard", n, "join_p99_ms")
            )),
            errors_cell(b),
        );
    }
    md.push_str(&error_notes(
        points
            .iter()
            .map(|(n, t, b)| (format!("{} at {}", label(t), ns(*n)), *b)),
    ));
}

/// Relay latency at the base load.
pub fn relay(md: &mut String, runs: &Runs) {
    let points = runs.points("conns");
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Relay hop latency at the base load (ms)\n\nOne relay hop, scheduled send → \
         receipt by the peer, open loop; sent and received count every relayed message (the \
         candidate stream and the flows' messages) per second of the load window. Ratio: \
         target ÷ the bare WebSocket relay, measured in the same run.\n\n\
         | target | connections | P50 | P99 | P99.9 | sent msgs/s | received msgs/s | P50 ÷ bare relay | P99 ÷ bare relay | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for &(n, t, b) in &points {
        let (p50, p99) = (stat(b, "relay_p50_ms"), stat(b, "relay_p99_ms"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(t),
            ns(n),
            cell(p50, 3),
            cell(p99, 3),
            cell(stat(b, "relay_p999_ms"), 3),
            cell(Stat::of(b.iter().filter_map(|b| sent_per_sec(b))), 0),
            cell(stat(b, "msgs_per_sec"), 0),
            fmt_ratio(ratio(
                median(p50),
                runs.median("conns", "baseline", n, "relay_p50_ms")
            )),
            fmt_ratio(ratio(
                median(p99),
                runs.median("conns", "baseline", n, "relay_p99_ms")
            )),
            errors_cell(b),
        );
    }
}

/// Memory per idle joined connection: the server's RSS, Centrifugo's after a GC, and the
/// kernel's TCP memory.
pub fn memory(md: &mut String, runs: &Runs) {
    let points = runs.points("conns");
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Memory per idle joined connection (KiB)\n\nServer: (VmRSS after − before) ÷ N, \
         1 s after the last join. Centrifugo is a Go process whose uncollected garbage counts \
         in its RSS: the column after GC reads VmRSS again 1 s after forcing a collection \
         (`/debug/pprof/heap?gc=1`). Kernel: growth of the TCP socket buffers \
         (`/proc/net/sockstat` mem) and socket objects (`/proc/slabinfo` TCP) over the ramp, \
         system-wide, so both ends of every loopback connection and anything else running are \
         in it. Ratio: server RSS ÷ the bare WebSocket relay's.\n\n\
         | target | connections | server RSS | RSS after GC | ÷ bare relay | kernel TCP buffers | kernel TCP sockets | errors |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for &(n, t, b) in &points {
        let rss = stat(b, "server_rss_per_conn_kib");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            label(t),
            ns(n),
            cell(rss, 2),
            cell(stat(b, "server_rss_after_gc_per_conn_kib"), 2),
            fmt_ratio(ratio(
                median(rss),
                runs.median("conns", "baseline", n, "server_rss_per_conn_kib")
            )),
            cell(stat(b, "kernel_tcp_buffers_per_conn_kib"), 2),
            cell(stat(b, "kernel_tcp_objects_per_conn_kib"), 2),
            errors_cell(b),
        );
    }
}

/// Connects per second of churn.
pub fn churn(md: &mut String, runs: &Runs) {
    let points = runs.points("churn");
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Connection churn (connects/s)\n\nN connections opened, authenticated and joined \
         as fast as the server takes them (256 connects in flight, closed loop), no other load. \
         Ratio: target ÷ Centrifugo (protobuf).\n\n\
         | target | connections | connects/s | ÷ Centrifugo | setup P99 (ms) | server cores busy | errors |\n\
         |---|---|---|---|---|---|---|"
    );
    for &(n, t, b) in &points {
        let s = stat(b, "connects_per_sec");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            label(t),
            ns(n),
            cell(s, 0),
            fmt_ratio(ratio(
                median(s),
                runs.median("churn", "centrifugo", n, "connects_per_sec")
            )),
            cell(stat(b, "setup_p99_ms"), 2),
            cell(stat(b, "server_ramp_cpu_cores"), 2),
            errors_cell(b),
        );
    }
    md.push_str(&error_notes(
        points
            .iter()
            .map(|(n, t, b)| (format!("{} at {}", label(t), ns(*n)), *b)),
    ));
}

/// Relayed messages per core with every target at one offered rate.
pub fn equal_rate(md: &mut String, runs: &Runs, records: &[Record]) {
    let points = runs.points("equal_rate");
    let Some(&(n, _, _)) = points.first() else {
        return;
    };
    let rate = records.iter().find_map(|r| match r {
        Record::Run { figure, rate, .. } if figure == "equal_rate" => Some(*rate),
        _ => None,
    });
    let sb = runs
        .get("equal_rate", "switchboard", n)
        .and_then(per_core_stat)
        .map(|s| s.median);
    let _ = writeln!(
        md,
        "\n### Relayed messages per core at one offered rate\n\nEvery target gets the same \
         open-loop stream, {} msgs/s on {} connections (the highest rate at which both \
         Switchboard and Centrifugo (protobuf) met P99 ≤ {P99_BOUND_MS} ms in the search \
         below). Per core = received msgs/s ÷ the server's busy cores over the load window \
         (`/proc/PID/stat`). Ratio: Switchboard ÷ target.\n\n\
         | target | received msgs/s | server cores busy | msgs/s per core | SB ÷ target | relay P50 (ms) | relay P99 (ms) | errors |\n\
         |---|---|---|---|---|---|---|---|",
        rate.map_or("?".into(), |r| fmt_num(r, 0)),
        ns(n)
    );
    for &(_, t, b) in &points {
        let pc = per_core_stat(b);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            label(t),
            cell(stat(b, "msgs_per_sec"), 0),
            cell(stat(b, "server_cpu_cores"), 2),
            cell(pc, 0),
            fmt_ratio(ratio(sb, median(pc))),
            cell(stat(b, "relay_p50_ms"), 3),
            cell(stat(b, "relay_p99_ms"), 2),
            errors_cell(b),
        );
    }
    md.push_str(&error_notes(
        points.iter().map(|(_, t, b)| (label(t).to_string(), *b)),
    ));
}

/// The search of one target for its highest rate meeting the bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    /// Highest offered rate that met the bound.
    pub rate: Option<f64>,
    /// Steps: (rate, met, server cores busy).
    pub steps: Vec<(f64, bool, Option<f64>)>,
}

/// Per target: its search steps.
pub fn searches(records: &[Record]) -> BTreeMap<String, Search> {
    let mut out: BTreeMap<String, Search> = BTreeMap::new();
    for r in records {
        if let Record::Search {
            target,
            rate,
            ok,
            bench,
            ..
        } = r
        {
            let e = out.entry(target.clone()).or_default();
            e.steps.push((*rate, *ok, num(bench, "server_cpu_cores")));
            if *ok && e.rate.is_none_or(|best| *rate > best) {
                e.rate = Some(*rate);
            }
        }
    }
    out
}

/// Relayed messages per core at each target's own highest rate meeting the bound.
pub fn saturation(md: &mut String, runs: &Runs, records: &[Record]) {
    let found = searches(records);
    if found.is_empty() {
        return;
    }
    let n = runs.n_of("throughput", "switchboard").unwrap_or(0);
    let sb = runs
        .get("throughput", "switchboard", n)
        .and_then(per_core_stat)
        .map(|s| s.median);
    let _ = writeln!(
        md,
        "\n### Relayed messages per core at each server's highest rate (P99 ≤ {P99_BOUND_MS} ms)\n\n\
         Bounded search over the offered open-loop rate (doubling from 2,000/s, then three \
         bisection steps) for the highest rate whose relay P99 stays ≤ {P99_BOUND_MS} ms with \
         no error, then repetitions at that rate. The server has one core to itself; a server \
         that used less than {SATURATED_CORES} of it at the failing step stopped meeting the \
         bound for another reason than its CPU (shown in the last column). Ratio: Switchboard ÷ \
         target.\n\n\
         | target | highest rate met | received msgs/s | server cores busy | msgs/s per core | SB ÷ target | relay P99 (ms) | errors | search steps (rate: met, cores busy) |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for t in TARGETS {
        let Some(search) = found.get(t) else {
            continue;
        };
        let reps = runs.get("throughput", t, n).unwrap_or(&[]);
        let pc = per_core_stat(reps);
        let steps: Vec<String> = search
            .steps
            .iter()
            .map(|(r, ok, cores)| {
                format!(
                    "{}: {} {}",
                    fmt_num(*r, 0),
                    if *ok { "✓" } else { "✗" },
                    cores.map_or("?".into(), |c| format!("{c:.2}"))
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(t),
            search.rate.map_or("none".into(), |r| fmt_num(r, 0)),
            cell(stat(reps, "msgs_per_sec"), 0),
            cell(stat(reps, "server_cpu_cores"), 2),
            cell(pc, 0),
            fmt_ratio(ratio(sb, median(pc))),
            cell(stat(reps, "relay_p99_ms"), 2),
            if reps.is_empty() {
                "–".into()
            } else {
                errors_cell(reps)
            },
            steps.join(", ")
        );
    }
}

/// The first failing step's busy cores per target (for the saturation note).
pub fn failing_cores(records: &[Record]) -> BTreeMap<String, Option<f64>> {
    searches(records)
        .into_iter()
        .filter_map(|(t, s)| {
            s.steps
                .iter()
                .find(|(_, ok, _)| !ok)
                .map(|(_, _, cores)| (t, *cores))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn searches_keep_steps_and_the_best_rate() {
        let step = |rate: f64, ok: bool, cores: f64| Record::Search {
            target: "switchboard".into(),
            rate,
            ok,
            loadavg: None,
            bench: json!({"server_cpu_cores": cores}),
        };
        let records = vec![
            step(2000.0, true, 0.2),
            step(4000.0, false, 0.95),
            step(3000.0, true, 0.6),
        ];
        let s = &searches(&records)["switchboard"];
        assert_eq!(s.rate, Some(3000.0));
        assert_eq!(s.steps.len(), 3);
        assert_eq!(failing_cores(&records)["switchboard"], Some(0.95));
    }
}
