//! Whether this node can reach etcd: one flag per background component, combined into a
//! single `healthy` watch that the server uses to refuse state changes (1010) and to mark
//! itself not ready.

use std::sync::{Arc, Mutex};

use prometheus::IntGauge;
use tokio::sync::watch;

/// A background component whose etcd connection counts towards health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The lease keepalive stream (`nodes/<pod>` registration).
    Membership,
    /// The `assignments/` and `nodes/` watch (shard ownership).
    Ownership,
    /// The `config` / `rollout` watch.
    Config,
}

impl Component {
    const ALL: [Component; 3] = [
        Component::Membership,
        Component::Ownership,
        Component::Config,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Shared health state: every registered component must be up for the node to be healthy.
///
/// Components that are not registered (not started in this process) are ignored, so a test
/// can run the store and the ownership watch without membership.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<Flags>>,
    tx: Arc<watch::Sender<bool>>,
    gauge: Option<IntGauge>,
}

#[derive(Debug, Default)]
struct Flags {
    registered: [bool; 3],
    up: [bool; 3],
}

impl Flags {
    fn healthy(&self) -> bool {
        let mut any = false;
        for c in Component::ALL {
            if self.registered[c.index()] {
                any = true;
                if !self.up[c.index()] {
                    return false;
                }
            }
        }
        any
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Health with no component registered yet (reports unhealthy).
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self {
            inner: Arc::new(Mutex::new(Flags::default())),
            tx: Arc::new(tx),
            gauge: None,
        }
    }

    /// Health that also sets `gauge` to 1 / 0 (`switchboard_etcd_healthy`).
    pub fn with_gauge(gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            gauge: Some(gauge),
            ..Self::new()
        }
    }

    /// Registers `component` as down; it counts from now on.
    pub fn register(&self, component: Component) {
        self.update(|flags| {
            flags.registered[component.index()] = true;
            flags.up[component.index()] = false;
        });
    }

    /// Records whether `component` currently reaches etcd.
    pub fn set(&self, component: Component, up: bool) {
        self.update(|flags| flags.up[component.index()] = up);
    }

    /// Stops counting `component` (it shut down cleanly).
    pub fn unregister(&self, component: Component) {
        self.update(|flags| flags.registered[component.index()] = false);
    }

    /// True when every registered component is up.
    pub fn is_healthy(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver of the combined flag (`false` while etcd is unreachable).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    fn update(&self, change: impl FnOnce(&mut Flags)) {
        // Publishing under the lock keeps the flag and the gauge in the order of updates.
        let mut flags = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut flags);
        let healthy = flags.healthy();
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::from(healthy));
        }
        self.tx.send_if_modified(|current| {
            let changed = *current != healthy;
            *current = healthy;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_when_every_registered_component_is_up() {
        let health = Health::new();
        assert!(!health.is_healthy());
        health.register(Component::Membership);
        health.register(Component::Ownership);
        health.set(Component::Membership, true);
        assert!(!health.is_healthy());
        health.set(Component::Ownership, true);
        assert!(health.is_healthy());
        health.set(Component::Membership, false);
        assert!(!health.is_healthy());
        health.unregister(Component::Membership);
        assert!(health.is_healthy());
    }

    #[tokio::test]
    async fn subscribers_see_changes() {
        let health = Health::new();
        let mut rx = health.subscribe();
        health.register(Component::Config);
        health.set(Component::Config, true);
        rx.changed().await.unwrap();
        assert!(*rx.borrow_and_update());
    }
}
