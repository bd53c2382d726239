//! Takeover and release of shards: follows [`OwnershipCache::serve_shards`]; for a shard newly
//! held (or held under a new epoch) it loads the shard's snapshots from the store and hands
//! them to the [`ShardRestorer`] (the node's room registry), then marks the shard restored so
//! the ownership view starts answering `Local`; for a shard no longer to be served (moved,
//! being handed off, or the node is fenced) it calls `release_shard` first.
//!
//! **Handoff** (the old owner's part, docs/architecture.md): when the operator sets `handoff_to`
//! on a shard this node holds, the shard leaves `serve_shards`, so it is released: the
//! ownership view already routes it to the destination (no new joins here), each room actor
//! finishes the commands queued before its release — every transition it acknowledged is
//! committed, since a room acknowledges only after its commit — then sends every member
//! `Migrate { url: destination, resume_token }` and stops. Then the [`HandoffHook`] runs with
//! the epoch (the node flushes its group-commit queue and records `released[shard] = epoch`
//! in its ack). A handoff called off (`handoff_to` cleared, same epoch) brings the shard back
//! into `serve_shards`: it is restored afresh from its snapshots.
//!
//! Releases always run before restores, and an epoch change is a release then a restore, so
//! room actors of an old epoch never coexist with the new epoch's. A failed restore (etcd
//! unreachable, restorer error) is retried with backoff while the shard is still held.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::metrics::ClusterMetrics;
use super::ownership::{LocalShards, OwnershipCache};
use crate::store::{RoomStore, ShardRooms, StoreError};
use switchboard_contract::backoff::Backoff;
use switchboard_contract::shard::ShardId;

/// Runs after a shard was released because it is being handed off, with the epoch it is held
/// under (flush the store, then acknowledge the release).
pub type HandoffHook = Arc<dyn Fn(ShardId, u64) -> BoxFuture<'static, ()> + Send + Sync>;

/// The restorer could not rebuild a shard's rooms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restoring shard failed: {0}")]
pub struct RestoreError(pub String);

/// Where the node's rooms live: the hook takeover drives (the room registry at integration).
pub trait ShardRestorer: Send + Sync + 'static {
    /// Rebuilds the rooms of `shard` from `snapshots` (room id, snapshot bytes); this node
    /// now owns the shard under `epoch`. Resolves once the rooms can serve.
    fn restore_shard(
        &self,
        shard: ShardId,
        epoch: u64,
        snapshots: ShardRooms,
    ) -> BoxFuture<'static, Result<(), RestoreError>>;

    /// Stops serving `shard`'s rooms (moved away or fenced): clients are told to migrate, and
    /// nothing more is written for the shard. Resolves once its rooms stopped.
    fn release_shard(&self, shard: ShardId) -> BoxFuture<'static, ()>;
}

/// Why one shard's takeover failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TakeoverError {
    /// Its snapshots could not be read.
    #[error("loading snapshots: {0}")]
    Load(#[from] StoreError),
    /// The restorer refused them.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// A finished restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The shard restored.
    pub shard: ShardId,
    /// The epoch it was restored under.
    pub epoch: u64,
    /// Rooms restored.
    pub rooms: usize,
    /// Time to load the snapshots and restore them.
    pub duration: Duration,
}

/// What the takeover task did (for logs, tests and the admin surface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeoverEvent {
    /// A shard is restored and served locally.
    Restored(RestoreReport),
    /// A shard was released.
    Released {
        /// The shard released.
        shard: ShardId,
    },
    /// A shard being handed off was released and its release acknowledged (hook done).
    HandedOff {
        /// The shard.
        shard: ShardId,
        /// The epoch it was held under.
        epoch: u64,
    },
    /// A restore failed and will be retried while the shard is held.
    Failed {
        /// The shard.
        shard: ShardId,
        /// The epoch the restore was for.
        epoch: u64,
        /// What went wrong.
        error: TakeoverError,
    },
}

/// Loads `shard`'s snapshots and restores them; records the duration in the metrics.
pub async fn restore_shard(
    store: &dyn RoomStore,
    restorer: &dyn ShardRestorer,
    shard: ShardId,
    epoch: u64,
    metrics: &ClusterMetrics,
) -> Result<RestoreReport, TakeoverError> {
    let started = Instant::now();
    let snapshots = store.load_shard(shard).await?;
    let rooms = snapshots.len();
    restorer.restore_shard(shard, epoch, snapshots).await?;
    let duration = started.elapsed();
    metrics
        .shard_restore_seconds
        .observe(duration.as_secs_f64());
    Ok(RestoreReport {
        shard,
        epoch,
        rooms,
        duration,
    })
}

/// Tuning of the takeover task.
#[derive(Debug, Clone, Copy)]
pub struct TakeoverConfig {
    /// Shards restored concurrently (after a failover a node may receive many at once).
    pub concurrency: usize,
    /// First retry delay of a failed restore (doubles up to `retry_max`).
    pub retry_initial: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

impl Default for TakeoverConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
        }
    }
}

/// The running takeover task.
#[derive(Debug)]
pub struct Takeover {
    events: broadcast::Sender<TakeoverEvent>,
    task: JoinHandle<()>,
}

impl Takeover {
    /// Starts following `ownership`'s shards to serve, restoring and releasing through
    /// `restorer` (and calling `on_handoff` after a handoff's release), until `shutdown` is
    /// cancelled.
    pub fn spawn(
        ownership: Arc<OwnershipCache>,
        store: Arc<dyn RoomStore>,
        restorer: Arc<dyn ShardRestorer>,
        config: TakeoverConfig,
        metrics: ClusterMetrics,
        on_handoff: Option<HandoffHook>,
        shutdown: CancellationToken,
    ) -> Self {
        let (events, _) = broadcast::channel(256);
        let task = tokio::spawn(run(
            Context {
                ownership,
                restorer,
                metrics,
                events: events.clone(),
                on_handoff,
            },
            store,
            config,
            shutdown,
        ));
        Self { events, task }
    }

    /// Subscribes to takeover events (a slow subscriber misses old events, never blocks).
    pub fn events(&self) -> broadcast::Receiver<TakeoverEvent> {
        self.events.subscribe()
    }

    /// Waits for the task to end (after shutdown).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// What releases need.
struct Context {
    ownership: Arc<OwnershipCache>,
    restorer: Arc<dyn ShardRestorer>,
    metrics: ClusterMetrics,
    events: broadcast::Sender<TakeoverEvent>,
    on_handoff: Option<HandoffHook>,
}

async fn run(
    ctx: Context,
    store: Arc<dyn RoomStore>,
    config: TakeoverConfig,
    shutdown: CancellationToken,
) {
    let Context {
        ownership,
        restorer,
        metrics,
        events,
        ..
    } = &ctx;
    let mut target_rx = ownership.serve_shards();
    let mut served = LocalShards::new();
    let mut backoff = Backoff::new(config.retry_initial, config.retry_max);
    loop {
        let target = target_rx.borrow_and_update().clone();
        let stale: Vec<ShardId> = served
            .iter()
            .filter(|(shard, epoch)| target.get(shard) != Some(epoch))
            .map(|(shard, _)| *shard)
            .collect();
        futures::stream::iter(stale)
            .for_each_concurrent(config.concurrency.max(1), |shard| {
                served.remove(&shard);
                release(&ctx, shard).instrument(tracing::debug_span!("release", shard))
            })
            .await;
        let todo: Vec<(ShardId, u64)> = target
            .iter()
            .filter(|(shard, epoch)| served.get(shard) != Some(epoch))
            .map(|(shard, epoch)| (*shard, *epoch))
            .collect();
        let results: Vec<(ShardId, u64, Result<RestoreReport, TakeoverError>)> =
            futures::stream::iter(todo)
                .map(|(shard, epoch)| {
                    let store = &store;
                    let span = tracing::debug_span!("restore", shard, epoch);
                    async move {
                        let result =
                            restore_shard(&**store, &**restorer, shard, epoch, metrics).await;
                        (shard, epoch, result)
                    }
                    .instrument(span)
                })
                .buffer_unordered(config.concurrency.max(1))
                .collect()
                .await;
        let mut failed = false;
        for (shard, epoch, result) in results {
            match result {
                Ok(report) => {
                    if ownership.mark_restored(shard, epoch) {
                        served.insert(shard, epoch);
                        metrics.shards_restored.inc();
                        tracing::info!(
                            shard,
                            epoch,
                            rooms = report.rooms,
                            ms = report.duration.as_millis() as u64,
                            "shard restored"
                        );
                        let _ = events.send(TakeoverEvent::Restored(report));
                    } else {
                        // Taken away while restoring: undo.
                        release(&ctx, shard).await;
                    }
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(shard, epoch, %error, "shard restore failed; retrying");
                    let _ = events.send(TakeoverEvent::Failed {
                        shard,
                        epoch,
                        error,
                    });
                }
            }
        }
        let retry = if failed {
            Some(tokio::time::sleep(backoff.next_delay()))
        } else {
            backoff.reset();
            None
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = target_rx.changed() => if changed.is_err() { return },
            () = async { match retry { Some(sleep) => sleep.await, None => std::future::pending().await } } => {}
        }
    }
}

async fn release(ctx: &Context, shard: ShardId) {
    ctx.ownership.mark_released(shard);
    ctx.restorer.release_shard(shard).await;
    ctx.metrics.shards_released.inc();
    tracing::info!(shard, "shard released");
    let _ = ctx.events.send(TakeoverEvent::Released { shard });
    if let Some(epoch) = ctx.ownership.handoff_epoch(shard) {
        if let Some(hook) = &ctx.on_handoff {
            hook(shard, epoch)
                .instrument(tracing::debug_span!("handoff", shard, epoch))
                .await;
        }
        tracing::info!(shard, epoch, "shard handed off");
        let _ = ctx.events.send(TakeoverEvent::HandedOff { shard, epoch });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::routing::{Ownership, OwnershipView};
    use crate::store::MemoryStore;
    use switchboard_contract::keys::{Assignment, Keyspace, Value};
    use switchboard_contract::watch::{Entry, Update};

    /// Records calls; fails the first `failures` restores.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        failures: Mutex<u32>,
    }

    impl ShardRestorer for Recorder {
        fn restore_shard(
            &self,
            shard: ShardId,
            epoch: u64,
            snapshots: ShardRooms,
        ) -> BoxFuture<'static, Result<(), RestoreError>> {
            let mut failures = self.failures.lock().unwrap();
            let result = if *failures > 0 {
                *failures -= 1;
                Err(RestoreError("registry busy".into()))
            } else {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("restore {shard}@{epoch} rooms={}", snapshots.len()));
                Ok(())
            };
            Box::pin(std::future::ready(result))
        }

        fn release_shard(&self, shard: ShardId) -> BoxFuture<'static, ()> {
            self.calls.lock().unwrap().push(format!("release {shard}"));
            Box::pin(std::future::ready(()))
        }
    }

    fn assign(cache: &OwnershipCache, shard: ShardId, node: &str, epoch: u64) {
        cache.apply(Update::Put(Entry {
            key: cache.keys().assignment(shard).into_bytes(),
            value: Assignment {
                node: node.into(),
                epoch,
                version: "v1".into(),
                handoff_to: None,
            }
            .encode(),
            mod_revision: 0,
            lease: 0,
        }));
    }

    async fn next(events: &mut broadcast::Receiver<TakeoverEvent>) -> TakeoverEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("takeover event")
            .expect("event channel open")
    }

    #[tokio::test]
    async fn restores_new_epochs_releases_moved_shards_and_retries_failures() {
        let cache = OwnershipCache::new(Keyspace::new("n", "c").unwrap(), "a", 4);
        cache.apply(Update::Reset(vec![]));
        let store = MemoryStore::new();
        store.commit(0, "lobby", vec![1]).await.unwrap();
        store.commit(0, "hall", vec![2]).await.unwrap();
        let recorder = Arc::new(Recorder::default());
        *recorder.failures.lock().unwrap() = 1;
        let shutdown = CancellationToken::new();
        let metrics = ClusterMetrics::default();
        let takeover = Takeover::spawn(
            Arc::clone(&cache),
            Arc::new(store),
            recorder.clone(),
            TakeoverConfig {
                retry_initial: Duration::from_millis(1),
                ..TakeoverConfig::default()
            },
            metrics.clone(),
            None,
            shutdown.clone(),
        );
        let mut events = takeover.events();

        assign(&cache, 0, "a", 1);
        assert!(matches!(
            next(&mut events).await,
            TakeoverEvent::Failed {
                shard: 0,
                epoch: 1,
                ..
            }
        ));
        assert_eq!(
            cache.owner_of(0),
            Ownership::Unavailable,
            "not served before restored"
        );
        let TakeoverEvent::Restored(report) = next(&mut events).await else {
            panic!("expected a restore");
        };
        assert_eq!((report.shard, report.epoch, report.rooms), (0, 1, 2));
        assert_eq!(cache.owner_of(0), Ownership::Local { epoch: 1 });

        // A new epoch for the same shard is a release, then a fresh restore.
        assign(&cache, 0, "a", 3);
        assert_eq!(
            next(&mut events).await,
            TakeoverEvent::Released { shard: 0 }
        );
        assert!(matches!(next(&mut events).await, TakeoverEvent::Restored(r) if r.epoch == 3));

        // Moved to another node: released.
        assign(&cache, 0, "b", 4);
        assert_eq!(
            next(&mut events).await,
            TakeoverEvent::Released { shard: 0 }
        );
        assert_eq!(
            *recorder.calls.lock().unwrap(),
            vec![
                "restore 0@1 rooms=2",
                "release 0",
                "restore 0@3 rooms=2",
                "release 0"
            ]
        );
        assert_eq!(metrics.shards_restored.get(), 2);
        assert_eq!(metrics.shards_released.get(), 2);
        assert_eq!(metrics.shard_restore_seconds.get_sample_count(), 2);

        shutdown.cancel();
        takeover.join().await;
    }
}
