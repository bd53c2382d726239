//! Capped exponential backoff with jitter, used by every etcd reconnect loop.

use std::time::Duration;

/// Retry delays that double from `initial` up to `max`, each with up to 20% random jitter
/// added so a fleet of nodes does not reconnect in lockstep after an etcd outage.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay before the next attempt (without jitter); doubles the following one.
    pub fn next_base(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// The delay before the next attempt, with jitter.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base();
        let jitter = rand::random_range(0.0..0.2);
        base.mul_f64(1.0 + jitter)
    }

    /// Starts over from the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 2 s: an etcd restart is retried several times a second at first,
    /// and a long outage costs one attempt every ~2 s per loop.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let delays: Vec<u64> = (0..5).map(|_| b.next_base().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_base(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(100));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(100) && d < Duration::from_millis(120),
                "{d:?}"
            );
        }
    }
}
