//! The room registry as cluster mode's [`ShardRestorer`]: takeover restores a shard's rooms
//! from their snapshots under the new epoch, and releases a shard that moved away (members
//! get `Migrate` to the new owner's URL when the ownership view knows it, else to another
//! live node's URL, which redirects them to the owner; an empty URL — "reconnect where you
//! are" — only when no other node is known).

use futures::future::BoxFuture;

use crate::cluster::takeover::{RestoreError as TakeoverRestoreError, ShardRestorer};
use crate::store::ShardRooms;
use switchboard_contract::shard::ShardId;

use super::registry::{RestoreError, RoomRegistry};

impl ShardRestorer for RoomRegistry {
    fn restore_shard(
        &self,
        shard: ShardId,
        epoch: u64,
        snapshots: ShardRooms,
    ) -> BoxFuture<'static, Result<(), TakeoverRestoreError>> {
        let registry = self.clone();
        Box::pin(async move {
            match registry
                .restore_shard_at(shard, Some(epoch), snapshots)
                .await
            {
                Ok(_) => Ok(()),
                // Unreadable snapshots are logged and counted by the registry; retrying
                // would not make them readable, and the shard's other rooms must serve.
                Err(RestoreError::Corrupt { .. }) => Ok(()),
                Err(e @ RestoreError::Draining) => Err(TakeoverRestoreError(e.to_string())),
            }
        })
    }

    fn release_shard(&self, shard: ShardId) -> BoxFuture<'static, ()> {
        let registry = self.clone();
        Box::pin(async move {
            // Not back here when the owner is unknown (lost lease): this node could only
            // answer 1010 until it re-registers, or nothing if it is being replaced.
            let url = registry.ownership().migrate_url(shard);
            registry.release_shard(shard, &url).await;
        })
    }
}
