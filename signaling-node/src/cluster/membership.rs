//! Node membership: registers `nodes/<pod>` under a 2 s lease kept alive every 500 ms,
//! republishes the value on state change (draining) and periodically with the load, writes
//! `acks/<pod>` under the same lease, and revokes the lease on clean exit.
//!
//! If no keepalive is acknowledged for a whole TTL (see [`super::lease`]), the node presumes
//! the lease lost: it fences itself at once through the fence hook (every shard stops
//! mutating) and counts `switchboard_lease_lost_total`. Presumed is not known: once etcd
//! answers again the node asks for the lease's remaining TTL, and a lease etcd still holds
//! (an etcd restart or leader change renews leases) is kept — keepalive reopened, node value
//! and ack rewritten under it, `switchboard_lease_revived_total` counted — so the operator
//! sees no new registration. Only a lease etcd reports gone (or one it never answers about
//! before shutdown) makes the node register again under a new lease, rewriting its node
//! value and last ack.
//!
//! Every etcd write runs beside the keepalive loop (one at a time, latest value wins), so a
//! slow write never delays a keepalive. Dropping [`Membership`] without
//! [`Membership::shutdown`] aborts the task without revoking: the key then vanishes after the
//! TTL, exactly as when the process crashes.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::health::{Component, Health};
use super::lease::{AckOutcome, LeaseTracker};
use super::metrics::ClusterMetrics;
use switchboard_contract::keys::{Ack, KeyError, Keyspace, Load, NodeInfo, NodeState, Value};
use switchboard_contract::watch::EtcdTiming;

/// Called with `true` the instant the lease is presumed lost (stop mutating every shard) and
/// with `false` once a new lease is live.
pub type FenceHook = Arc<dyn Fn(bool) + Send + Sync>;

/// Why a membership request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The pod name does not fit the keyspace.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// etcd refused or failed the write.
    #[error("etcd write failed: {0}")]
    Etcd(String),
    /// etcd did not answer in time.
    #[error("etcd write timed out")]
    Timeout,
    /// The membership task has stopped.
    #[error("membership stopped")]
    Stopped,
}

/// Where the node's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Not registered yet (first attempt in progress or etcd unreachable).
    Registering,
    /// Registered under `lease`; `generation` counts registrations (1 for the first, +1 after
    /// every lost lease), so a watcher that missed a loss still sees the generation jump.
    Live {
        /// The etcd lease id.
        lease: i64,
        /// Registration count.
        generation: u64,
    },
    /// The lease of registration `generation` was lost; the node is fenced and re-registering.
    Lost {
        /// The generation that was lost.
        generation: u64,
    },
    /// Shut down cleanly (lease revoked).
    Stopped,
}

/// How the node registers.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's pod name (the `<pod>` of `nodes/<pod>`).
    pub pod: String,
    /// The initial registration value (state, url, version, ...).
    pub info: NodeInfo,
    /// Lease TTL (etcd rounds up to whole seconds, at least 1).
    pub ttl: Duration,
    /// Keepalive period.
    pub keepalive_interval: Duration,
    /// Smallest period between republishing the value for load changes alone.
    pub load_publish_interval: Duration,
    /// Request timeout and reconnect backoff.
    pub timing: EtcdTiming,
}

impl MembershipConfig {
    /// The defaults: TTL 2 s, keepalive 500 ms, load published at most every 1 s.
    pub fn new(pod: impl Into<String>, info: NodeInfo) -> Self {
        Self {
            pod: pod.into(),
            info,
            ttl: Duration::from_secs(2),
            keepalive_interval: Duration::from_millis(500),
            load_publish_interval: Duration::from_secs(1),
            timing: EtcdTiming::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<(), MembershipError>>;

enum Command {
    SetState(NodeState, Reply),
    Ack(Ack, Reply),
}

/// A cloneable handle to a running membership: publish load, change state, write acks.
#[derive(Debug, Clone)]
pub struct MembershipHandle {
    commands: mpsc::Sender<Command>,
    load: Arc<watch::Sender<(Load, f64)>>,
    status: watch::Receiver<LeaseStatus>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::SetState(state, _) => f.debug_tuple("SetState").field(state).finish(),
            Command::Ack(ack, _) => f.debug_tuple("Ack").field(ack).finish(),
        }
    }
}

impl MembershipHandle {
    /// The registration status (watch it to learn about lost leases).
    pub fn status(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Records the current load; published with the next periodic update (cheap, never waits).
    pub fn set_load(&self, load: Load, error_rate: f64) {
        let error_rate = if error_rate.is_finite() {
            error_rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.load.send_if_modified(|current| {
            let changed = *current != (load, error_rate);
            *current = (load, error_rate);
            changed
        });
    }

    /// Publishes `state` (e.g. draining) and resolves once it is written in etcd. While etcd is
    /// unreachable it waits; wrap it in a timeout where that matters.
    pub async fn set_state(&self, state: NodeState) -> Result<(), MembershipError> {
        self.request(|reply| Command::SetState(state, reply)).await
    }

    /// Writes `acks/<pod>` with the revisions this node applied; resolves once written. The
    /// ack is rewritten under every new lease.
    pub async fn ack(&self, ack: Ack) -> Result<(), MembershipError> {
        self.request(|reply| Command::Ack(ack, reply)).await
    }

    async fn request(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| MembershipError::Stopped)?;
        rx.await.map_err(|_| MembershipError::Stopped)?
    }
}

/// The running membership task; owns the lease.
#[derive(Debug)]
pub struct Membership {
    handle: MembershipHandle,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Membership {
    /// Starts registering this node. `on_fence` is called on every lost and regained lease.
    pub fn start(
        client: Client,
        keys: &Keyspace,
        config: MembershipConfig,
        health: Health,
        metrics: ClusterMetrics,
        on_fence: FenceHook,
    ) -> Result<Self, MembershipError> {
        let node_key = keys.node(&config.pod)?;
        let ack_key = keys.ack(&config.pod)?;
        let (commands, command_rx) = mpsc::channel(16);
        let (load_tx, load_rx) = watch::channel((config.info.load, config.info.error_rate));
        let (status_tx, status) = watch::channel(LeaseStatus::Registering);
        let shutdown = CancellationToken::new();
        health.register(Component::Membership);
        let task = Task {
            client,
            node_key,
            ack_key,
            info: config.info.clone(),
            ack: None,
            config,
            status: status_tx,
            on_fence,
            health,
            metrics,
            commands: command_rx,
            load: load_rx,
            shutdown: shutdown.clone(),
            node_waiters: Vec::new(),
            ack_waiters: Vec::new(),
        };
        let task = tokio::spawn(task.run());
        Ok(Self {
            handle: MembershipHandle {
                commands,
                load: Arc::new(load_tx),
                status,
            },
            shutdown,
            task: Some(task),
        })
    }

    /// A cloneable handle for load, state and acks.
    pub fn handle(&self) -> MembershipHandle {
        self.handle.clone()
    }

    /// Revokes the lease (the node key and ack vanish at once) and stops.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Registered {
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    tracker: LeaseTracker,
}

enum Exit {
    Shutdown(i64),
    /// No keepalive acknowledged for a TTL: the lease may still live in etcd.
    Presumed,
    /// etcd said the lease is gone.
    Lost,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Node,
    Ack,
}

type WriteFuture = BoxFuture<'static, (WriteKind, Result<(), MembershipError>)>;
type ReopenFuture =
    BoxFuture<'static, Result<(LeaseKeeper, LeaseKeepAliveStream), MembershipError>>;

struct Task {
    client: Client,
    node_key: String,
    ack_key: String,
    config: MembershipConfig,
    info: NodeInfo,
    ack: Option<Ack>,
    status: watch::Sender<LeaseStatus>,
    on_fence: FenceHook,
    health: Health,
    metrics: ClusterMetrics,
    commands: mpsc::Receiver<Command>,
    load: watch::Receiver<(Load, f64)>,
    shutdown: CancellationToken,
    node_waiters: Vec<Reply>,
    ack_waiters: Vec<Reply>,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = self.config.timing.backoff();
        let mut generation = 0;
        let mut revived: Option<Registered> = None;
        loop {
            let registered = match revived.take() {
                Some(registered) => registered,
                None => match self.register(&mut backoff).await {
                    Some(registered) => registered,
                    None => break,
                },
            };
            backoff.reset();
            generation += 1;
            let lease = registered.lease;
            tracing::info!(key = %self.node_key, lease, generation, "node registered");
            // Unfence before announcing: whoever sees `Live` sees an unfenced node.
            (self.on_fence)(false);
            self.status
                .send_replace(LeaseStatus::Live { lease, generation });
            self.health.set(Component::Membership, true);
            match self.live(registered).await {
                Exit::Shutdown(lease) => {
                    self.revoke(lease).await;
                    break;
                }
                exit @ (Exit::Presumed | Exit::Lost) => {
                    // Fence first: nothing may be written for our shards from here on.
                    (self.on_fence)(true);
                    self.health.set(Component::Membership, false);
                    self.metrics.lease_lost.inc();
                    self.status.send_replace(LeaseStatus::Lost { generation });
                    if matches!(exit, Exit::Presumed) {
                        tracing::error!(key = %self.node_key, lease, "node lease presumed lost; fenced, asking etcd whether it lives");
                        match self.revive(lease, &mut backoff).await {
                            Revival::Kept(registered) => {
                                self.metrics.lease_revived.inc();
                                tracing::info!(key = %self.node_key, lease, "etcd still holds the node lease; keeping it");
                                revived = Some(*registered);
                            }
                            Revival::Gone => {
                                tracing::warn!(key = %self.node_key, lease, "the node lease is gone; registering again");
                            }
                            Revival::Shutdown => break,
                        }
                    } else {
                        tracing::error!(key = %self.node_key, lease, "node lease lost; fenced, re-registering");
                    }
                }
            }
        }
        self.status.send_replace(LeaseStatus::Stopped);
        self.health.unregister(Component::Membership);
        for waiter in self
            .node_waiters
            .drain(..)
            .chain(self.ack_waiters.drain(..))
        {
            let _ = waiter.send(Err(MembershipError::Stopped));
        }
    }

    /// Registers (grant, put value and ack, open keepalive), retrying with backoff; `None`
    /// on shutdown. Commands arriving meanwhile update the values and wait for the next write.
    async fn register(
        &mut self,
        backoff: &mut switchboard_contract::backoff::Backoff,
    ) -> Option<Registered> {
        let mut failures = 0u32;
        loop {
            let attempt = register_once(
                self.client.clone(),
                self.node_key.clone(),
                self.info.encode(),
                self.ack
                    .as_ref()
                    .map(|ack| (self.ack_key.clone(), ack.encode())),
                self.config.ttl,
                self.config.timing,
            );
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    result = &mut attempt => break result,
                    Some(command) = self.commands.recv() => self.apply(command),
                    Ok(()) = self.load.changed() => { self.take_load(); }
                }
            };
            match result {
                Ok(registered) => return Some(registered),
                Err(error) => {
                    self.health.set(Component::Membership, false);
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(key = %self.node_key, %error, "node registration failed; retrying");
                    } else {
                        tracing::debug!(key = %self.node_key, %error, failures, "node registration still failing");
                    }
                }
            }
            let delay = tokio::time::sleep(backoff.next_delay());
            tokio::pin!(delay);
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return None,
                    () = &mut delay => break,
                    Some(command) = self.commands.recv() => self.apply(command),
                    Ok(()) = self.load.changed() => { self.take_load(); }
                }
            }
        }
    }

    /// After a presumed loss: waits for etcd to answer about `lease` (retrying with backoff)
    /// and, if it still holds it, reopens its keepalive and rewrites the node value and the
    /// last ack under it. Commands arriving meanwhile update the values to write.
    async fn revive(
        &mut self,
        lease: i64,
        backoff: &mut switchboard_contract::backoff::Backoff,
    ) -> Revival {
        loop {
            let attempt = revive_once(
                self.client.clone(),
                lease,
                self.node_key.clone(),
                self.info.encode(),
                self.ack
                    .as_ref()
                    .map(|ack| (self.ack_key.clone(), ack.encode())),
                self.config.timing,
            );
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return Revival::Shutdown,
                    result = &mut attempt => break result,
                    Some(command) = self.commands.recv() => self.apply(command),
                    Ok(()) = self.load.changed() => { self.take_load(); }
                }
            };
            match result {
                Ok(Some(registered)) => return Revival::Kept(Box::new(registered)),
                Ok(None) => return Revival::Gone,
                Err(error) => {
                    tracing::debug!(lease, %error, "cannot ask etcd about the lease yet");
                }
            }
            let delay = tokio::time::sleep(backoff.next_delay());
            tokio::pin!(delay);
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => return Revival::Shutdown,
                    () = &mut delay => break,
                    Some(command) = self.commands.recv() => self.apply(command),
                    Ok(()) = self.load.changed() => { self.take_load(); }
                }
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::SetState(state, reply) => {
                self.info.state = state;
                self.node_waiters.push(reply);
            }
            Command::Ack(ack, reply) => {
                self.ack = Some(ack);
                self.ack_waiters.push(reply);
            }
        }
    }

    fn take_load(&mut self) -> bool {
        let (load, error_rate) = *self.load.borrow_and_update();
        let changed = self.info.load != load || self.info.error_rate != error_rate;
        self.info.load = load;
        self.info.error_rate = error_rate;
        changed
    }

    async fn live(&mut self, registered: Registered) -> Exit {
        let Registered {
            lease,
            mut keeper,
            stream,
            mut tracker,
        } = registered;
        let interval = self.config.keepalive_interval;
        let mut stream = Some(stream);
        let mut reopen: Option<ReopenFuture> = None;
        let mut write: Option<WriteFuture> = None;
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Anything requested during registration may postdate the value it wrote.
        let mut node_dirty = !self.node_waiters.is_empty();
        let mut ack_dirty = !self.ack_waiters.is_empty();
        let mut load_dirty = false;
        let mut last_node_write = Instant::now();
        let mut in_flight: Vec<Reply> = Vec::new();
        let mut stale = false;
        // After a failed write, the next one waits a keepalive interval (no busy retry loop
        // while etcd refuses connections).
        let mut writes_paused_until = Instant::now();
        loop {
            if write.is_none() && Instant::now() >= writes_paused_until {
                let load_due =
                    load_dirty && last_node_write.elapsed() >= self.config.load_publish_interval;
                if node_dirty || load_due {
                    node_dirty = false;
                    load_dirty = false;
                    last_node_write = Instant::now();
                    in_flight = std::mem::take(&mut self.node_waiters);
                    write = Some(self.put(WriteKind::Node, lease));
                } else if ack_dirty {
                    ack_dirty = false;
                    in_flight = std::mem::take(&mut self.ack_waiters);
                    write = Some(self.put(WriteKind::Ack, lease));
                }
            }
            // Acks come every keepalive interval; two and a half missed ones mean etcd is
            // unreachable (reported as unhealthy well before the lease is presumed lost).
            let stale_at = tracker.last_ack() + interval * 2 + interval / 2;
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Exit::Shutdown(lease),
                () = tokio::time::sleep_until(tracker.expires_at()) => return Exit::Presumed,
                message = next_message(&mut stream) => match message {
                    Ok(Some(response)) => {
                        if tracker.on_ack(Instant::now(), response.ttl()) == AckOutcome::Gone {
                            tracing::warn!(lease, "etcd reports the node lease gone");
                            return Exit::Lost;
                        }
                        stale = false;
                        self.health.set(Component::Membership, true);
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!(lease, "lease keepalive stream broke; reopening");
                        stream = None;
                        tracker.on_stream_reset();
                        self.health.set(Component::Membership, false);
                    }
                },
                result = poll_opt(&mut reopen) => {
                    reopen = None;
                    match result {
                        Ok((new_keeper, new_stream)) => {
                            keeper = new_keeper;
                            stream = Some(new_stream);
                        }
                        Err(error) => tracing::debug!(lease, %error, "keepalive reopen failed"),
                    }
                }
                (kind, result) = poll_opt(&mut write) => {
                    write = None;
                    if let Err(error) = &result {
                        writes_paused_until = Instant::now() + interval;
                        tracing::warn!(key = %self.node_key, %error, "membership write failed; will retry");
                        match kind {
                            WriteKind::Node => node_dirty = true,
                            WriteKind::Ack => ack_dirty = true,
                        }
                    }
                    for waiter in in_flight.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                }
                _ = tick.tick() => {
                    if stream.is_none() {
                        if reopen.is_none() {
                            reopen = Some(self.reopen(lease));
                        }
                    } else if tracker.can_send() {
                        // Sending only enqueues on the stream; it never waits for etcd.
                        let now = Instant::now();
                        if keeper.keep_alive().await.is_ok() {
                            tracker.on_sent(now);
                        }
                    }
                }
                Some(command) = self.commands.recv() => match command {
                    Command::SetState(..) => { self.apply(command); node_dirty = true; }
                    Command::Ack(..) => { self.apply(command); ack_dirty = true; }
                },
                Ok(()) = self.load.changed() => {
                    if self.take_load() {
                        load_dirty = true;
                    }
                }
                () = tokio::time::sleep_until(stale_at), if !stale => {
                    stale = true;
                    self.health.set(Component::Membership, false);
                }
            }
        }
    }

    fn put(&self, kind: WriteKind, lease: i64) -> WriteFuture {
        let (key, value) = match kind {
            WriteKind::Node => (self.node_key.clone(), self.info.encode()),
            WriteKind::Ack => (
                self.ack_key.clone(),
                self.ack.clone().unwrap_or_default().encode(),
            ),
        };
        let mut kv = self.client.kv_client();
        let timeout = self.config.timing.request_timeout;
        Box::pin(async move {
            let put = kv.put(key, value, Some(PutOptions::new().with_lease(lease)));
            let result = match tokio::time::timeout(timeout, put).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(MembershipError::Etcd(e.to_string())),
                Err(_) => Err(MembershipError::Timeout),
            };
            (kind, result)
        })
    }

    fn reopen(&self, lease: i64) -> ReopenFuture {
        let mut leases = self.client.lease_client();
        let timeout = self.config.timing.request_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, leases.keep_alive(lease)).await {
                Ok(Ok(pair)) => Ok(pair),
                Ok(Err(e)) => Err(MembershipError::Etcd(e.to_string())),
                Err(_) => Err(MembershipError::Timeout),
            }
        })
    }

    async fn revoke(&self, lease: i64) {
        let mut leases = self.client.lease_client();
        match tokio::time::timeout(self.config.timing.request_timeout, leases.revoke(lease)).await {
            Ok(Ok(_)) => tracing::info!(key = %self.node_key, lease, "node lease revoked"),
            Ok(Err(error)) => {
                tracing::warn!(lease, %error, "lease revoke failed; it expires by TTL")
            }
            Err(_) => tracing::warn!(lease, "lease revoke timed out; it expires by TTL"),
        }
    }
}

/// What etcd said about a lease presumed lost.
enum Revival {
    /// It still holds it: registered under it again.
    Kept(Box<Registered>),
    /// It does not (expired or revoked).
    Gone,
    /// The node shuts down.
    Shutdown,
}

/// Asks etcd for `lease`'s remaining TTL; if it lives, opens its keepalive stream and rewrites
/// the node value (and the last ack) under it. `Ok(None)`: etcd no longer holds the lease;
/// `Err`: etcd did not answer.
async fn revive_once(
    client: Client,
    lease: i64,
    node_key: String,
    node_value: Vec<u8>,
    ack: Option<(String, Vec<u8>)>,
    timing: EtcdTiming,
) -> Result<Option<Registered>, MembershipError> {
    let timed = |_: tokio::time::error::Elapsed| MembershipError::Timeout;
    let etcd = |e: etcd_client::Error| MembershipError::Etcd(e.to_string());
    let timeout = timing.request_timeout;
    let mut leases = client.lease_client();
    let sent_at = Instant::now();
    let ttl = match tokio::time::timeout(timeout, leases.time_to_live(lease, None)).await {
        Ok(Ok(ttl)) => ttl,
        // etcd answers an unknown lease with an error status rather than a negative TTL.
        Ok(Err(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("lease not found") =>
        {
            return Ok(None);
        }
        Ok(Err(e)) => return Err(etcd(e)),
        Err(e) => return Err(timed(e)),
    };
    if ttl.ttl() <= 0 {
        return Ok(None);
    }
    let (keeper, stream) = tokio::time::timeout(timeout, leases.keep_alive(lease))
        .await
        .map_err(timed)?
        .map_err(etcd)?;
    let mut kv = client.kv_client();
    let mut puts = vec![(node_key, node_value)];
    puts.extend(ack);
    for (key, value) in puts {
        tokio::time::timeout(
            timeout,
            kv.put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        .map_err(timed)?
        .map_err(etcd)?;
    }
    // The lease lives at least `ttl` seconds from before the question was asked.
    let remaining = Duration::from_secs(ttl.ttl().unsigned_abs());
    Ok(Some(Registered {
        lease,
        keeper,
        stream,
        tracker: LeaseTracker::renewed(sent_at, remaining),
    }))
}

/// One registration attempt: grant, put the node value (and the last ack) under the lease,
/// open the keepalive stream (whose first round trip renews the lease once more).
async fn register_once(
    client: Client,
    node_key: String,
    node_value: Vec<u8>,
    ack: Option<(String, Vec<u8>)>,
    ttl: Duration,
    timing: EtcdTiming,
) -> Result<Registered, MembershipError> {
    let timed = |_: tokio::time::error::Elapsed| MembershipError::Timeout;
    let etcd = |e: etcd_client::Error| MembershipError::Etcd(e.to_string());
    let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let timeout = timing.request_timeout;
    let mut leases = client.lease_client();
    let grant = tokio::time::timeout(timeout, leases.grant(ttl_secs, None))
        .await
        .map_err(timed)?
        .map_err(etcd)?;
    let lease = grant.id();
    let granted = Duration::from_secs(grant.ttl().max(1).unsigned_abs());
    let mut kv = client.kv_client();
    let mut puts = vec![(node_key, node_value)];
    puts.extend(ack);
    for (key, value) in puts {
        tokio::time::timeout(
            timeout,
            kv.put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        .map_err(timed)?
        .map_err(etcd)?;
    }
    let sent_at = Instant::now();
    let (keeper, stream) = tokio::time::timeout(timeout, leases.keep_alive(lease))
        .await
        .map_err(timed)?
        .map_err(etcd)?;
    // Opening the stream renewed the lease with a request sent after `sent_at`.
    let tracker = LeaseTracker::renewed(sent_at, granted);
    Ok(Registered {
        lease,
        keeper,
        stream,
        tracker,
    })
}

async fn next_message(
    stream: &mut Option<LeaseKeepAliveStream>,
) -> Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

async fn poll_opt<T>(future: &mut Option<BoxFuture<'static, T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}
