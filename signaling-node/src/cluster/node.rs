//! A cluster-mode node's etcd side, started and stopped together: ownership watch,
//! membership lease (fencing the ownership cache when lost), group-committing store, config
//! watch and — once the room registry exists — takeover.
//!
//! Wiring in `serve`: [`ClusterNode::start`] → build the room registry with
//! [`ClusterNode::room_store`] and [`ClusterNode::ownership_view`] → [`ClusterNode::start_takeover`]
//! with the registry → serve, refusing state changes while [`ClusterNode::healthy`] is false
//! → on SIGTERM [`ClusterNode::drain`] then [`ClusterNode::shutdown`].

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ack::{AckHandle, AckUpdate, AckWriter};
use super::config_watch::ConfigWatch;
use super::health::Health;
use super::membership::{
    FenceHook, Membership, MembershipConfig, MembershipError, MembershipHandle,
};
use super::metrics::ClusterMetrics;
use super::ownership::{LocalShards, OwnershipCache};
use super::store::{EtcdRoomStore, StoreConfig};
use super::takeover::{HandoffHook, ShardRestorer, Takeover, TakeoverConfig, TakeoverEvent};
use super::watch::EtcdContext;
use crate::routing::SharedOwnership;
use crate::store::RoomStore;
use switchboard_contract::keys::{Keyspace, NodeInfo, NodeState};
use switchboard_contract::watch::EtcdTiming;

/// Everything [`ClusterNode::start`] needs.
#[derive(Debug, Clone)]
pub struct ClusterNodeConfig {
    /// The cluster's keyspace.
    pub keys: Keyspace,
    /// Number of shards rooms hash into.
    pub shard_count: u32,
    /// Lease, keepalive and registration value (pod name, url, version, protocols...).
    pub membership: MembershipConfig,
    /// Group-commit tuning.
    pub store: StoreConfig,
    /// Takeover tuning.
    pub takeover: TakeoverConfig,
    /// Request timeouts and reconnect backoff of the watches.
    pub timing: EtcdTiming,
}

impl ClusterNodeConfig {
    /// Defaults for node `pod` advertising `info`.
    pub fn new(keys: Keyspace, shard_count: u32, pod: impl Into<String>, info: NodeInfo) -> Self {
        Self {
            keys,
            shard_count,
            membership: MembershipConfig::new(pod, info),
            store: StoreConfig::default(),
            takeover: TakeoverConfig::default(),
            timing: EtcdTiming::default(),
        }
    }
}

/// Why the cluster side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Membership could not start (bad pod name).
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// The running etcd side of a cluster-mode node.
pub struct ClusterNode {
    keys: Keyspace,
    client: Client,
    ownership: Arc<OwnershipCache>,
    store: EtcdRoomStore,
    membership: Option<Membership>,
    membership_handle: MembershipHandle,
    acks: Option<AckWriter>,
    ack_handle: AckHandle,
    config: ConfigWatch,
    health: Health,
    metrics: ClusterMetrics,
    takeover_config: TakeoverConfig,
    takeover: Option<Takeover>,
    shutdown: CancellationToken,
    watches: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("prefix", &self.keys.prefix())
            .field("node", &self.ownership.node())
            .field("healthy", &self.health.is_healthy())
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Starts the watches, the lease and the store. The node holds no shard until its lease
    /// is live (the ownership cache starts fenced).
    pub fn start(
        client: Client,
        config: ClusterNodeConfig,
        metrics: ClusterMetrics,
    ) -> Result<Self, ClusterError> {
        let health = Health::with_gauge(metrics.etcd_healthy.clone());
        let shutdown = CancellationToken::new();
        let ownership = OwnershipCache::new(
            config.keys.clone(),
            config.membership.pod.clone(),
            config.shard_count,
        );
        ownership.set_fenced(true);
        let ctx = EtcdContext {
            client: client.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            timing: config.timing,
            shutdown: shutdown.clone(),
        };
        let ownership_watch = ownership.spawn_watch(ctx.clone());
        let fence: FenceHook = {
            let ownership = Arc::clone(&ownership);
            Arc::new(move |fenced| ownership.set_fenced(fenced))
        };
        let membership = Membership::start(
            client.clone(),
            &config.keys,
            config.membership.clone(),
            health.clone(),
            metrics.clone(),
            fence,
        )?;
        let membership_handle = membership.handle();
        let store = EtcdRoomStore::start(
            client.clone(),
            Arc::clone(&ownership),
            config.store,
            metrics.clone(),
        );
        let acks = AckWriter::spawn(
            membership_handle.clone(),
            ownership.local_shards(),
            ownership.restored_shards(),
            shutdown.clone(),
        );
        let config_watch = ConfigWatch::spawn(ctx, config.keys.clone(), acks.handle());
        Ok(Self {
            keys: config.keys,
            client,
            ownership,
            store,
            membership: Some(membership),
            membership_handle,
            ack_handle: acks.handle(),
            acks: Some(acks),
            config: config_watch,
            health,
            metrics,
            takeover_config: config.takeover,
            takeover: None,
            shutdown,
            watches: vec![ownership_watch],
        })
    }

    /// The cluster's keyspace.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// The etcd client (shared connection).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The ownership view for the server's routing (Local / Remote / Unavailable).
    pub fn ownership_view(&self) -> SharedOwnership {
        Arc::clone(&self.ownership) as SharedOwnership
    }

    /// The ownership cache itself (local shards, assignments, node registrations).
    pub fn ownership(&self) -> &Arc<OwnershipCache> {
        &self.ownership
    }

    /// The durable room store for the room actors.
    pub fn room_store(&self) -> Arc<dyn RoomStore> {
        Arc::new(self.store.clone())
    }

    /// Membership handle: publish load, draining state, acks.
    pub fn membership(&self) -> &MembershipHandle {
        &self.membership_handle
    }

    /// The ack writer: merges revisions, released and serving shards into `acks/<pod>`.
    pub fn acks(&self) -> &AckHandle {
        &self.ack_handle
    }

    /// The config/rollout watch (values and `ack`).
    pub fn config(&self) -> &ConfigWatch {
        &self.config
    }

    /// False while etcd is unreachable: refuse state changes (1010) and report not ready.
    pub fn healthy(&self) -> watch::Receiver<bool> {
        self.health.subscribe()
    }

    /// The metrics this node updates.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    /// Starts restoring shards assigned to this node into `restorer` (and releasing the ones
    /// taken away or being handed off; after a handoff's release the store is flushed and
    /// `released[shard] = epoch` acknowledged). Call once, after the registry exists; returns
    /// the event stream.
    pub fn start_takeover(
        &mut self,
        restorer: Arc<dyn ShardRestorer>,
    ) -> broadcast::Receiver<TakeoverEvent> {
        if let Some(takeover) = &self.takeover {
            return takeover.events();
        }
        let (store, acks) = (self.store.clone(), self.ack_handle.clone());
        let on_handoff: HandoffHook = Arc::new(move |shard, epoch| {
            let (store, acks) = (store.clone(), acks.clone());
            Box::pin(async move {
                store.flush().await;
                if let Err(error) = acks.update(AckUpdate::Released { shard, epoch }).await {
                    tracing::warn!(shard, epoch, %error, "could not acknowledge a handoff");
                }
            })
        });
        let takeover = Takeover::spawn(
            Arc::clone(&self.ownership),
            self.room_store(),
            restorer,
            self.takeover_config,
            self.metrics.clone(),
            Some(on_handoff),
            self.shutdown.clone(),
        );
        let events = takeover.events();
        self.takeover = Some(takeover);
        events
    }

    /// Marks the node draining in etcd (the operator hands its shards off), then waits until
    /// it holds no shard or `timeout` passes. Returns the shards still held.
    pub async fn drain(&self, timeout: Duration) -> Result<LocalShards, MembershipError> {
        tokio::time::timeout(
            timeout,
            self.membership_handle.set_state(NodeState::Draining),
        )
        .await
        .map_err(|_| MembershipError::Timeout)??;
        let mut local = self.ownership.local_shards();
        let _ = tokio::time::timeout(timeout, local.wait_for(|shards| shards.is_empty())).await;
        let held = local.borrow().clone();
        Ok(held)
    }

    /// Stops every watch and task and revokes the lease (the node key vanishes at once).
    pub async fn shutdown(mut self) {
        // Nothing is written for any shard from here on.
        self.ownership.set_fenced(true);
        self.shutdown.cancel();
        if let Some(membership) = self.membership.take() {
            membership.shutdown().await;
        }
        for watch in self.watches.drain(..) {
            let _ = watch.await;
        }
        if let Some(takeover) = self.takeover.take() {
            takeover.join().await;
        }
        if let Some(acks) = self.acks.take() {
            acks.join().await;
        }
    }
}

impl Drop for ClusterNode {
    /// Dropping without [`ClusterNode::shutdown`] stops the background tasks without revoking
    /// the lease (the registration expires after its TTL, as after a crash).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
