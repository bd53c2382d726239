//! Shard ownership as seen by this node: an in-memory cache of `assignments/` and `nodes/`,
//! fed by one resilient watch, answering [`OwnershipView`] without any etcd round trip.
//!
//! Rules of [`OwnershipView::owner_of`]:
//! - the assignment names this node, the node is not fenced (lease live) and the shard was
//!   restored for that epoch ([`OwnershipCache::mark_restored`], done by `takeover`) →
//!   `Local { epoch }`. Until the restore finished the answer is `Unavailable`, so no join
//!   can create a room that the restore would then overwrite;
//! - the assignment names another node whose `nodes/<pod>` key is live → `Remote { url }`
//!   (also while it drains: it still owns the shard until the operator moves it);
//! - no assignment, an unreadable one, or an owner without a live registration → `Unavailable`;
//! - **handoff** (the assignment has `handoff_to: Some(dest)`, docs/architecture.md): on every
//!   node the shard is routed to its destination — `Remote { url }` with dest's advertised URL
//!   when dest is another live node, `Unavailable` (1010, retry) on dest itself (it serves only
//!   after the operator reassigns it and it restored the snapshots) or when dest has no live
//!   registration. So the old owner takes no new joins for the shard (they are redirected to
//!   where the shard is going, and the migrating members follow the same URL), and nobody
//!   redirects back to the old owner, so there is no redirect loop.
//!
//! [`OwnershipCache::local_shards`] is a watch of the shards this node holds (assignment
//! names it and it is not fenced) with their epochs: it keeps a shard through its handoff
//! until the operator reassigns it (drain waits on it, acks are pruned with it).
//! [`OwnershipCache::serve_shards`] is the same minus the shards being handed off to another
//! node whose registration (URL) is known: `takeover` restores what appears there and releases
//! what disappears, so a handoff is a release with `Migrate` to the destination's URL (and a
//! handoff called off is a fresh restore). Until the destination's registration is seen the
//! shard stays served (its rooms keep committing; new joins get 1010); if it never appears the
//! operator's deadline reassigns the shard and the epoch change releases it. [`OwnershipCache::restored_shards`] is a watch of
//! the shards restored for their current epoch (the ack's `serving`). A fenced node holds
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::health::Component;
use super::watch::{EtcdContext, run_watch};
use crate::routing::{Ownership, OwnershipView};
use switchboard_contract::keys::{Assignment, Key, Keyspace, NodeInfo, NodeState, Value};
use switchboard_contract::shard::ShardId;
use switchboard_contract::watch::{Entry, Update, WatchRange};

/// Shards this node holds, with the epoch it holds each one under.
pub type LocalShards = BTreeMap<ShardId, u64>;

/// An assignment this node holds, as the store fences on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAssignment {
    /// The epoch this node holds the shard under.
    pub epoch: u64,
    /// The exact bytes of `assignments/<shard>` when it was seen (the fencing compare value).
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Seen {
    assignment: Assignment,
    raw: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    assignments: BTreeMap<ShardId, Seen>,
    nodes: HashMap<String, NodeInfo>,
    restored: HashMap<ShardId, u64>,
    fenced: bool,
    synced: bool,
}

/// The watched ownership cache; share it as `Arc<OwnershipCache>`.
#[derive(Debug)]
pub struct OwnershipCache {
    keys: Keyspace,
    node: String,
    shard_count: u32,
    state: RwLock<State>,
    local: watch::Sender<LocalShards>,
    serve: watch::Sender<LocalShards>,
    restored: watch::Sender<LocalShards>,
}

impl OwnershipCache {
    /// An empty cache for node `node` (its pod name) in a cluster of `shard_count` shards.
    /// Until the first sync every shard is `Unavailable`.
    pub fn new(keys: Keyspace, node: impl Into<String>, shard_count: u32) -> Arc<Self> {
        Arc::new(Self {
            keys,
            node: node.into(),
            shard_count: shard_count.max(1),
            state: RwLock::new(State::default()),
            local: watch::channel(LocalShards::new()).0,
            serve: watch::channel(LocalShards::new()).0,
            restored: watch::channel(LocalShards::new()).0,
        })
    }

    /// This node's pod name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The keyspace the cache reads.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// Starts the watch of `assignments/` and `nodes/` feeding this cache.
    pub fn spawn_watch(self: &Arc<Self>, ctx: EtcdContext) -> JoinHandle<()> {
        let cache = Arc::clone(self);
        let ranges = vec![
            WatchRange::prefix(self.keys.assignments_prefix()),
            WatchRange::prefix(self.keys.nodes_prefix()),
        ];
        tokio::spawn(run_watch(
            ctx,
            ranges,
            "ownership",
            Component::Ownership,
            move |update| cache.apply(update),
        ))
    }

    /// Applies one watch update (public so tests and tools can feed the cache directly).
    pub fn apply(&self, update: Update) {
        let mut state = self.write();
        match update {
            Update::Reset(entries) => {
                state.assignments.clear();
                state.nodes.clear();
                for entry in entries {
                    self.put(&mut state, entry);
                }
                state.synced = true;
            }
            Update::Put(entry) => self.put(&mut state, entry),
            Update::Delete(entry) => match self.keys.parse(&entry.key) {
                Ok(Key::Assignment(shard)) => {
                    state.assignments.remove(&shard);
                }
                Ok(Key::Node(pod)) => {
                    state.nodes.remove(&pod);
                }
                _ => {}
            },
        }
        self.publish_local(&mut state);
    }

    fn put(&self, state: &mut State, entry: Entry) {
        match self.keys.parse(&entry.key) {
            Ok(Key::Assignment(shard)) => match Assignment::decode(&entry.value) {
                Ok(assignment) => {
                    state.assignments.insert(
                        shard,
                        Seen {
                            assignment,
                            raw: entry.value,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(shard, %error, "unreadable assignment; shard unavailable");
                    state.assignments.remove(&shard);
                }
            },
            Ok(Key::Node(pod)) => match NodeInfo::decode(&entry.value) {
                Ok(info) => {
                    state.nodes.insert(pod, info);
                }
                Err(error) => {
                    tracing::warn!(%pod, %error, "unreadable node registration; ignored");
                    state.nodes.remove(&pod);
                }
            },
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, key = %String::from_utf8_lossy(&entry.key), "unexpected key in watched range");
            }
        }
    }

    /// Fences (`true`: the lease is lost, hold nothing) or unfences this node.
    pub fn set_fenced(&self, fenced: bool) {
        let mut state = self.write();
        state.fenced = fenced;
        if fenced {
            state.restored.clear();
        }
        self.publish_local(&mut state);
    }

    /// The assignment this node holds for `shard`, if it holds it (not fenced).
    pub fn held(&self, shard: ShardId) -> Option<HeldAssignment> {
        let state = self.read();
        if state.fenced {
            return None;
        }
        state
            .assignments
            .get(&shard)
            .filter(|seen| seen.assignment.node == self.node)
            .map(|seen| HeldAssignment {
                epoch: seen.assignment.epoch,
                raw: seen.raw.clone(),
            })
    }

    /// Records that `shard` was restored under `epoch`; returns false (and records nothing)
    /// if this node no longer holds it under that epoch.
    pub fn mark_restored(&self, shard: ShardId, epoch: u64) -> bool {
        let mut state = self.write();
        let holds = !state.fenced
            && state
                .assignments
                .get(&shard)
                .is_some_and(|s| s.assignment.node == self.node && s.assignment.epoch == epoch);
        if holds {
            state.restored.insert(shard, epoch);
            self.publish_local(&mut state);
        }
        holds
    }

    /// Forgets the restore of `shard` if it was made under `epoch`: etcd refused a commit
    /// under that epoch, so the shard must not route here until the view catches up. A
    /// newer restore (the shard came back under a later epoch meanwhile) stays: the takeover
    /// would not restore it again, and the shard would answer "retry" until it moved.
    pub fn mark_stale(&self, shard: ShardId, epoch: u64) {
        let mut state = self.write();
        if state.restored.get(&shard) == Some(&epoch) {
            state.restored.remove(&shard);
            self.publish_local(&mut state);
        }
    }

    /// Forgets the restore of `shard` (it was released).
    pub fn mark_released(&self, shard: ShardId) {
        let mut state = self.write();
        if state.restored.remove(&shard).is_some() {
            self.publish_local(&mut state);
        }
    }

    /// A watch of the shards this node holds (assignment names it, not fenced), including
    /// shards being handed off until the operator reassigns them.
    pub fn local_shards(&self) -> watch::Receiver<LocalShards> {
        self.local.subscribe()
    }

    /// A watch of the shards this node should serve: held and not being handed off.
    pub fn serve_shards(&self) -> watch::Receiver<LocalShards> {
        self.serve.subscribe()
    }

    /// A watch of the shards restored here for the epoch this node holds them under.
    pub fn restored_shards(&self) -> watch::Receiver<LocalShards> {
        self.restored.subscribe()
    }

    /// The epoch under which this node holds `shard` while the shard is being handed off
    /// (its assignment names this node and has `handoff_to` set), if it is.
    pub fn handoff_epoch(&self, shard: ShardId) -> Option<u64> {
        let state = self.read();
        if state.fenced {
            return None;
        }
        state
            .assignments
            .get(&shard)
            .map(|seen| &seen.assignment)
            .filter(|a| a.node == self.node && a.handoff_to.is_some())
            .map(|a| a.epoch)
    }

    /// The current assignment of `shard`, if readable.
    pub fn assignment(&self, shard: ShardId) -> Option<Assignment> {
        self.read()
            .assignments
            .get(&shard)
            .map(|s| s.assignment.clone())
    }

    /// The live registration of `pod`, if any.
    pub fn node_info(&self, pod: &str) -> Option<NodeInfo> {
        self.read().nodes.get(pod).cloned()
    }

    /// Whether the first full read finished.
    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    // Runs under the state's write lock, so concurrent updates (the watch task and the
    // membership task's fence hook) publish in the order they changed the state.
    fn publish_local(&self, state: &mut State) {
        let local: LocalShards = if state.fenced {
            LocalShards::new()
        } else {
            state
                .assignments
                .iter()
                .filter(|(_, s)| s.assignment.node == self.node)
                .map(|(shard, s)| (*shard, s.assignment.epoch))
                .collect()
        };
        let serve: LocalShards = local
            .iter()
            .filter(|(shard, _)| {
                let dest = state
                    .assignments
                    .get(shard)
                    .and_then(|s| s.assignment.handoff_to.as_ref());
                // Released only once the destination's URL is known (the members migrate
                // there); the registration may arrive after the assignment on the watch.
                !dest.is_some_and(|d| *d != self.node && state.nodes.contains_key(d))
            })
            .map(|(shard, epoch)| (*shard, *epoch))
            .collect();
        // A restore only counts for the epoch it was done under.
        state
            .restored
            .retain(|shard, epoch| local.get(shard) == Some(epoch));
        let restored: LocalShards = state.restored.iter().map(|(s, e)| (*s, *e)).collect();
        publish(&self.local, local);
        publish(&self.serve, serve);
        publish(&self.restored, restored);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn publish(channel: &watch::Sender<LocalShards>, value: LocalShards) {
    channel.send_if_modified(|current| {
        let changed = *current != value;
        if changed {
            *current = value;
        }
        changed
    });
}

impl OwnershipView for OwnershipCache {
    fn owner_of(&self, shard: ShardId) -> Ownership {
        let state = self.read();
        let Some(seen) = state.assignments.get(&shard) else {
            return Ownership::Unavailable;
        };
        let assignment = &seen.assignment;
        if let Some(dest) = &assignment.handoff_to {
            return match state.nodes.get(dest) {
                Some(info) if *dest != self.node => Ownership::Remote {
                    url: info.url.clone(),
                },
                _ => Ownership::Unavailable,
            };
        }
        if assignment.node == self.node {
            let restored = state.restored.get(&shard) == Some(&assignment.epoch);
            if !state.fenced && restored {
                return Ownership::Local {
                    epoch: assignment.epoch,
                };
            }
            return Ownership::Unavailable;
        }
        match state.nodes.get(&assignment.node) {
            Some(info) => Ownership::Remote {
                url: info.url.clone(),
            },
            None => Ownership::Unavailable,
        }
    }

    fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// A Ready node other than this one, picked by shard so that the members of different
    /// shards spread over the fleet (the last view; it may be stale when this node is cut
    /// from etcd, and the client moves on from a node that does not answer).
    fn other_node_url(&self, shard: ShardId) -> Option<String> {
        let state = self.read();
        let mut others: Vec<(&String, &NodeInfo)> = state
            .nodes
            .iter()
            .filter(|(pod, info)| {
                **pod != self.node && info.state == NodeState::Ready && !info.url.is_empty()
            })
            .collect();
        if others.is_empty() {
            return None;
        }
        others.sort_by(|a, b| a.0.cmp(b.0));
        let at = usize::try_from(shard).unwrap_or(0) % others.len();
        Some(others[at].1.url.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_contract::keys::Load;

    fn keys() -> Keyspace {
        Keyspace::new("ns", "c").unwrap()
    }

    fn assignment_entry(shard: ShardId, node: &str, epoch: u64) -> Entry {
        Entry {
            key: keys().assignment(shard).into_bytes(),
            value: Assignment {
                node: node.into(),
                epoch,
                version: "v1".into(),
                handoff_to: None,
            }
            .encode(),
            mod_revision: 1,
            lease: 0,
        }
    }

    fn node_entry(pod: &str) -> Entry {
        Entry {
            key: keys().node(pod).unwrap().into_bytes(),
            value: NodeInfo {
                url: format!("ws://{pod}/ws"),
                version: "v1".into(),
                protocols: vec![],
                state: NodeState::Ready,
                load: Load::default(),
                error_rate: 0.0,
                started_at_ms: 0,
                liveness: None,
            }
            .encode(),
            mod_revision: 1,
            lease: 0,
        }
    }

    #[test]
    fn resolves_local_remote_and_unavailable() {
        let cache = OwnershipCache::new(keys(), "a", 4);
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
        cache.apply(Update::Reset(vec![
            assignment_entry(0, "a", 3),
            assignment_entry(1, "b", 1),
            assignment_entry(2, "c", 1),
            node_entry("a"),
            node_entry("b"),
        ]));
        assert!(cache.is_synced());
        // Held but not restored yet.
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
        assert_eq!(*cache.local_shards().borrow(), LocalShards::from([(0, 3)]));
        assert!(cache.mark_restored(0, 3));
        assert_eq!(cache.owner_of(0), Ownership::Local { epoch: 3 });
        assert_eq!(
            cache.owner_of(1),
            Ownership::Remote {
                url: "ws://b/ws".into()
            }
        );
        // c has no live registration; shard 3 has no assignment.
        assert_eq!(cache.owner_of(2), Ownership::Unavailable);
        assert_eq!(cache.owner_of(3), Ownership::Unavailable);
        cache.apply(Update::Delete(Entry::deleted(keys().node("b").unwrap(), 0)));
        assert_eq!(cache.owner_of(1), Ownership::Unavailable);
    }

    #[test]
    fn another_ready_node_is_named_for_members_that_must_leave() {
        let cache = OwnershipCache::new(keys(), "a", 4);
        assert_eq!(cache.other_node_url(0), None);
        let mut draining = node_entry("d");
        let mut info = NodeInfo::decode(&draining.value).unwrap();
        info.state = NodeState::Draining;
        draining.value = info.encode();
        cache.apply(Update::Reset(vec![
            node_entry("a"),
            node_entry("b"),
            node_entry("c"),
            draining,
        ]));
        cache.set_fenced(true);
        let picked: Vec<Option<String>> = (0..4).map(|s| cache.other_node_url(s)).collect();
        assert_eq!(
            picked,
            ["ws://b/ws", "ws://c/ws", "ws://b/ws", "ws://c/ws"]
                .map(|u| Some(u.to_string()))
                .to_vec(),
            "never itself nor a draining node; shards spread over the others"
        );
    }

    #[test]
    fn epoch_change_requires_a_new_restore() {
        let cache = OwnershipCache::new(keys(), "a", 4);
        cache.apply(Update::Reset(vec![assignment_entry(0, "a", 1)]));
        assert!(cache.mark_restored(0, 1));
        assert!(!cache.mark_restored(0, 2));
        cache.apply(Update::Put(assignment_entry(0, "a", 2)));
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
        assert_eq!(cache.held(0).unwrap().epoch, 2);
        assert!(cache.mark_restored(0, 2));
        assert_eq!(cache.owner_of(0), Ownership::Local { epoch: 2 });
    }

    #[test]
    fn fencing_drops_every_local_shard() {
        let cache = OwnershipCache::new(keys(), "a", 4);
        cache.apply(Update::Reset(vec![
            assignment_entry(0, "a", 1),
            assignment_entry(1, "a", 1),
        ]));
        cache.mark_restored(0, 1);
        let local = cache.local_shards();
        cache.set_fenced(true);
        assert!(local.borrow().is_empty());
        assert_eq!(cache.held(0), None);
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
        cache.set_fenced(false);
        assert_eq!(local.borrow().len(), 2);
        // The restore must be redone after fencing.
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
    }

    #[test]
    fn unreadable_assignments_make_the_shard_unavailable() {
        let cache = OwnershipCache::new(keys(), "a", 4);
        cache.apply(Update::Reset(vec![assignment_entry(0, "a", 1)]));
        cache.apply(Update::Put(Entry {
            key: keys().assignment(0).into_bytes(),
            value: b"{garbage".to_vec(),
            mod_revision: 2,
            lease: 0,
        }));
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
        assert!(cache.local_shards().borrow().is_empty());
        // Keys outside the known shapes are ignored, not fatal.
        cache.apply(Update::Put(Entry {
            key: b"/switchboard/ns/c/assignments/7".to_vec(),
            value: vec![],
            mod_revision: 3,
            lease: 0,
        }));
    }

    fn handoff_entry(shard: ShardId, node: &str, epoch: u64, to: &str) -> Entry {
        Entry {
            key: keys().assignment(shard).into_bytes(),
            value: Assignment {
                node: node.into(),
                epoch,
                version: "v1".into(),
                handoff_to: Some(to.into()),
            }
            .encode(),
            mod_revision: 2,
            lease: 0,
        }
    }

    #[test]
    fn a_shard_in_handoff_routes_to_its_destination_and_leaves_the_serve_set() {
        let a = OwnershipCache::new(keys(), "a", 4);
        let b = OwnershipCache::new(keys(), "b", 4);
        let c = OwnershipCache::new(keys(), "c", 4);
        let entries = || {
            vec![
                assignment_entry(0, "a", 3),
                node_entry("a"),
                node_entry("b"),
            ]
        };
        for cache in [&a, &b, &c] {
            cache.apply(Update::Reset(entries()));
        }
        assert!(a.mark_restored(0, 3));
        let (local, serve, restored) = (a.local_shards(), a.serve_shards(), a.restored_shards());
        assert_eq!(*restored.borrow(), LocalShards::from([(0, 3)]));
        assert_eq!(a.handoff_epoch(0), None);

        for cache in [&a, &b, &c] {
            cache.apply(Update::Put(handoff_entry(0, "a", 3, "b")));
        }
        let to_b = Ownership::Remote {
            url: "ws://b/ws".into(),
        };
        assert_eq!(a.owner_of(0), to_b, "no new joins on the old owner");
        assert_eq!(c.owner_of(0), to_b, "others send clients where it goes");
        assert_eq!(b.owner_of(0), Ownership::Unavailable, "no redirect back");
        // Still held (drain and fencing), no longer to be served.
        assert_eq!(*local.borrow(), LocalShards::from([(0, 3)]));
        assert!(serve.borrow().is_empty());
        assert_eq!(a.handoff_epoch(0), Some(3));
        assert_eq!(a.held(0).unwrap().epoch, 3);

        // Destination without a live registration: unavailable, never the old owner, and
        // not released until its URL is known.
        a.apply(Update::Delete(Entry::deleted(keys().node("b").unwrap(), 0)));
        assert_eq!(a.owner_of(0), Ownership::Unavailable);
        assert_eq!(*serve.borrow(), LocalShards::from([(0, 3)]));
        a.apply(Update::Put(node_entry("b")));
        assert!(serve.borrow().is_empty());

        // Called off: served again (after a fresh restore).
        a.apply(Update::Put(assignment_entry(0, "a", 3)));
        assert_eq!(*serve.borrow(), LocalShards::from([(0, 3)]));
        assert_eq!(a.handoff_epoch(0), None);

        // Reassigned: nothing held, nothing restored.
        a.mark_released(0);
        assert!(restored.borrow().is_empty());
        a.apply(Update::Put(assignment_entry(0, "b", 4)));
        assert!(local.borrow().is_empty());
        assert_eq!(a.handoff_epoch(0), None);
    }

    #[test]
    fn a_refusal_under_an_old_epoch_leaves_a_newer_restore_alone() {
        // A late refusal of an epoch-1 batch must not undo the shard's epoch-2 restore, or the
        // shard answers "retry" until it moves again.
        let cache = OwnershipCache::new(keys(), "a", 4);
        cache.apply(Update::Reset(vec![assignment_entry(0, "a", 2)]));
        assert!(cache.mark_restored(0, 2));
        cache.mark_stale(0, 1);
        assert_eq!(cache.owner_of(0), Ownership::Local { epoch: 2 });
        cache.mark_stale(0, 2);
        assert_eq!(cache.owner_of(0), Ownership::Unavailable);
    }

    #[test]
    fn reset_replaces_everything() {
        let cache = OwnershipCache::new(keys(), "a", 4);
        cache.apply(Update::Reset(vec![
            assignment_entry(0, "a", 1),
            node_entry("b"),
        ]));
        cache.apply(Update::Reset(vec![assignment_entry(1, "b", 1)]));
        assert_eq!(cache.assignment(0), None);
        assert_eq!(cache.node_info("b"), None);
        assert_eq!(cache.owner_of(1), Ownership::Unavailable);
    }
}
