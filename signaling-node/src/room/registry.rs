//! The registry of live rooms on this node (room id → actor handle) and the session index
//! (session id → user and rooms) that resume uses. Also the shard-level operations cluster
//! mode drives: [`RoomRegistry::restore_shard`] on takeover, [`RoomRegistry::release_shard`]
//! on handoff, and [`RoomRegistry::drain`] on shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::config::SettingsWatch;
use crate::metrics::Metrics;
use crate::routing::{Ownership, SharedOwnership};
use crate::store::RoomStore;
use switchboard_contract::shard::{ShardId, shard_of};

use super::actor::Actor;
use super::handle::RoomHandle;
use super::shared::{SessionEntry, Shared, lock};
use super::snapshot::{self, SnapshotError};
use super::state::{Limits, RoomState};

/// Why a room could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The node is draining: no new rooms (1010).
    #[error("node is draining")]
    Draining,
    /// The node has its maximum of live rooms (1010).
    #[error("node has the maximum of {0} rooms")]
    TooManyRooms(usize),
    /// The room's shard is being handed off or restored here (1010, retry).
    #[error("shard {0} is moving; retry shortly")]
    ShardMoving(ShardId),
    /// Another node owns the shard (Redirect) or nobody does (1010).
    #[error("shard {shard} is not owned by this node")]
    NotOwner {
        /// The shard.
        shard: ShardId,
        /// The ownership view's answer.
        ownership: Ownership,
    },
}

/// Why a shard restore was incomplete.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The node is draining.
    #[error("node is draining")]
    Draining,
    /// Some snapshots could not be decoded; the others were restored.
    #[error("restored {restored} rooms; {} snapshots failed: {}", failures.len(), failures.iter().map(|(r, e)| format!("{r}: {e}")).collect::<Vec<_>>().join("; "))]
    Corrupt {
        /// Rooms restored.
        restored: usize,
        /// Rooms that failed, with the reason.
        failures: Vec<(String, SnapshotError)>,
    },
}

/// Live rooms of this node. Cheap to clone.
#[derive(Clone)]
pub struct RoomRegistry {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RoomRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomRegistry")
            .field("rooms", &self.room_count())
            .finish_non_exhaustive()
    }
}

impl RoomRegistry {
    /// An empty registry whose rooms commit to `store`, check `ownership`, read limits from
    /// `settings` and identify as `node` in snapshots.
    pub fn new(
        store: Arc<dyn RoomStore>,
        ownership: SharedOwnership,
        settings: SettingsWatch,
        metrics: Metrics,
        node: impl Into<String>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(
                store,
                ownership,
                settings,
                metrics,
                node.into(),
            )),
        }
    }

    /// Number of shards rooms hash into (from the ownership view).
    pub fn shard_count(&self) -> u32 {
        self.shared.ownership.shard_count()
    }

    /// The shard of `room`.
    pub fn shard_of(&self, room: &str) -> ShardId {
        shard_of(room, self.shard_count())
    }

    /// The ownership view rooms are checked against.
    pub fn ownership(&self) -> &SharedOwnership {
        &self.shared.ownership
    }

    /// Who serves `room` right now, as the ownership view says: the one answer the server
    /// routes by (Hello's token room, and [`RoomRegistry::open`] for joins). Only the store's
    /// fenced commit is authoritative; a stale answer here costs a refused commit, not state.
    pub fn owner_of_room(&self, room: &str) -> Ownership {
        self.shared.ownership.owner_of(self.shard_of(room))
    }

    /// Where a member of `room` who must leave this node goes (`Migrate.url`).
    pub fn migrate_url(&self, room: &str) -> String {
        self.shared.ownership.migrate_url(self.shard_of(room))
    }

    /// The live room `room`, if any.
    pub fn room(&self, room: &str) -> Option<RoomHandle> {
        lock(&self.shared.rooms).get(room).cloned()
    }

    /// Number of live rooms.
    pub fn room_count(&self) -> usize {
        lock(&self.shared.rooms).len()
    }

    /// Ids of the live rooms of `shard`.
    pub fn rooms_in_shard(&self, shard: ShardId) -> Vec<String> {
        lock(&self.shared.rooms)
            .values()
            .filter(|h| h.shard == shard)
            .map(|h| h.room.to_string())
            .collect()
    }

    /// The session `session`, if it holds a seat in a room of this node.
    pub fn session(&self, session: &str) -> Option<SessionEntry> {
        lock(&self.shared.sessions).get(session).cloned()
    }

    /// Whether the registry is draining.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// The live room `room`, starting it if this node serves its shard: another owner (or
    /// none) is [`RegistryError::NotOwner`] with the view's answer, so the caller redirects
    /// or asks the client to retry without looking ownership up itself.
    pub fn open(&self, room: &str) -> Result<RoomHandle, RegistryError> {
        let shard = self.shard_of(room);
        let epoch = match self.owner_of_room(room) {
            Ownership::Local { epoch } => epoch,
            other => {
                return Err(RegistryError::NotOwner {
                    shard,
                    ownership: other,
                });
            }
        };
        if self.is_draining() {
            return Err(RegistryError::Draining);
        }
        if lock(&self.shared.moving).contains(&shard) {
            return Err(RegistryError::ShardMoving(shard));
        }
        let tunables = self.shared.settings.borrow().tunables.clone();
        let mut rooms = lock(&self.shared.rooms);
        if let Some(handle) = rooms.get(room) {
            return Ok(handle.clone());
        }
        if rooms.len() >= tunables.max_rooms {
            return Err(RegistryError::TooManyRooms(tunables.max_rooms));
        }
        let state = RoomState::new(room, shard, epoch, &Limits::from(&tunables));
        let handle = self.spawn(state, tunables.room_queue);
        rooms.insert(room.to_owned(), handle.clone());
        self.shared.metrics.rooms.set(rooms.len() as i64);
        Ok(handle)
    }

    fn spawn(&self, state: RoomState, queue: usize) -> RoomHandle {
        let id = self.shared.next_actor.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue.max(1));
        let handle = RoomHandle {
            room: Arc::from(state.room()),
            shard: state.shard(),
            actor: id,
            tx,
        };
        let actor = Actor::new(id, state, rx, self.shared.clone());
        tokio::spawn(actor.run());
        handle
    }

    /// Recreates the rooms of `shard` from their snapshots (takeover). Rooms already live
    /// here are kept as they are. Joins to the shard get 1010 while this runs. Restored
    /// members are suspended and may resume within the resume window. The epoch is the one
    /// the ownership view reports for the shard (the snapshot's if it reports none).
    pub async fn restore_shard(
        &self,
        shard: ShardId,
        snapshots: Vec<(String, Vec<u8>)>,
    ) -> Result<usize, RestoreError> {
        let epoch = match self.shared.ownership.owner_of(shard) {
            Ownership::Local { epoch } => Some(epoch),
            _ => None,
        };
        self.restore_shard_at(shard, epoch, snapshots).await
    }

    /// [`RoomRegistry::restore_shard`] under an explicit `epoch` (cluster takeover, where the
    /// ownership view answers `Local` only once the restore is done); `None` keeps each
    /// snapshot's own epoch.
    pub async fn restore_shard_at(
        &self,
        shard: ShardId,
        epoch: Option<u64>,
        snapshots: Vec<(String, Vec<u8>)>,
    ) -> Result<usize, RestoreError> {
        if self.is_draining() {
            return Err(RestoreError::Draining);
        }
        lock(&self.shared.moving).insert(shard);
        let tunables = self.shared.settings.borrow().tunables.clone();
        let view_epoch = epoch;
        let now = self.shared.clock.now_ms();
        let mut restored = 0;
        let mut failures = Vec::new();
        for (room, bytes) in snapshots {
            let decoded = match snapshot::decode(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(shard, room, error = %e, "cannot restore room");
                    self.shared
                        .metrics
                        .store_errors
                        .with_label_values(&["corrupt_snapshot"])
                        .inc();
                    failures.push((room, e));
                    continue;
                }
            };
            if decoded.room != room {
                tracing::warn!(
                    shard,
                    key = room,
                    snapshot = decoded.room,
                    "snapshot room id differs from its key; using the snapshot's"
                );
            }
            let epoch = view_epoch.unwrap_or(decoded.epoch);
            let mut state = decoded.into_state(epoch, tunables.event_ring, now);
            if state.shard() != shard {
                tracing::warn!(
                    shard,
                    room = state.room(),
                    stored = state.shard(),
                    "snapshot filed under another shard"
                );
                state = RoomState::from_parts(
                    state.room().to_owned(),
                    shard,
                    epoch,
                    state.members().cloned().collect(),
                    state.calls().map(|c| c.call.clone()).collect(),
                    state.log().clone(),
                    now,
                );
            }
            let mut rooms = lock(&self.shared.rooms);
            if rooms.contains_key(state.room()) {
                tracing::warn!(shard, room = state.room(), "room already live; keeping it");
                continue;
            }
            for m in state.members() {
                self.shared.index(&m.session, &m.user, state.room());
            }
            let name = state.room().to_owned();
            let handle = self.spawn(state, tunables.room_queue);
            rooms.insert(name, handle);
            self.shared.metrics.rooms.set(rooms.len() as i64);
            restored += 1;
        }
        lock(&self.shared.moving).remove(&shard);
        tracing::info!(shard, restored, failed = failures.len(), "shard restored");
        if failures.is_empty() {
            Ok(restored)
        } else {
            Err(RestoreError::Corrupt { restored, failures })
        }
    }

    /// Hands `shard` off: its rooms stop mutating and stop (their durable state stays, every
    /// transition was committed before it was acknowledged), members get
    /// `Migrate{url, resume_token}`, and new joins to the shard get 1010 until
    /// [`RoomRegistry::reopen_shard`] or [`RoomRegistry::restore_shard`]. `url` may be empty
    /// ("reconnect to any node"). Returns the number of rooms released.
    pub async fn release_shard(&self, shard: ShardId, url: &str) -> usize {
        lock(&self.shared.moving).insert(shard);
        let handles: Vec<RoomHandle> = lock(&self.shared.rooms)
            .values()
            .filter(|h| h.shard == shard)
            .cloned()
            .collect();
        let count = handles.len();
        futures::future::join_all(handles.iter().map(|h| h.release(url))).await;
        tracing::info!(shard, rooms = count, url, "shard released");
        count
    }

    /// Lets joins into `shard` again after a release (e.g. a handoff was called off).
    pub fn reopen_shard(&self, shard: ShardId) {
        lock(&self.shared.moving).remove(&shard);
    }

    /// Stops taking new rooms and releases every room with `Migrate{url}`.
    pub async fn drain(&self, url: &str) -> usize {
        self.shared.draining.store(true, Ordering::SeqCst);
        let handles: Vec<RoomHandle> = lock(&self.shared.rooms).values().cloned().collect();
        let count = handles.len();
        futures::future::join_all(handles.iter().map(|h| h.release(url))).await;
        count
    }
}
