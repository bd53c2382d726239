//! Per-connection and per-node limits: the message rate limiter (token bucket with flood
//! detection), the bad-frame streak, and the connection limiter taken before `accept`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What the rate limiter decided about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Process it.
    Allow,
    /// Drop it; `notify` is true for the first drop of an episode (send Error 1007 once).
    Limited {
        /// Whether to tell the client.
        notify: bool,
    },
    /// The client keeps flooding: close the connection (1008).
    Flood,
}

/// Token bucket: `rate` messages per second sustained, `burst` at once. Drops are counted
/// until the bucket refills completely; more than `flood_after` of them is a flood.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    dropped: u32,
    notified: bool,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
            dropped: 0,
            notified: false,
        }
    }

    /// Takes a token for a message arriving at `now`.
    pub fn check(&mut self, now: Instant, rate: u32, burst: u32, flood_after: u32) -> Rate {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = f64::from(burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(burst);
        if self.tokens >= burst {
            // Calm again: forget past drops.
            self.dropped = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.notified = false;
            return Rate::Allow;
        }
        self.dropped = self.dropped.saturating_add(1);
        if self.dropped > flood_after {
            return Rate::Flood;
        }
        let notify = !self.notified;
        self.notified = true;
        Rate::Limited { notify }
    }
}

/// Consecutive bad frames; a good frame resets it.
#[derive(Debug, Clone, Copy, Default)]
pub struct BadFrames(u32);

impl BadFrames {
    /// Records a bad frame; true when `max` in a row were seen.
    pub fn bad(&mut self, max: u32) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0 >= max
    }

    /// Records a good frame.
    pub fn good(&mut self) {
        self.0 = 0;
    }
}

/// Counts live connections against a limit read at each acquisition (so it can be
/// hot-reloaded); waiters are woken as slots free up.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    active: AtomicUsize,
    freed: Notify,
}

/// One connection slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<ConnLimiter>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.active.fetch_sub(1, Ordering::SeqCst);
        self.limiter.freed.notify_one();
    }
}

impl ConnLimiter {
    /// A limiter with no connections.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connections holding a slot.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// A slot if fewer than `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut current = self.active.load(Ordering::SeqCst);
        loop {
            if current >= max {
                return None;
            }
            match self.active.compare_exchange(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Some(Slot {
                        limiter: self.clone(),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Waits for a slot under `max()` (re-read on every wake-up).
    pub async fn acquire(self: &Arc<Self>, max: impl Fn() -> usize) -> Slot {
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.try_acquire(max()) {
                return slot;
            }
            // Also re-check now and then: a raised limit frees no slot to notify about.
            let _ = tokio::time::timeout(Duration::from_millis(250), freed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_limits_then_floods() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        for _ in 0..3 {
            assert_eq!(b.check(t0, 1, 3, 4), Rate::Allow);
        }
        assert_eq!(b.check(t0, 1, 3, 4), Rate::Limited { notify: true });
        for _ in 0..3 {
            assert_eq!(b.check(t0, 1, 3, 4), Rate::Limited { notify: false });
        }
        assert_eq!(b.check(t0, 1, 3, 4), Rate::Flood);
    }

    #[test]
    fn bucket_refills_and_forgets_drops() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, t0);
        b.check(t0, 10, 2, 5);
        b.check(t0, 10, 2, 5);
        assert!(matches!(b.check(t0, 10, 2, 5), Rate::Limited { .. }));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.check(t1, 10, 2, 5), Rate::Allow);
        assert_eq!(b.check(t1, 10, 2, 5), Rate::Limited { notify: true });
        // A full refill resets the drop count.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(b.check(t2, 10, 2, 1), Rate::Allow);
        assert_eq!(b.check(t2, 10, 2, 1), Rate::Allow);
        assert_eq!(b.check(t2, 10, 2, 1), Rate::Limited { notify: true });
        assert_eq!(b.check(t2, 10, 2, 1), Rate::Flood);
    }

    #[test]
    fn bad_frame_streak() {
        let mut b = BadFrames::default();
        assert!(!b.bad(3));
        assert!(!b.bad(3));
        b.good();
        assert!(!b.bad(3));
        assert!(!b.bad(3));
        assert!(b.bad(3));
    }

    #[tokio::test]
    async fn limiter_counts_and_waits() {
        let l = ConnLimiter::new();
        let a = l.try_acquire(2).unwrap();
        let _b = l.try_acquire(2).unwrap();
        assert!(l.try_acquire(2).is_none());
        assert_eq!(l.active(), 2);
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(|| 2).await })
        };
        drop(a);
        let _c = waiter.await.unwrap();
        assert_eq!(l.active(), 2);
        assert!(l.try_acquire(3).is_some(), "a raised limit applies at once");
    }
}
