//! The one error policy of every controller: count a failed reconcile by kind and error label,
//! log it, wait for an edit when retrying cannot help (invalid spec), and otherwise back off
//! per object — 2 s doubling to 5 minutes, forgotten on the next success (kube-runtime keeps
//! no failure count of its own).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::controller::Action;

use super::Error;
use crate::metrics::Metrics;

/// Consecutive failed reconciles per object.
#[derive(Debug)]
pub struct Failures<K> {
    counts: Mutex<HashMap<K, u32>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Failures<K> {
    /// Records one more failure of `key`; returns how many in a row.
    pub fn record(&self, key: K) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `key` (it reconciled, or it is gone).
    pub fn reset(&self, key: &K) {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// 2 s, 4 s, 8 s … capped at 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(8);
    Duration::from_secs(2u64 << exponent).min(Duration::from_secs(300))
}

/// What to do after a failed reconcile of object `key` (named `name` in logs) of `kind`.
pub fn on_error<K: Hash + Eq>(
    kind: &'static str,
    name: &str,
    key: K,
    error: &Error,
    metrics: &Metrics,
    failures: &Failures<K>,
) -> Action {
    let label = error.root_label();
    metrics
        .reconcile_errors
        .with_label_values(&[kind, label])
        .inc();
    tracing::warn!(kind, object = name, %error, label, "reconcile error");
    if !error.is_transient() {
        return Action::await_change();
    }
    Action::requeue(backoff(failures.record(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
        assert_eq!(backoff(0), Duration::from_secs(2));
    }

    #[test]
    fn transient_errors_back_off_per_object_and_count() {
        let metrics = Metrics::new();
        let failures = Failures::default();
        let transient = Error::Etcd(crate::etcd::EtcdError::NoEndpoints);
        let first = on_error("K", "a", "a", &transient, &metrics, &failures);
        let second = on_error("K", "a", "a", &transient, &metrics, &failures);
        let other = on_error("K", "b", "b", &transient, &metrics, &failures);
        assert_eq!(first, Action::requeue(Duration::from_secs(2)));
        assert_eq!(second, Action::requeue(Duration::from_secs(4)));
        assert_eq!(other, Action::requeue(Duration::from_secs(2)));
        failures.reset(&"a");
        let again = on_error("K", "a", "a", &transient, &metrics, &failures);
        assert_eq!(again, Action::requeue(Duration::from_secs(2)));
        let invalid = Error::InvalidSpec("x".into());
        assert_eq!(
            on_error("K", "a", "a", &invalid, &metrics, &failures),
            Action::await_change()
        );
        assert_eq!(
            metrics
                .reconcile_errors
                .with_label_values(&["K", "etcd"])
                .get(),
            4
        );
    }
}
