//! What the room registry and its room actors share: the store, the ownership view, live
//! settings, metrics, this node's name and clock, and the indexes of live rooms and sessions.
//!
//! The maps are behind short `std::sync::Mutex`es touched only on the control path (open,
//! resume lookup, room start/stop), never held across an await and never on the relay path.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_contract::shard::ShardId;

use crate::config::SettingsWatch;
use crate::metrics::Metrics;
use crate::routing::SharedOwnership;
use crate::store::RoomStore;

use super::Clock;
use super::handle::RoomHandle;

/// Who a session is and which rooms it sits in on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// User id.
    pub user: String,
    /// Rooms where the session holds a seat, sorted, without duplicates (a small vector: a
    /// session sits in one or a few rooms, and a B-tree node would cost ≈ 0.3 KiB each).
    pub rooms: Vec<String>,
}

/// What rooms and the registry share.
pub(super) struct Shared {
    pub(super) store: Arc<dyn RoomStore>,
    pub(super) ownership: SharedOwnership,
    pub(super) settings: SettingsWatch,
    pub(super) metrics: Metrics,
    pub(super) node: String,
    pub(super) clock: Clock,
    pub(super) rooms: Mutex<HashMap<String, RoomHandle>>,
    pub(super) sessions: Mutex<HashMap<String, SessionEntry>>,
    pub(super) moving: Mutex<HashSet<ShardId>>,
    pub(super) draining: AtomicBool,
    pub(super) next_actor: AtomicU64,
}

/// Locks `m`, using the data even if a panicking holder poisoned it (plain maps and sets).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Empty indexes for rooms that commit to `store` and check `ownership`.
    pub(super) fn new(
        store: Arc<dyn RoomStore>,
        ownership: SharedOwnership,
        settings: SettingsWatch,
        metrics: Metrics,
        node: String,
    ) -> Self {
        Self {
            store,
            ownership,
            settings,
            metrics,
            node,
            clock: Clock::new(),
            rooms: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            moving: Mutex::new(HashSet::new()),
            draining: AtomicBool::new(false),
            next_actor: AtomicU64::new(1),
        }
    }

    /// Removes `room` if `actor` is the one registered for it; returns whether it was.
    pub(super) fn remove_room(&self, room: &str, actor: u64) -> bool {
        let mut rooms = lock(&self.rooms);
        if rooms.get(room).is_some_and(|h| h.actor == actor) {
            rooms.remove(room);
            self.metrics.rooms.set(rooms.len() as i64);
            true
        } else {
            false
        }
    }

    /// Records that `session` (of `user`) holds a seat in `room`.
    pub(super) fn index(&self, session: &str, user: &str, room: &str) {
        let mut sessions = lock(&self.sessions);
        let entry = sessions
            .entry(session.to_owned())
            .or_insert_with(|| SessionEntry {
                user: user.to_owned(),
                rooms: Vec::new(),
            });
        if let Err(at) = entry.rooms.binary_search_by(|r| r.as_str().cmp(room)) {
            // Exact: a session usually sits in one room, and growth would reserve four.
            entry.rooms.reserve_exact(1);
            entry.rooms.insert(at, room.to_owned());
        }
    }

    /// Forgets `session`'s seat in `room` (and the session once it holds none).
    pub(super) fn unindex(&self, session: &str, room: &str) {
        let mut sessions = lock(&self.sessions);
        if let Some(entry) = sessions.get_mut(session) {
            if let Ok(at) = entry.rooms.binary_search_by(|r| r.as_str().cmp(room)) {
                entry.rooms.remove(at);
            }
            if entry.rooms.is_empty() {
                sessions.remove(session);
            }
        }
    }
}
