//! The node's `acks/<pod>` value and its single writer: config/rollout revisions (from the
//! config watch), `released` (handoffs finished by takeover) and `serving` (shards restored),
//! merged by one task that owns the [`Ack`] and writes it through membership (under the
//! node's lease, latest value wins), so no update clobbers another.
//!
//! Merge rules ([`merge`], pure):
//! - `serving` is the set of shards restored here (from the ownership cache), minus shards
//!   released at the same epoch: a shard handed off is reported as released, not served;
//! - `released[shard] = epoch` is added after a handoff's flush; it is kept only while this
//!   node still holds the shard under that epoch (the operator reassigns right after reading
//!   it), so the ack stays small;
//! - every entry for a shard this node no longer holds (or holds under another epoch) is
//!   dropped.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::membership::{MembershipError, MembershipHandle};
use super::ownership::LocalShards;
use switchboard_contract::keys::Ack;
use switchboard_contract::shard::ShardId;

/// Retry delay after a failed ack write.
const RETRY: Duration = Duration::from_millis(500);
/// Ack updates that may wait for the writer.
const QUEUE: usize = 256;

/// One change to the ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckUpdate {
    /// The node applied `config` revision and saw `rollout` revision.
    Revisions {
        /// Applied `config` revision.
        config: u64,
        /// Seen `rollout` revision.
        rollout: u64,
    },
    /// The node handed `shard` off at `epoch` (flushed, members migrated).
    Released {
        /// The shard.
        shard: ShardId,
        /// The epoch it was held under.
        epoch: u64,
    },
    /// The shards restored here, with their epochs (replaces `serving`).
    Serving(LocalShards),
    /// The shards this node holds (assignment names it), with their epochs: prunes the rest.
    Held(LocalShards),
}

/// Applies `update` to `ack` (see the module rules); returns whether it changed.
pub fn merge(ack: &mut Ack, update: AckUpdate) -> bool {
    let before = ack.clone();
    match update {
        AckUpdate::Revisions { config, rollout } => {
            ack.config_revision = config;
            ack.rollout_revision = rollout;
        }
        AckUpdate::Released { shard, epoch } => {
            ack.released.insert(shard, epoch);
            if ack.serving.get(&shard) == Some(&epoch) {
                ack.serving.remove(&shard);
            }
        }
        AckUpdate::Serving(restored) => {
            ack.serving = restored
                .into_iter()
                .filter(|(shard, epoch)| ack.released.get(shard) != Some(epoch))
                .collect();
        }
        AckUpdate::Held(held) => {
            ack.released
                .retain(|shard, epoch| held.get(shard) == Some(epoch));
            ack.serving
                .retain(|shard, epoch| held.get(shard) == Some(epoch));
        }
    }
    *ack != before
}

type Reply = oneshot::Sender<Result<(), MembershipError>>;

/// Sends updates to the ack writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AckHandle {
    tx: mpsc::Sender<(AckUpdate, Option<Reply>)>,
}

impl AckHandle {
    /// Merges `update` into the ack and resolves once an ack containing it is in etcd.
    pub async fn update(&self, update: AckUpdate) -> Result<(), MembershipError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((update, Some(reply)))
            .await
            .map_err(|_| MembershipError::Stopped)?;
        rx.await.map_err(|_| MembershipError::Stopped)?
    }

    /// Merges `update` without waiting for the write.
    pub async fn send(&self, update: AckUpdate) -> Result<(), MembershipError> {
        self.tx
            .send((update, None))
            .await
            .map_err(|_| MembershipError::Stopped)
    }
}

/// The ack writer task.
#[derive(Debug)]
pub struct AckWriter {
    handle: AckHandle,
    task: JoinHandle<()>,
}

impl AckWriter {
    /// Starts the writer: merges updates from its handles and from the `held` and `restored`
    /// watches (the ownership cache's local and restored shards), and writes the merged ack
    /// through `membership` whenever it changed, retrying failed writes, until `shutdown`.
    pub fn spawn(
        membership: MembershipHandle,
        held: watch::Receiver<LocalShards>,
        restored: watch::Receiver<LocalShards>,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(membership, rx, held, restored, shutdown));
        Self {
            handle: AckHandle { tx },
            task,
        }
    }

    /// A handle for updates.
    pub fn handle(&self) -> AckHandle {
        self.handle.clone()
    }

    /// Waits for the task to end (after shutdown).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn run(
    membership: MembershipHandle,
    mut rx: mpsc::Receiver<(AckUpdate, Option<Reply>)>,
    mut held: watch::Receiver<LocalShards>,
    mut restored: watch::Receiver<LocalShards>,
    shutdown: CancellationToken,
) {
    let mut ack = Ack::default();
    // Nothing is written until there is something to say (revisions or a shard).
    let mut dirty = false;
    let mut waiters: Vec<Reply> = Vec::new();
    let mut retry = false;
    let mut inputs_open = true;
    loop {
        dirty |= merge(&mut ack, AckUpdate::Held(held.borrow_and_update().clone()));
        dirty |= merge(
            &mut ack,
            AckUpdate::Serving(restored.borrow_and_update().clone()),
        );
        while let Ok((update, reply)) = rx.try_recv() {
            dirty |= merge(&mut ack, update);
            waiters.extend(reply);
        }
        // Prune again: a release may name a shard already moved on.
        dirty |= merge(&mut ack, AckUpdate::Held(held.borrow().clone()));
        if (dirty || !waiters.is_empty()) && !retry {
            let written = tokio::select! {
                () = shutdown.cancelled() => return,
                result = membership.ack(ack.clone()) => result,
            };
            match written {
                Ok(()) => {
                    dirty = false;
                    for waiter in waiters.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "ack write failed; retrying");
                    if error == MembershipError::Stopped {
                        for waiter in waiters.drain(..) {
                            let _ = waiter.send(Err(error.clone()));
                        }
                        return;
                    }
                    retry = true;
                }
            }
            continue;
        }
        let retry_sleep = async {
            if retry {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = retry_sleep => retry = false,
            next = rx.recv(), if inputs_open => match next {
                Some((update, reply)) => {
                    dirty |= merge(&mut ack, update);
                    waiters.extend(reply);
                }
                None => inputs_open = false,
            },
            changed = held.changed() => if changed.is_err() { return },
            changed = restored.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(pairs: &[(ShardId, u64)]) -> LocalShards {
        pairs.iter().copied().collect()
    }

    #[test]
    fn revisions_and_shard_maps_merge_without_clobbering_each_other() {
        let mut ack = Ack::default();
        assert!(!merge(&mut ack, AckUpdate::Held(shards(&[(1, 3), (2, 5)]))));
        assert!(merge(
            &mut ack,
            AckUpdate::Serving(shards(&[(1, 3), (2, 5)]))
        ));
        assert!(merge(
            &mut ack,
            AckUpdate::Revisions {
                config: 7,
                rollout: 2
            }
        ));
        assert_eq!(ack.serving, shards(&[(1, 3), (2, 5)]));
        // A release moves the shard from serving to released; revisions stay.
        assert!(merge(&mut ack, AckUpdate::Released { shard: 2, epoch: 5 }));
        assert_eq!(ack.serving, shards(&[(1, 3)]));
        assert_eq!(ack.released, shards(&[(2, 5)]));
        assert_eq!((ack.config_revision, ack.rollout_revision), (7, 2));
        // The restored set still lists it until takeover forgets it: not served again.
        assert!(!merge(
            &mut ack,
            AckUpdate::Serving(shards(&[(1, 3), (2, 5)]))
        ));
        assert_eq!(ack.serving, shards(&[(1, 3)]));
        // A config change keeps the shard maps.
        assert!(merge(
            &mut ack,
            AckUpdate::Revisions {
                config: 8,
                rollout: 2
            }
        ));
        assert_eq!(ack.released, shards(&[(2, 5)]));
        // The operator reassigned shard 2: the release is dropped, the ack stays small.
        assert!(merge(&mut ack, AckUpdate::Held(shards(&[(1, 3)]))));
        assert!(ack.released.is_empty());
        assert_eq!(ack.serving, shards(&[(1, 3)]));
        // Shard 1 comes back under a new epoch: old entries go, the new one is served once
        // restored.
        assert!(merge(&mut ack, AckUpdate::Held(shards(&[(1, 4)]))));
        assert!(ack.serving.is_empty());
        assert!(merge(&mut ack, AckUpdate::Serving(shards(&[(1, 4)]))));
        assert_eq!(ack.serving, shards(&[(1, 4)]));
        assert_eq!(ack.config_revision, 8);
    }

    #[test]
    fn a_release_for_a_shard_no_longer_held_is_pruned() {
        let mut ack = Ack::default();
        merge(&mut ack, AckUpdate::Released { shard: 4, epoch: 1 });
        merge(&mut ack, AckUpdate::Held(shards(&[(4, 2)])));
        assert!(ack.released.is_empty());
        // A restore at an old epoch is not "serving" the new one either.
        merge(&mut ack, AckUpdate::Serving(shards(&[(4, 1)])));
        merge(&mut ack, AckUpdate::Held(shards(&[(4, 2)])));
        assert!(ack.serving.is_empty());
    }
}
