//! The bench's shared measurement sink: latency histograms, message and flow counters and
//! error counts, written by every connection and pair task (short, uncontended locks).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::stats::{Latencies, Report};

/// What the bench measures while it runs.
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    join: Mutex<Latencies>,
    setup: Mutex<Latencies>,
    relay: Mutex<Latencies>,
    flow: Mutex<Latencies>,
    errors: Mutex<BTreeMap<String, u64>>,
    measuring: AtomicBool,
    /// Relay messages sent while measuring (open-loop stream and flows).
    pub msgs_sent: AtomicU64,
    /// Relay messages received while measuring.
    pub msgs_received: AtomicU64,
    /// Open-loop relay messages sent (for loss accounting).
    pub stream_sent: AtomicU64,
    /// Open-loop relay messages received.
    pub stream_received: AtomicU64,
    /// Co-host flows completed while measuring.
    pub flows: AtomicU64,
    /// Flow starts skipped because the pair's previous flow was still running.
    pub flows_skipped: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder whose stamp epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            join: Mutex::default(),
            setup: Mutex::default(),
            relay: Mutex::default(),
            flow: Mutex::default(),
            errors: Mutex::default(),
            measuring: AtomicBool::new(false),
            msgs_sent: AtomicU64::new(0),
            msgs_received: AtomicU64::new(0),
            stream_sent: AtomicU64::new(0),
            stream_received: AtomicU64::new(0),
            flows: AtomicU64::new(0),
            flows_skipped: AtomicU64::new(0),
        }
    }

    /// A timestamp to embed in a payload: nanoseconds from this recorder's epoch to `at`.
    pub fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time from a stamp to `now` (zero if the stamp is in the future).
    pub fn since_stamp(&self, stamp: u64, now: Instant) -> Duration {
        let sent = self.epoch + Duration::from_nanos(stamp);
        now.saturating_duration_since(sent)
    }

    /// Starts or stops counting load-phase messages and flows.
    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Release);
    }

    /// Whether the load phase is being measured.
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Acquire)
    }

    /// Records one join (protocol part) and setup (whole connect) latency.
    pub fn record_join(&self, join: Duration, setup: Duration) {
        lock(&self.join).record(join);
        lock(&self.setup).record(setup);
    }

    /// Records one open-loop relay hop latency.
    pub fn record_relay(&self, latency: Duration) {
        lock(&self.relay).record(latency);
    }

    /// Records one completed co-host flow.
    pub fn record_flow(&self, latency: Duration) {
        lock(&self.flow).record(latency);
        if self.measuring() {
            self.flows.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one relay message sent (load phase only).
    pub fn sent(&self, n: u64) {
        if self.measuring() {
            self.msgs_sent.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts one relay message received (load phase only).
    pub fn received(&self, n: u64) {
        if self.measuring() {
            self.msgs_received.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: &str) {
        *lock(&self.errors).entry(kind.to_string()).or_default() += 1;
    }

    /// Total errors so far.
    pub fn error_count(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    /// The report of everything recorded (target, shape and duration filled by the caller).
    pub fn report(
        &self,
        target: &str,
        connections: u64,
        room_size: u64,
        duration: Duration,
    ) -> Report {
        let mut report = Report {
            target: target.to_string(),
            connections,
            room_size,
            duration,
            join: lock(&self.join).summary(),
            setup: lock(&self.setup).summary(),
            relay: lock(&self.relay).summary(),
            flow: lock(&self.flow).summary(),
            msgs_sent: self.msgs_sent.load(Ordering::Relaxed),
            msgs_received: self.msgs_received.load(Ordering::Relaxed),
            flows: self.flows.load(Ordering::Relaxed),
            ..Report::default()
        };
        for (kind, n) in lock(&self.errors).iter() {
            report.add_errors(kind, *n);
        }
        let lost = self
            .stream_sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.stream_received.load(Ordering::Relaxed));
        report.add_errors("relay_lost", lost);
        report
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let rec = Recorder::new();
        let at = Instant::now() + Duration::from_millis(5);
        let stamp = rec.stamp(at);
        let later = at + Duration::from_micros(250);
        assert_eq!(rec.since_stamp(stamp, later), Duration::from_micros(250));
        assert_eq!(
            rec.since_stamp(stamp, at - Duration::from_millis(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn counts_only_while_measuring_and_reports_losses() {
        let rec = Recorder::new();
        rec.sent(5);
        rec.received(5);
        rec.record_flow(Duration::from_millis(3));
        rec.set_measuring(true);
        rec.sent(2);
        rec.received(1);
        rec.record_flow(Duration::from_millis(4));
        rec.stream_sent.store(10, Ordering::Relaxed);
        rec.stream_received.store(7, Ordering::Relaxed);
        rec.error("timeout");
        rec.record_join(Duration::from_millis(1), Duration::from_millis(2));
        let report = rec.report("switchboard", 2, 2, Duration::from_secs(1));
        assert_eq!(
            (report.msgs_sent, report.msgs_received, report.flows),
            (2, 1, 1)
        );
        assert_eq!(report.flow.count, 2);
        assert_eq!(report.join.count, 1);
        assert_eq!(report.errors, 4);
        assert_eq!(report.error_kinds["relay_lost"], 3);
        assert_eq!(rec.error_count(), 1);
    }
}
