//! Pure lease bookkeeping (no I/O, time passed in): when a node must presume its etcd lease
//! lost, from the keepalives it sent and the acknowledgements it received.
//!
//! etcd extends a lease to `ttl` from when it *processes* a keepalive, which is never before
//! the node *sent* it. So the lease is alive at least until `send time of the last
//! acknowledged keepalive + granted ttl`; past that instant without a newer acknowledgement
//! the node may have lost it (and the operator may be reassigning its shards), so the node
//! fences itself. Keepalive responses carry no request id, but a keepalive stream answers in
//! order, so the n-th response acknowledges the n-th request still outstanding.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Keepalives that may be outstanding at once; beyond that the stream is clearly stuck and
/// sending more only queues memory, so [`LeaseTracker::can_send`] says no.
pub const MAX_OUTSTANDING: usize = 32;

/// What an acknowledgement said about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The lease was extended.
    Renewed,
    /// etcd no longer knows the lease (expired or revoked): it is lost.
    Gone,
}

/// Tracks the earliest instant the lease may expire.
#[derive(Debug, Clone)]
pub struct LeaseTracker {
    expires_at: Instant,
    outstanding: VecDeque<Instant>,
    last_ack: Instant,
}

impl LeaseTracker {
    /// A lease renewed (granted, or kept alive) by a request sent at `sent_at` for `ttl`.
    pub fn renewed(sent_at: Instant, ttl: Duration) -> Self {
        Self {
            expires_at: sent_at + ttl,
            outstanding: VecDeque::new(),
            last_ack: sent_at,
        }
    }

    /// The instant from which the lease must be presumed lost.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// When the last acknowledgement arrived (or the lease was granted).
    pub fn last_ack(&self) -> Instant {
        self.last_ack
    }

    /// Whether the lease must be presumed lost at `now`.
    pub fn is_lost(&self, now: Instant) -> bool {
        now >= self.expires_at
    }

    /// Whether another keepalive may be sent (not too many unanswered).
    pub fn can_send(&self) -> bool {
        self.outstanding.len() < MAX_OUTSTANDING
    }

    /// Records a keepalive sent at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        if self.can_send() {
            self.outstanding.push_back(now);
        }
    }

    /// Records a keepalive response received at `now` granting `ttl_secs` (≤ 0: lease gone).
    pub fn on_ack(&mut self, now: Instant, ttl_secs: i64) -> AckOutcome {
        let sent_at = self.outstanding.pop_front();
        if ttl_secs <= 0 {
            return AckOutcome::Gone;
        }
        self.last_ack = now;
        // A response we did not count a request for (cannot happen on an ordered stream)
        // proves nothing about when the lease was extended, so it changes nothing.
        if let Some(sent_at) = sent_at {
            let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
            self.expires_at = self.expires_at.max(sent_at + ttl);
        }
        AckOutcome::Renewed
    }

    /// The keepalive stream broke: its unanswered requests will never be answered.
    pub fn on_stream_reset(&mut self) {
        self.outstanding.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(2);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn lost_after_ttl_without_acks() {
        let t0 = Instant::now();
        let mut tracker = LeaseTracker::renewed(t0, TTL);
        tracker.on_sent(t0 + 500 * MS);
        tracker.on_sent(t0 + 1000 * MS);
        assert!(!tracker.is_lost(t0 + 1999 * MS));
        assert!(tracker.is_lost(t0 + 2000 * MS));
    }

    #[test]
    fn an_ack_extends_from_its_send_time_not_its_arrival() {
        let t0 = Instant::now();
        let mut tracker = LeaseTracker::renewed(t0, TTL);
        tracker.on_sent(t0 + 500 * MS);
        tracker.on_sent(t0 + 1000 * MS);
        // The first response arrives late; it acknowledges the request sent at 500 ms.
        assert_eq!(tracker.on_ack(t0 + 1500 * MS, 2), AckOutcome::Renewed);
        assert_eq!(tracker.expires_at(), t0 + 2500 * MS);
        assert_eq!(tracker.on_ack(t0 + 1600 * MS, 2), AckOutcome::Renewed);
        assert_eq!(tracker.expires_at(), t0 + 3000 * MS);
        assert_eq!(tracker.last_ack(), t0 + 1600 * MS);
    }

    #[test]
    fn zero_ttl_means_the_lease_is_gone() {
        let t0 = Instant::now();
        let mut tracker = LeaseTracker::renewed(t0, TTL);
        tracker.on_sent(t0 + 500 * MS);
        assert_eq!(tracker.on_ack(t0 + 501 * MS, 0), AckOutcome::Gone);
    }

    #[test]
    fn a_broken_stream_forgets_outstanding_requests() {
        let t0 = Instant::now();
        let mut tracker = LeaseTracker::renewed(t0, TTL);
        tracker.on_sent(t0 + 500 * MS);
        tracker.on_stream_reset();
        tracker.on_sent(t0 + 1500 * MS);
        tracker.on_ack(t0 + 1510 * MS, 2);
        assert_eq!(tracker.expires_at(), t0 + 3500 * MS);
        // A stray response with nothing outstanding proves nothing.
        tracker.on_ack(t0 + 1600 * MS, 2);
        assert_eq!(tracker.expires_at(), t0 + 3500 * MS);
    }

    #[test]
    fn outstanding_requests_are_bounded() {
        let t0 = Instant::now();
        let mut tracker = LeaseTracker::renewed(t0, TTL);
        for i in 0..100u32 {
            if tracker.can_send() {
                tracker.on_sent(t0 + i * MS);
            }
        }
        assert!(!tracker.can_send());
        tracker.on_ack(t0 + 200 * MS, 2);
        assert!(tracker.can_send());
        // The oldest request is the one acknowledged: expiry from t0, not later.
        assert_eq!(tracker.expires_at(), t0 + TTL);
    }
}
