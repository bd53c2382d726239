//! Latency histograms and the bench report: HDR recording, percentile summaries, the human
//! summary and the one-line JSON object (pure; no I/O).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Highest latency the histograms track (larger values are clamped to it).
const MAX_TRACKED_MICROS: u64 = 120_000_000;

/// An HDR histogram of latencies in microseconds (3 significant digits, 1 µs .. 120 s).
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
            .expect("static histogram bounds are valid");
        Self { hist }
    }

    /// Records one latency; values beyond the tracked range are clamped.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist
            .saturating_record(micros.clamp(1, MAX_TRACKED_MICROS));
    }

    /// Adds every sample of `other` to this histogram.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms share the same bounds, so addition cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The percentile summary of the recorded samples.
    pub fn summary(&self) -> Summary {
        if self.hist.is_empty() {
            return Summary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            count: self.hist.len(),
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p90_ms: ms(self.hist.value_at_quantile(0.90)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
            mean_ms: self.hist.mean() / 1000.0,
        }
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Summary {
    /// One human line: `p50 0.210 ms  p99 0.950 ms  p99.9 2.100 ms  max 3.000 ms  (n=1000)`.
    pub fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".to_string();
        }
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }

    fn insert_json(&self, map: &mut Map<String, Value>, prefix: &str, name: &str) {
        let key = |suffix: &str| format!("{prefix}{name}_{suffix}");
        map.insert(key("count"), json!(self.count));
        map.insert(key("p50_ms"), json!(round3(self.p50_ms)));
        map.insert(key("p90_ms"), json!(round3(self.p90_ms)));
        map.insert(key("p99_ms"), json!(round3(self.p99_ms)));
        map.insert(key("p999_ms"), json!(round3(self.p999_ms)));
        map.insert(key("max_ms"), json!(round3(self.max_ms)));
    }
}

/// What one bench run against one target measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `switchboard` or `baseline`.
    pub target: String,
    /// Connections that were open and joined when the load phase started.
    pub connections: u64,
    /// Members per room.
    pub room_size: u64,
    /// Length of the load phase actually run.
    pub duration: Duration,
    /// Hello→Welcome plus Join→Joined (the protocol part of joining).
    pub join: Summary,
    /// TCP connect + WebSocket upgrade + join: the whole connection setup a user waits for.
    pub setup: Summary,
    /// One relay hop: scheduled send time → receipt by the peer.
    pub relay: Summary,
    /// A whole co-host flow: invite → connected → hangup seen by the guest.
    pub flow: Summary,
    /// Relayed messages the load generator sent during the load phase.
    pub msgs_sent: u64,
    /// Relayed messages received during the load phase.
    pub msgs_received: u64,
    /// Co-host flows completed.
    pub flows: u64,
    /// Errors of every kind (connect, join, server Error frames, lost flows, timeouts).
    pub errors: u64,
    /// Errors by kind, for the human summary.
    pub error_kinds: BTreeMap<String, u64>,
    /// Server RSS growth per idle connection, when the server pid was given.
    pub server_rss_per_conn_kib: Option<f64>,
    /// The same after the server collected its garbage (Go peers, with a GC URL).
    pub server_rss_after_gc_per_conn_kib: Option<f64>,
    /// TCP sockets opened over the ramp, system-wide (both ends of every connection).
    pub kernel_tcp_sockets: Option<u64>,
    /// Kernel TCP buffer memory growth per connection, system-wide, both ends (sockstat).
    pub kernel_tcp_buffers_per_conn_kib: Option<f64>,
    /// Kernel TCP socket object memory growth per connection, system-wide, both ends (slab).
    pub kernel_tcp_objects_per_conn_kib: Option<f64>,
    /// Server CPU seconds per wall second over the load window (cores busy), when the pid
    /// was given.
    pub server_cpu_cores: Option<f64>,
    /// Server CPU seconds per wall second over the ramp (connects and joins), when the pid
    /// was given.
    pub server_ramp_cpu_cores: Option<f64>,
    /// Connections opened and joined per second over the ramp.
    pub connects_per_sec: f64,
}

impl Report {
    /// Received relay messages per second over the load phase.
    pub fn msgs_per_sec(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.msgs_received as f64 / secs
        }
    }

    /// Counts one error of `kind`.
    pub fn add_error(&mut self, kind: &str) {
        self.add_errors(kind, 1);
    }

    /// Counts `n` errors of `kind`.
    pub fn add_errors(&mut self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.errors += n;
        *self.error_kinds.entry(kind.to_string()).or_default() += n;
    }

    /// The multi-line human summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== {} ({} connections, rooms of {}, load {:.1} s) ==",
            self.target,
            self.connections,
            self.room_size,
            self.duration.as_secs_f64()
        );
        let _ = writeln!(out, "  join   {}", self.join.human());
        let _ = writeln!(out, "  setup  {}", self.setup.human());
        let _ = writeln!(out, "  relay  {}", self.relay.human());
        let _ = writeln!(out, "  flow   {}", self.flow.human());
        let _ = writeln!(
            out,
            "  relayed {} sent / {} received = {:.0} msgs/s, {} co-host flows",
            self.msgs_sent,
            self.msgs_received,
            self.msgs_per_sec(),
            self.flows
        );
        if let Some(kib) = self.server_rss_per_conn_kib {
            let _ = writeln!(out, "  server RSS per idle connection: {kib:.2} KiB");
        }
        if let Some(kib) = self.server_rss_after_gc_per_conn_kib {
            let _ = writeln!(
                out,
                "  server RSS per idle connection after a GC: {kib:.2} KiB"
            );
        }
        if let Some(kib) = self.kernel_tcp_buffers_per_conn_kib {
            let objects = self
                .kernel_tcp_objects_per_conn_kib
                .map_or("unreadable".to_string(), |k| format!("{k:.2} KiB"));
            let _ = writeln!(
                out,
                "  kernel TCP memory per connection (both ends, system-wide): buffers {kib:.2} KiB, socket objects {objects}"
            );
        }
        if self.errors == 0 {
            let _ = writeln!(out, "  errors 0");
        } else {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(kind, n)| format!("{kind}={n}"))
                .collect();
            let _ = writeln!(out, "  errors {} ({})", self.errors, kinds.join(", "));
        }
        out
    }

    /// The report's fields as JSON, every key prefixed with `prefix`.
    pub fn json_fields(&self, prefix: &str) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert(format!("{prefix}target"), json!(self.target));
        map.insert(format!("{prefix}connections"), json!(self.connections));
        map.insert(format!("{prefix}room_size"), json!(self.room_size));
        map.insert(
            format!("{prefix}duration_s"),
            json!(round3(self.duration.as_secs_f64())),
        );
        self.join.insert_json(&mut map, prefix, "join");
        self.setup.insert_json(&mut map, prefix, "setup");
        self.relay.insert_json(&mut map, prefix, "relay");
        self.flow.insert_json(&mut map, prefix, "flow");
        map.insert(format!("{prefix}msgs_sent"), json!(self.msgs_sent));
        map.insert(format!("{prefix}msgs_received"), json!(self.msgs_received));
        map.insert(
            format!("{prefix}msgs_per_sec"),
            json!(round3(self.msgs_per_sec())),
        );
        map.insert(format!("{prefix}flows"), json!(self.flows));
        map.insert(format!("{prefix}errors"), json!(self.errors));
        map.insert(
            format!("{prefix}server_rss_per_conn_kib"),
            self.server_rss_per_conn_kib
                .map_or(Value::Null, |kib| json!(round3(kib))),
        );
        let opt = |v: Option<f64>| v.map_or(Value::Null, |v| json!(round3(v)));
        map.insert(
            format!("{prefix}server_rss_after_gc_per_conn_kib"),
            opt(self.server_rss_after_gc_per_conn_kib),
        );
        map.insert(
            format!("{prefix}kernel_tcp_sockets"),
            self.kernel_tcp_sockets.map_or(Value::Null, |n| json!(n)),
        );
        map.insert(
            format!("{prefix}kernel_tcp_buffers_per_conn_kib"),
            opt(self.kernel_tcp_buffers_per_conn_kib),
        );
        map.insert(
            format!("{prefix}kernel_tcp_objects_per_conn_kib"),
            opt(self.kernel_tcp_objects_per_conn_kib),
        );
        let kinds: Map<String, Value> = self
            .error_kinds
            .iter()
            .map(|(kind, n)| (kind.clone(), json!(n)))
            .collect();
        map.insert(format!("{prefix}error_kinds"), Value::Object(kinds));
        map.insert(
            format!("{prefix}server_cpu_cores"),
            self.server_cpu_cores
                .map_or(Value::Null, |cores| json!(round3(cores))),
        );
        map.insert(
            format!("{prefix}server_ramp_cpu_cores"),
            opt(self.server_ramp_cpu_cores),
        );
        map.insert(
            format!("{prefix}connects_per_sec"),
            json!(round3(self.connects_per_sec)),
        );
        map
    }
}

/// Switchboard / baseline ratios of the headline latencies (`None` when the baseline is 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Join P50 ratio.
    pub join_p50: Option<f64>,
    /// Join P99 ratio.
    pub join_p99: Option<f64>,
    /// Relay P50 ratio.
    pub relay_p50: Option<f64>,
    /// Relay P99 ratio.
    pub relay_p99: Option<f64>,
}

impl Ratios {
    /// Ratios of `ours` over `baseline`.
    pub fn of(ours: &Report, baseline: &Report) -> Self {
        let ratio = |a: f64, b: f64| (b > 0.0 && a > 0.0).then(|| a / b);
        Self {
            join_p50: ratio(ours.join.p50_ms, baseline.join.p50_ms),
            join_p99: ratio(ours.join.p99_ms, baseline.join.p99_ms),
            relay_p50: ratio(ours.relay.p50_ms, baseline.relay.p50_ms),
            relay_p99: ratio(ours.relay.p99_ms, baseline.relay.p99_ms),
        }
    }

    /// One human line.
    pub fn human(&self) -> String {
        let show = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}x"));
        format!(
            "switchboard / baseline: join p50 {}  join p99 {}  relay p50 {}  relay p99 {}",
            show(self.join_p50),
            show(self.join_p99),
            show(self.relay_p50),
            show(self.relay_p99)
        )
    }

    fn insert_json(&self, map: &mut Map<String, Value>) {
        let value = |r: Option<f64>| r.map_or(Value::Null, |r| json!(round3(r)));
        map.insert("ratio_join_p50".into(), value(self.join_p50));
        map.insert("ratio_join_p99".into(), value(self.join_p99));
        map.insert("ratio_relay_p50".into(), value(self.relay_p50));
        map.insert("ratio_relay_p99".into(), value(self.relay_p99));
    }
}

/// The final JSON line: the main report's fields unprefixed, the baseline's (if any) prefixed
/// with `baseline_`, plus the ratios.
pub fn json_line(main: &Report, baseline: Option<&Report>) -> String {
    let mut map = main.json_fields("");
    if let Some(baseline) = baseline {
        map.extend(baseline.json_fields("baseline_"));
        Ratios::of(main, baseline).insert_json(&mut map);
    }
    Value::Object(map).to_string()
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, join_ms: u64, relay_ms: u64) -> Report {
        let mut join = Latencies::new();
        let mut relay = Latencies::new();
        for _ in 0..10 {
            join.record(Duration::from_millis(join_ms));
            relay.record(Duration::from_millis(relay_ms));
        }
        Report {
            target: target.into(),
            connections: 20,
            room_size: 2,
            duration: Duration::from_secs(2),
            join: join.summary(),
            relay: relay.summary(),
            msgs_received: 500,
            ..Report::default()
        }
    }

    #[test]
    fn percentiles_come_from_the_samples() {
        let mut lat = Latencies::new();
        for micros in 1..=1000u64 {
            lat.record(Duration::from_micros(micros));
        }
        let s = lat.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.002, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.002, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.002, "{s:?}");
    }

    #[test]
    fn empty_and_out_of_range_samples_do_not_panic() {
        assert_eq!(Latencies::new().summary(), Summary::default());
        let mut lat = Latencies::new();
        lat.record(Duration::ZERO);
        lat.record(Duration::from_secs(100_000));
        assert_eq!(lat.count(), 2);
        assert!(lat.summary().max_ms <= MAX_TRACKED_MICROS as f64 / 1000.0 * 1.001);
    }

    #[test]
    fn merge_adds_samples() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!((a.summary().max_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn json_line_has_the_required_keys() {
        let mut main = report("switchboard", 4, 2);
        main.server_rss_per_conn_kib = Some(3.25);
        main.add_error("timeout");
        let line = json_line(&main, None);
        let v: Value = serde_json::from_str(&line).unwrap();
        for key in [
            "join_p50_ms",
            "join_p99_ms",
            "join_p999_ms",
            "relay_p50_ms",
            "relay_p99_ms",
            "msgs_per_sec",
            "errors",
            "connections",
            "server_rss_per_conn_kib",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["errors"], 1);
        assert_eq!(v["connections"], 20);
        assert_eq!(v["msgs_per_sec"], 250.0);
        assert_eq!(v["server_rss_per_conn_kib"], 3.25);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn baseline_fields_and_ratios() {
        let main = report("switchboard", 4, 2);
        let base = report("baseline", 2, 1);
        let v: Value = serde_json::from_str(&json_line(&main, Some(&base))).unwrap();
        assert_eq!(v["baseline_target"], "baseline");
        assert!(v["server_rss_per_conn_kib"].is_null());
        let r = v["ratio_join_p50"].as_f64().unwrap();
        assert!((r - 2.0).abs() < 0.01, "{r}");
        let r = v["ratio_relay_p99"].as_f64().unwrap();
        assert!((r - 2.0).abs() < 0.01, "{r}");
    }

    #[test]
    fn ratio_with_empty_baseline_is_none() {
        let main = report("switchboard", 4, 2);
        let ratios = Ratios::of(&main, &Report::default());
        assert_eq!(ratios.join_p50, None);
        assert!(ratios.human().contains("n/a"));
    }

    #[test]
    fn human_summary_lists_error_kinds() {
        let mut r = report("switchboard", 1, 1);
        r.add_errors("connect", 2);
        r.add_errors("none", 0);
        let text = r.human();
        assert!(text.contains("errors 2 (connect=2)"), "{text}");
        assert!(text.contains("250 msgs/s"), "{text}");
    }
}
