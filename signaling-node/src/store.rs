//! Where room state goes when a transition is acknowledged: the contract between the room
//! actors and the durable backend.
//!
//! A room actor calls [`RoomStore::commit`] with the room's full snapshot after every state
//! transition (join, leave, call state change) and acknowledges the transition to clients only
//! when the returned future resolves `Ok`. Standalone nodes use [`MemoryStore`]; cluster nodes
//! use the etcd store in `cluster`, which group-commits and fences on the shard assignment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use switchboard_contract::shard::ShardId;

/// Why a snapshot could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached and the write was not applied; the transition must be
    /// refused (error 1010) and retried.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The write was sent but no answer came (a timeout, a broken connection): it may or may
    /// not have been applied. The writer must not reuse what it wrote (its event seqs) for
    /// anything else; the room makes the same write again until it is answered.
    #[error("state store outcome unknown: {0}")]
    InDoubt(String),
    /// This node no longer owns the shard (assignment moved or lease lost); stop mutating it.
    #[error("shard {shard} is no longer owned by this node (fenced)")]
    Fenced {
        /// The shard whose write was refused.
        shard: ShardId,
    },
}

/// Every stored room of one shard: (room id, snapshot bytes).
pub type ShardRooms = Vec<(String, Vec<u8>)>;

/// Durable storage for room snapshots, keyed by shard and room id.
pub trait RoomStore: Send + Sync + 'static {
    /// Makes `snapshot` the durable state of `room` in `shard`; resolves once committed.
    fn commit(
        &self,
        shard: ShardId,
        room: &str,
        snapshot: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Removes `room` (it emptied); resolves once committed.
    fn remove(&self, shard: ShardId, room: &str) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Every room snapshot stored for `shard` (used when a node takes a shard over).
    fn load_shard(&self, shard: ShardId) -> BoxFuture<'static, Result<ShardRooms, StoreError>>;
}

/// Snapshots by (shard, room id).
type RoomMap = HashMap<(ShardId, String), Vec<u8>>;

/// In-memory store of a standalone node: commits are immediate and never fail.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    rooms: Arc<Mutex<RoomMap>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RoomStore for MemoryStore {
    fn commit(
        &self,
        shard: ShardId,
        room: &str,
        snapshot: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        // The lock is never held across an await: the future is already complete.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((shard, room.to_owned()), snapshot);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove(&self, shard: ShardId, room: &str) -> BoxFuture<'static, Result<(), StoreError>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(shard, room.to_owned()));
        Box::pin(std::future::ready(Ok(())))
    }

    fn load_shard(&self, shard: ShardId) -> BoxFuture<'static, Result<ShardRooms, StoreError>> {
        let rooms = self
            .rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|((s, _), _)| *s == shard)
            .map(|((_, room), snapshot)| (room.clone(), snapshot.clone()))
            .collect();
        Box::pin(std::future::ready(Ok(rooms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_round_trips_per_shard() {
        let store = MemoryStore::new();
        store.commit(1, "a", vec![1]).await.unwrap();
        store.commit(1, "b", vec![2]).await.unwrap();
        store.commit(2, "c", vec![3]).await.unwrap();
        store.remove(1, "b").await.unwrap();
        assert_eq!(
            store.load_shard(1).await.unwrap(),
            vec![("a".to_owned(), vec![1])]
        );
        assert_eq!(store.load_shard(2).await.unwrap().len(), 1);
    }
}
