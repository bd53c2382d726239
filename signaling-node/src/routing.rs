//! Who serves a shard right now: the contract between the server (which redirects or serves)
//! and the ownership source (standalone: always this node; cluster: the watched etcd
//! assignments).

use std::sync::Arc;

use switchboard_contract::shard::ShardId;

/// Where a shard's rooms are served, as seen by this node at this instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// This node owns the shard under `epoch` and may mutate its rooms.
    Local {
        /// The assignment epoch this node holds (fencing token for its writes).
        epoch: u64,
    },
    /// Another node owns it; clients are redirected to `url`.
    Remote {
        /// The owner's advertised WebSocket URL.
        url: String,
    },
    /// No live owner (failover or handoff in progress); clients retry shortly (error 1010).
    Unavailable,
}

/// A cheap, synchronous view of shard ownership (no I/O per call; backed by a watched cache).
pub trait OwnershipView: Send + Sync + 'static {
    /// The ownership of `shard` now.
    fn owner_of(&self, shard: ShardId) -> Ownership;

    /// Number of shards in the cluster (rooms hash into `0..shard_count`).
    fn shard_count(&self) -> u32;

    /// The advertised URL of another live node, for the members of `shard` when they must
    /// leave and its owner is unknown here (this node lost its etcd lease): any node
    /// redirects a resuming client to the owner, while this node can only answer 1010 until
    /// it re-registers. `None` when there is no other node (standalone).
    fn other_node_url(&self, _shard: ShardId) -> Option<String> {
        None
    }

    /// Where members of `shard` who must leave this node go (`Migrate.url`): its owner when
    /// known, else another live node (which redirects them to the owner), else `""` ("come
    /// back here later").
    fn migrate_url(&self, shard: ShardId) -> String {
        match self.owner_of(shard) {
            Ownership::Remote { url } => url,
            Ownership::Unavailable => self.other_node_url(shard).unwrap_or_default(),
            Ownership::Local { .. } => String::new(),
        }
    }
}

/// A standalone node owns every shard itself, at epoch 0.
#[derive(Debug, Clone, Copy)]
pub struct Standalone {
    /// Number of shards rooms are hashed into (kept so snapshots stay valid in cluster mode).
    pub shard_count: u32,
}

impl OwnershipView for Standalone {
    fn owner_of(&self, _shard: ShardId) -> Ownership {
        Ownership::Local { epoch: 0 }
    }

    fn shard_count(&self) -> u32 {
        self.shard_count
    }
}

/// Shared handle to whichever ownership view the node runs with.
pub type SharedOwnership = Arc<dyn OwnershipView>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_owns_everything() {
        let view = Standalone { shard_count: 16 };
        assert_eq!(view.owner_of(3), Ownership::Local { epoch: 0 });
        assert_eq!(view.shard_count(), 16);
        assert_eq!(view.migrate_url(3), "", "nowhere else to go");
    }

    /// Shard 0 is remote, shard 1 has no owner, shard 2 is local; one other node is known.
    struct Fixed;

    impl OwnershipView for Fixed {
        fn owner_of(&self, shard: ShardId) -> Ownership {
            match shard {
                0 => Ownership::Remote {
                    url: "ws://owner/ws".into(),
                },
                1 => Ownership::Unavailable,
                _ => Ownership::Local { epoch: 1 },
            }
        }

        fn shard_count(&self) -> u32 {
            3
        }

        fn other_node_url(&self, _shard: ShardId) -> Option<String> {
            Some("ws://other/ws".into())
        }
    }

    #[test]
    fn members_leave_for_the_owner_else_another_node_else_come_back() {
        assert_eq!(Fixed.migrate_url(0), "ws://owner/ws");
        assert_eq!(Fixed.migrate_url(1), "ws://other/ws");
        assert_eq!(Fixed.migrate_url(2), "");
    }
}
