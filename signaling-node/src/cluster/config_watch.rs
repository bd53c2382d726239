//! The `config` and `rollout` watch: parses and validates each new value, delivers valid ones
//! through tokio watch channels, keeps the last good value when a new one is invalid (logged
//! and counted in `switchboard_config_invalid_total{key}`), and records the revisions in
//! `acks/<pod>` (through the ack writer, which merges them with the shard entries) once the
//! node confirms it applied them ([`ConfigWatch::ack`]).
//!
//! A deleted `config` or `rollout` key also keeps the last good value: a node never falls back
//! to defaults because the operator's object vanished mid-flight.

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ack::{AckHandle, AckUpdate};
use super::health::Component;
use super::membership::MembershipError;
use super::metrics::ClusterMetrics;
use super::watch::{EtcdContext, run_watch};
use switchboard_contract::keys::{ConfigValue, Key, Keyspace, RolloutValue, Value, ValueError};
use switchboard_contract::watch::{Entry, Update, WatchRange};

/// Pure state of the watch: the last good values and what to do with an update.
#[derive(Debug)]
pub struct ConfigState {
    keys: Keyspace,
    config: watch::Sender<Option<ConfigValue>>,
    rollout: watch::Sender<Option<RolloutValue>>,
    metrics: ClusterMetrics,
}

impl ConfigState {
    /// Empty state (no value yet) for `keys`.
    pub fn new(keys: Keyspace, metrics: ClusterMetrics) -> Self {
        Self {
            keys,
            config: watch::channel(None).0,
            rollout: watch::channel(None).0,
            metrics,
        }
    }

    /// Receiver of the last good `config`.
    pub fn config(&self) -> watch::Receiver<Option<ConfigValue>> {
        self.config.subscribe()
    }

    /// Receiver of the last good `rollout`.
    pub fn rollout(&self) -> watch::Receiver<Option<RolloutValue>> {
        self.rollout.subscribe()
    }

    /// Applies a watch update.
    pub fn apply(&self, update: Update) {
        match update {
            Update::Reset(entries) => entries.into_iter().for_each(|e| self.put(e)),
            Update::Put(entry) => self.put(entry),
            Update::Delete(entry) => {
                tracing::warn!(key = %String::from_utf8_lossy(&entry.key), "config key deleted; keeping the last good value");
            }
        }
    }

    fn put(&self, entry: Entry) {
        match self.keys.parse(&entry.key) {
            Ok(Key::Config) => self.accept(
                "config",
                &self.config,
                ConfigValue::decode(&entry.value),
                |v| v.revision,
            ),
            Ok(Key::Rollout) => self.accept(
                "rollout",
                &self.rollout,
                RolloutValue::decode(&entry.value),
                |v| v.revision,
            ),
            _ => {
                tracing::debug!(key = %String::from_utf8_lossy(&entry.key), "ignoring key in config watch")
            }
        }
    }

    fn accept<T: PartialEq>(
        &self,
        name: &'static str,
        channel: &watch::Sender<Option<T>>,
        parsed: Result<T, ValueError>,
        revision: impl Fn(&T) -> u64,
    ) {
        match parsed {
            Ok(value) => {
                let new_revision = revision(&value);
                channel.send_if_modified(|current| {
                    if current.as_ref() == Some(&value) {
                        return false;
                    }
                    if let Some(old) = current
                        .as_ref()
                        .map(&revision)
                        .filter(|old| *old > new_revision)
                    {
                        tracing::warn!(
                            key = name,
                            old,
                            new = new_revision,
                            "revision went backwards; applying anyway"
                        );
                    }
                    tracing::info!(key = name, revision = new_revision, "new value");
                    *current = Some(value);
                    true
                });
            }
            Err(error) => {
                self.metrics.config_invalid.with_label_values(&[name]).inc();
                tracing::error!(key = name, %error, "invalid value; keeping the last good one");
            }
        }
    }
}

/// The running config watch.
#[derive(Debug)]
pub struct ConfigWatch {
    config: watch::Receiver<Option<ConfigValue>>,
    rollout: watch::Receiver<Option<RolloutValue>>,
    acks: AckHandle,
    task: JoinHandle<()>,
}

impl ConfigWatch {
    /// Starts watching `config` and `rollout` of `keys`; acks go through `acks` (the ack
    /// writer, under the node's lease).
    pub fn spawn(ctx: EtcdContext, keys: Keyspace, acks: AckHandle) -> Self {
        let ranges = vec![
            WatchRange::key(keys.config()),
            WatchRange::key(keys.rollout()),
        ];
        let state = ConfigState::new(keys, ctx.metrics.clone());
        let (config, rollout) = (state.config(), state.rollout());
        let task = tokio::spawn(run_watch(
            ctx,
            ranges,
            "config",
            Component::Config,
            move |update| state.apply(update),
        ));
        Self {
            config,
            rollout,
            acks,
            task,
        }
    }

    /// The last good `config` (None until one was read).
    pub fn config(&self) -> watch::Receiver<Option<ConfigValue>> {
        self.config.clone()
    }

    /// The last good `rollout` (None until one was read).
    pub fn rollout(&self) -> watch::Receiver<Option<RolloutValue>> {
        self.rollout.clone()
    }

    /// Records that the node applied `config_revision` and saw `rollout_revision` in
    /// `acks/<pod>` (other ack fields kept) and resolves once it is in etcd.
    pub async fn ack(
        &self,
        config_revision: u64,
        rollout_revision: u64,
    ) -> Result<(), MembershipError> {
        self.acks
            .update(AckUpdate::Revisions {
                config: config_revision,
                rollout: rollout_revision,
            })
            .await
    }

    /// Waits for the watch task to end (after shutdown).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: String, value: &[u8]) -> Entry {
        Entry {
            key: key.into_bytes(),
            value: value.to_vec(),
            mod_revision: 1,
            lease: 0,
        }
    }

    #[test]
    fn keeps_the_last_good_value_and_counts_invalid_ones() {
        let keys = Keyspace::new("ns", "c").unwrap();
        let metrics = ClusterMetrics::default();
        let state = ConfigState::new(keys.clone(), metrics.clone());
        let mut config = state.config();
        let rollout = state.rollout();
        state.apply(Update::Reset(vec![entry(
            keys.config(),
            br#"{"revision":1,"settings":{"a":1}}"#,
        )]));
        assert!(config.has_changed().unwrap());
        assert_eq!(config.borrow_and_update().as_ref().unwrap().revision, 1);
        state.apply(Update::Put(entry(keys.config(), b"{broken")));
        state.apply(Update::Put(entry(
            keys.config(),
            br#"{"revision":2,"settings":5}"#,
        )));
        assert!(!config.has_changed().unwrap());
        assert_eq!(config.borrow().as_ref().unwrap().revision, 1);
        assert_eq!(
            metrics.config_invalid.with_label_values(&["config"]).get(),
            2
        );
        state.apply(Update::Delete(Entry::deleted(keys.config(), 0)));
        assert_eq!(config.borrow().as_ref().unwrap().revision, 1);
        // Re-delivering the same value is not a change.
        state.apply(Update::Put(entry(
            keys.config(),
            br#"{"revision":1,"settings":{"a":1}}"#,
        )));
        assert!(!config.has_changed().unwrap());

        state.apply(Update::Put(entry(
            keys.rollout(),
            br#"{"revision":4,"weights":{"v1":60,"v2":40},"shard_versions":{"3":"v2"}}"#,
        )));
        assert_eq!(rollout.borrow().as_ref().unwrap().shard_versions[&3], "v2");
        state.apply(Update::Put(entry(
            keys.rollout(),
            br#"{"revision":5,"weights":{"v1":60}}"#,
        )));
        assert_eq!(rollout.borrow().as_ref().unwrap().revision, 4);
        assert_eq!(
            metrics.config_invalid.with_label_values(&["rollout"]).get(),
            1
        );
    }
}
