//! etcd watches that trigger reconciles: per cluster one resilient watch over `nodes/` and
//! `acks/` (the contract's `run_watch`: consistent read, watch, resync after errors). A
//! reconcile is requested only when what the status depends on changes — which nodes are
//! registered and Ready, and which config revision each node acked — not on load updates.
//!
//! Requests go through one bounded channel into `Controller::reconcile_on`. When it is full
//! the request is dropped: reconciles already queued read everything afresh, and a cluster
//! whose config is not applied yet is re-checked on a timer anyway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::channel::mpsc;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use switchboard_contract::keys::{Ack, Key, Keyspace, NodeInfo, NodeState, Value};
use switchboard_contract::watch::{
    EtcdTiming, Update, WatchObserver, WatchRange, WatchSpec, run_watch,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::crd::SignalingCluster;

/// The object a trigger names.
pub type ClusterRef = ObjectRef<DeserializeGuard<SignalingCluster>>;

/// Pending reconcile requests the channel holds at most.
pub const CHANNEL_CAPACITY: usize = 256;

/// What the status depends on, as the watch sees it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberSummary {
    /// Registered nodes and their state.
    pub nodes: BTreeMap<String, NodeState>,
    /// Config revision acked by each node.
    pub acks: BTreeMap<String, u64>,
}

impl MemberSummary {
    /// Applies a watch update; returns whether the summary changed.
    pub fn apply(&mut self, keys: &Keyspace, update: Update) -> bool {
        let before = self.clone();
        match update {
            Update::Reset(entries) => {
                self.nodes.clear();
                self.acks.clear();
                for entry in entries {
                    self.put(keys, &entry.key, &entry.value);
                }
            }
            Update::Put(entry) => self.put(keys, &entry.key, &entry.value),
            Update::Delete(entry) => match keys.parse(&entry.key) {
                Ok(Key::Node(pod)) => {
                    self.nodes.remove(&pod);
                }
                Ok(Key::Ack(pod)) => {
                    self.acks.remove(&pod);
                }
                _ => {}
            },
        }
        *self != before
    }

    fn put(&mut self, keys: &Keyspace, key: &[u8], value: &[u8]) {
        match keys.parse(key) {
            Ok(Key::Node(pod)) => match NodeInfo::decode(value) {
                Ok(info) => {
                    self.nodes.insert(pod, info.state);
                }
                Err(_) => {
                    self.nodes.remove(&pod);
                }
            },
            Ok(Key::Ack(pod)) => match Ack::decode(value) {
                Ok(ack) => {
                    self.acks.insert(pod, ack.config_revision);
                }
                Err(_) => {
                    self.acks.remove(&pod);
                }
            },
            _ => {}
        }
    }
}

/// Requests a reconcile of `target` whenever its member summary changes.
struct MemberTrigger {
    keys: Keyspace,
    summary: MemberSummary,
    sender: mpsc::Sender<ClusterRef>,
    target: ClusterRef,
}

impl WatchObserver for MemberTrigger {
    fn update(&mut self, update: Update) {
        if self.summary.apply(&self.keys, update)
            && self.sender.try_send(self.target.clone()).is_err()
        {
            tracing::debug!("reconcile queue full; dropping a member trigger");
        }
    }
}

struct Running {
    etcd: String,
    stop: CancellationToken,
}

/// The running watches, one per cluster.
pub struct Triggers {
    sender: mpsc::Sender<ClusterRef>,
    running: Mutex<HashMap<ClusterRef, Running>>,
}

impl Triggers {
    /// No watch yet; reconcile requests come out of the returned receiver.
    pub fn new() -> (Self, mpsc::Receiver<ClusterRef>) {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        (
            Self {
                sender,
                running: Mutex::default(),
            },
            receiver,
        )
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterRef, Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the watch of `cluster` (keys `keys`) on `client`, unless one runs on the same
    /// etcd (`etcd` identifies it); a different etcd replaces the old watch.
    pub fn ensure(
        &self,
        cluster: ClusterRef,
        keys: Keyspace,
        client: etcd_client::Client,
        etcd: String,
    ) {
        let mut running = self.running();
        if running.get(&cluster).is_some_and(|r| r.etcd == etcd) {
            return;
        }
        if let Some(old) = running.remove(&cluster) {
            old.stop.cancel();
        }
        let stop = CancellationToken::new();
        let spec = WatchSpec {
            client,
            timing: EtcdTiming::default(),
            shutdown: stop.clone(),
            name: "operator_members",
        };
        let ranges = vec![
            WatchRange::prefix(keys.nodes_prefix()),
            WatchRange::prefix(keys.acks_prefix()),
        ];
        let trigger = MemberTrigger {
            keys,
            summary: MemberSummary::default(),
            sender: self.sender.clone(),
            target: cluster.clone(),
        };
        let span = tracing::info_span!(
            "member_watch",
            namespace = cluster.namespace.as_deref().unwrap_or_default(),
            cluster = %cluster.name
        );
        tokio::spawn(run_watch(spec, ranges, trigger).instrument(span));
        running.insert(cluster, Running { etcd, stop });
    }

    /// Stops the watch of `cluster` (deleted).
    pub fn stop(&self, cluster: &ClusterRef) {
        if let Some(old) = self.running().remove(cluster) {
            old.stop.cancel();
        }
    }

    /// Stops every watch (shutdown).
    pub fn stop_all(&self) {
        for (_, old) in self.running().drain() {
            old.stop.cancel();
        }
    }
}

impl Drop for Triggers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use switchboard_contract::keys::Load;
    use switchboard_contract::watch::Entry;

    use super::*;

    fn keys() -> Keyspace {
        Keyspace::new("live", "demo").unwrap()
    }

    fn node_entry(pod: &str, state: NodeState, connections: u64) -> Entry {
        let info = NodeInfo {
            url: "ws://127.0.0.1:7000/ws".into(),
            version: "default".into(),
            protocols: vec![],
            state,
            load: Load {
                connections,
                rooms: 0,
            },
            error_rate: 0.0,
            started_at_ms: 0,
            liveness: None,
        };
        Entry {
            key: keys().node(pod).unwrap().into_bytes(),
            value: info.encode(),
            mod_revision: 1,
            lease: 0,
        }
    }

    fn ack_entry(pod: &str, revision: u64) -> Entry {
        Entry {
            key: keys().ack(pod).unwrap().into_bytes(),
            value: Ack {
                config_revision: revision,
                ..Default::default()
            }
            .encode(),
            mod_revision: 1,
            lease: 0,
        }
    }

    #[test]
    fn only_membership_and_ack_changes_trigger() {
        let ks = keys();
        let mut s = MemberSummary::default();
        assert!(!s.apply(&ks, Update::Reset(vec![])));
        assert!(s.apply(
            &ks,
            Update::Reset(vec![node_entry("a", NodeState::Ready, 0)])
        ));
        // A load update is not a trigger.
        assert!(!s.apply(&ks, Update::Put(node_entry("a", NodeState::Ready, 50))));
        assert!(s.apply(&ks, Update::Put(node_entry("a", NodeState::Draining, 50))));
        assert!(s.apply(&ks, Update::Put(ack_entry("a", 1))));
        assert!(!s.apply(&ks, Update::Put(ack_entry("a", 1))));
        assert!(s.apply(&ks, Update::Put(ack_entry("a", 2))));
        assert!(s.apply(
            &ks,
            Update::Delete(Entry::deleted(ks.node("a").unwrap(), 0))
        ));
        assert!(!s.apply(
            &ks,
            Update::Delete(Entry::deleted(ks.node("a").unwrap(), 0))
        ));
        // Keys of other kinds are ignored.
        let room = Entry {
            key: ks.room(1, "r").unwrap().into_bytes(),
            value: vec![1],
            mod_revision: 2,
            lease: 0,
        };
        assert!(!s.apply(&ks, Update::Put(room)));
        // A garbage ack counts as no ack.
        let garbage = Entry {
            value: b"nope".to_vec(),
            ..ack_entry("a", 0)
        };
        assert!(s.apply(&ks, Update::Put(garbage)));
        assert!(s.acks.is_empty());
    }
}
