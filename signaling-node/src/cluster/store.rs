//! Durable room state in etcd: [`EtcdRoomStore`] implements [`RoomStore`] with fenced group
//! commit.
//!
//! **Fencing.** Every transaction's compare checks, for each shard it writes, that the value
//! of `assignments/<shard>` is byte-for-byte the value this node saw when it took the shard
//! (held in the [`OwnershipCache`]). The value names the node and the epoch, so any change of
//! owner or epoch fails the compare. Comparing the value rather than the key's
//! `mod_revision` means an idempotent re-put of the same assignment by the operator (a
//! resync, a restarted operator) does not fence a healthy owner; and to be robust against an
//! equivalent value spelled differently, a failed compare is re-checked by parsing the
//! current assignment (read in the same transaction's failure branch): if it still names this
//! node with the held epoch the write is retried with the current bytes, otherwise the
//! shard's commits fail with [`StoreError::Fenced`]. A fenced node (lease lost) holds no
//! shard, so its commits fail with `Fenced` without a round trip.
//!
//! **Group commit.** Commits go through a bounded queue to one committer task. While one
//! transaction is in flight, new commits queue; the next transaction takes everything queued
//! (up to [`StoreConfig::max_batch_ops`] distinct rooms and [`StoreConfig::max_batch_bytes`]),
//! so there is no fixed delay and no per-commit round trip under load. Several commits of the
//! same room in one batch collapse into the last one (etcd refuses a key twice in one txn);
//! every caller resolves with the batch's result. One transaction covers all shards of the
//! batch: if some shard's compare fails, the whole transaction fails; the committer then
//! refuses only the fenced shards' commits and retries the rest at once (fencing is rare —
//! it happens when a shard moves — so the common path stays one transaction).
//!
//! **Flush.** [`EtcdRoomStore::flush`] queues a barrier behind every commit already queued
//! and resolves once all of them resolved (committed, fenced or refused): a handoff calls it
//! after its rooms stopped, so nothing of the shard is still in flight when the release is
//! acknowledged.
//!
//! **In doubt.** An etcd error or a transaction slower than [`StoreConfig::txn_timeout`]
//! fails every commit of the batch with [`StoreError::InDoubt`]: the transaction was sent and
//! may still have been applied, so the room must not reuse its event seqs for other events;
//! it makes the same commit again (docs/architecture.md, "A commit in doubt"). Commits that
//! queued behind it were never sent and fail with [`StoreError::Unavailable`]: the room
//! refuses them (1010). So do the commits of a transaction etcd refused without applying it
//! (its space quota is full: the NOSPACE alarm).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::{ClusterMetrics, outcome};
use super::ownership::OwnershipCache;
use crate::store::{RoomStore, ShardRooms, StoreError};
use switchboard_contract::keys::{Assignment, Key, Keyspace, Value};
use switchboard_contract::shard::ShardId;

/// Tuning of the group committer.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Commits that may wait for the committer; a full queue makes callers wait (backpressure).
    pub queue_capacity: usize,
    /// Most distinct rooms in one transaction (etcd's default `--max-txn-ops` is 128).
    pub max_batch_ops: usize,
    /// Most snapshot bytes in one transaction (etcd's default request limit is 1.5 MiB); a
    /// single larger snapshot is refused.
    pub max_batch_bytes: usize,
    /// Longest wait for one transaction before its commits fail as unavailable.
    pub txn_timeout: Duration,
    /// Transactions retried in one batch after compares failed on shards still held.
    pub max_fence_retries: usize,
    /// Keys read per request when loading a shard.
    pub load_page_size: i64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            max_batch_ops: 128,
            max_batch_bytes: 1024 * 1024,
            txn_timeout: Duration::from_millis(1500),
            max_fence_retries: 3,
            load_page_size: 256,
        }
    }
}

impl StoreConfig {
    /// One transaction per commit (no grouping): the baseline of the group-commit benchmark.
    pub fn unbatched() -> Self {
        Self {
            max_batch_ops: 1,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
enum Op {
    Put(Vec<u8>),
    Delete,
}

impl Op {
    fn len(&self) -> usize {
        match self {
            Op::Put(bytes) => bytes.len(),
            Op::Delete => 0,
        }
    }
}

type Done = oneshot::Sender<Result<(), StoreError>>;

/// One entry of the committer's queue.
#[derive(Debug)]
enum Queued {
    Commit(Request),
    /// Resolves once every commit queued before it resolved.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Request {
    shard: ShardId,
    room: String,
    key: String,
    op: Op,
    done: Done,
    queued_at: Instant,
}

/// The etcd-backed, fenced, group-committing room store.
#[derive(Debug, Clone)]
pub struct EtcdRoomStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    keys: Keyspace,
    queue: mpsc::Sender<Queued>,
    metrics: ClusterMetrics,
    config: StoreConfig,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRoomStore")
            .field("prefix", &self.keys.prefix())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EtcdRoomStore {
    /// Starts the committer task. Writes are fenced on the assignments held in `ownership`.
    /// The task ends when the last clone of the store is dropped.
    pub fn start(
        client: Client,
        ownership: Arc<OwnershipCache>,
        config: StoreConfig,
        metrics: ClusterMetrics,
    ) -> Self {
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let keys = ownership.keys().clone();
        let committer = Committer {
            client: client.clone(),
            keys: keys.clone(),
            ownership,
            metrics: metrics.clone(),
            config,
        };
        tokio::spawn(committer.run(rx));
        Self {
            inner: Arc::new(Inner {
                client,
                keys,
                queue,
                metrics,
                config,
            }),
        }
    }

    fn submit(
        &self,
        shard: ShardId,
        room: &str,
        op: Op,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let inner = &self.inner;
        inner.metrics.store_commits.inc();
        let key = match inner.keys.room(shard, room) {
            Ok(key) => key,
            Err(e) => {
                return Box::pin(std::future::ready(Err(StoreError::Unavailable(
                    e.to_string(),
                ))));
            }
        };
        if op.len() > inner.config.max_batch_bytes {
            let message = format!(
                "snapshot of {} bytes exceeds the {} byte limit",
                op.len(),
                inner.config.max_batch_bytes
            );
            return Box::pin(std::future::ready(Err(StoreError::Unavailable(message))));
        }
        let queue = inner.queue.clone();
        let histogram = inner.metrics.store_commit_seconds.clone();
        let (done, result) = oneshot::channel();
        let request = Request {
            shard,
            room: room.to_owned(),
            key,
            op,
            done,
            queued_at: Instant::now(),
        };
        Box::pin(async move {
            let started = Instant::now();
            let stopped = || StoreError::Unavailable("room store stopped".into());
            queue
                .send(Queued::Commit(request))
                .await
                .map_err(|_| stopped())?;
            let result = result.await.map_err(|_| stopped())?;
            histogram.observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

impl EtcdRoomStore {
    /// Resolves once every commit queued before this call resolved (see the module doc).
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.inner.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl RoomStore for EtcdRoomStore {
    fn commit(
        &self,
        shard: ShardId,
        room: &str,
        snapshot: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(shard, room, Op::Put(snapshot))
    }

    fn remove(&self, shard: ShardId, room: &str) -> BoxFuture<'static, Result<(), StoreError>> {
        self.submit(shard, room, Op::Delete)
    }

    fn load_shard(&self, shard: ShardId) -> BoxFuture<'static, Result<ShardRooms, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let timeout = inner.config.txn_timeout;
            match tokio::time::timeout(timeout * 4, load(&inner, shard)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "loading shard {shard} timed out"
                ))),
            }
        })
    }
}

/// Reads every room of `shard` page by page at one revision (a consistent snapshot).
async fn load(inner: &Inner, shard: ShardId) -> Result<ShardRooms, StoreError> {
    let prefix = inner.keys.shard_rooms_prefix(shard);
    let end = prefix_end(prefix.as_bytes());
    let mut kv = inner.client.kv_client();
    let mut from = prefix.into_bytes();
    let mut revision = 0;
    let mut rooms = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(inner.config.load_page_size.max(1));
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut page = kv
            .get(from.clone(), Some(options))
            .await
            .map_err(|e| StoreError::Unavailable(format!("loading shard {shard}: {e}")))?;
        if revision == 0 {
            revision = page.header().map(|h| h.revision()).unwrap_or_default();
        }
        let more = page.more();
        let kvs = page.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        for kv in kvs {
            match inner.keys.parse(kv.key()) {
                Ok(Key::Room { room, .. }) => rooms.push((room, kv.value().to_vec())),
                other => {
                    tracing::warn!(shard, ?other, "skipping unexpected key in a shard's rooms")
                }
            }
        }
        if !more {
            return Ok(rooms);
        }
    }
}

/// The end of the key range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The rooms of one batch, one slot per room (later commits of a room replace earlier ones).
#[derive(Debug, Default)]
struct Batch {
    slots: BTreeMap<(ShardId, String), Slot>,
    bytes: usize,
    flushes: Vec<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Slot {
    key: String,
    op: Op,
    waiters: Vec<Done>,
}

impl Batch {
    fn fits(&self, request: &Request, config: &StoreConfig) -> bool {
        self.slots.is_empty()
            || (self.slots.len() < config.max_batch_ops
                && self.bytes + request.op.len() <= config.max_batch_bytes)
    }

    fn push(&mut self, request: Request) {
        self.bytes += request.op.len();
        let slot = self
            .slots
            .entry((request.shard, request.room))
            .or_insert_with(|| Slot {
                key: request.key,
                op: Op::Delete,
                waiters: Vec::new(),
            });
        self.bytes -= slot.op.len();
        slot.op = request.op;
        slot.waiters.push(request.done);
    }

    fn shards(&self) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = self.slots.keys().map(|(shard, _)| *shard).collect();
        shards.dedup();
        shards
    }

    /// Resolves and removes every slot of `shard`; returns how many callers were told.
    fn resolve_shard(&mut self, shard: ShardId, result: &Result<(), StoreError>) -> usize {
        let keys: Vec<(ShardId, String)> = self
            .slots
            .keys()
            .filter(|(s, _)| *s == shard)
            .cloned()
            .collect();
        let mut told = 0;
        for key in keys {
            if let Some(slot) = self.slots.remove(&key) {
                told += slot.waiters.len();
                for waiter in slot.waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        }
        told
    }

    fn resolve_all(self, result: &Result<(), StoreError>) {
        for slot in self.slots.into_values() {
            for waiter in slot.waiters {
                let _ = waiter.send(result.clone());
            }
        }
        for flush in self.flushes {
            let _ = flush.send(());
        }
    }
}

struct Committer {
    client: Client,
    keys: Keyspace,
    ownership: Arc<OwnershipCache>,
    metrics: ClusterMetrics,
    config: StoreConfig,
}

impl Committer {
    async fn run(self, mut rx: mpsc::Receiver<Queued>) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(request) => Queued::Commit(request),
                None => match rx.recv().await {
                    Some(queued) => queued,
                    None => return,
                },
            };
            let mut batch = Batch::default();
            let mut next = Some(first);
            // Everything that queued while the previous transaction was in flight.
            while let Some(queued) = next.take().or_else(|| rx.try_recv().ok()) {
                match queued {
                    Queued::Flush(done) => batch.flushes.push(done),
                    Queued::Commit(request) if batch.fits(&request, &self.config) => {
                        self.metrics
                            .store_queue_seconds
                            .observe(request.queued_at.elapsed().as_secs_f64());
                        batch.push(request)
                    }
                    Queued::Commit(request) => {
                        carry = Some(request);
                        break;
                    }
                }
            }
            if batch.slots.is_empty() {
                // Only flushes: everything before them already resolved.
                batch.resolve_all(&Ok(()));
                continue;
            }
            if let Err(error) = self.commit(batch).await {
                // Commits that queued while etcd failed to answer are refused now rather than
                // each waiting out its own timeout: the wait for a 1010 stays one timeout
                // long, however deep the queue.
                let mut refused = 0usize;
                for queued in carry
                    .take()
                    .map(Queued::Commit)
                    .into_iter()
                    .chain(std::iter::from_fn(|| rx.try_recv().ok()))
                {
                    match queued {
                        Queued::Commit(request) => {
                            let _ = request.done.send(Err(error.clone()));
                            refused += 1;
                        }
                        Queued::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
                if refused > 0 {
                    tracing::warn!(refused, "queued commits refused while etcd is unavailable");
                }
            }
        }
    }

    /// Commits one batch; returns the error when etcd was unavailable.
    async fn commit(&self, mut batch: Batch) -> Result<(), StoreError> {
        // Compare values that replace the cached ones after a compare failed on a shard this
        // node still holds (same node and epoch, different bytes).
        let mut current: BTreeMap<ShardId, (u64, Vec<u8>)> = BTreeMap::new();
        for _round in 0..=self.config.max_fence_retries {
            let mut fenced_shards = Vec::new();
            let mut held = Vec::new();
            for shard in batch.shards() {
                let fresh = current.get(&shard).cloned();
                match (self.ownership.held(shard), fresh) {
                    (Some(h), Some((epoch, raw))) if h.epoch == epoch => {
                        held.push((shard, epoch, raw))
                    }
                    (Some(h), _) => held.push((shard, h.epoch, h.raw)),
                    (None, _) => fenced_shards.push(shard),
                }
            }
            for shard in fenced_shards {
                self.fence(&mut batch, shard);
            }
            if batch.slots.is_empty() {
                batch.resolve_all(&Ok(()));
                return Ok(());
            }
            let compares: Vec<Compare> = held
                .iter()
                .map(|(shard, _, raw)| {
                    Compare::value(self.keys.assignment(*shard), CompareOp::Equal, raw.clone())
                })
                .collect();
            let reads: Vec<TxnOp> = held
                .iter()
                .map(|(shard, _, _)| TxnOp::get(self.keys.assignment(*shard), None))
                .collect();
            let writes: Vec<TxnOp> = batch
                .slots
                .values()
                .map(|slot| match &slot.op {
                    Op::Put(bytes) => TxnOp::put(slot.key.clone(), bytes.clone(), None),
                    Op::Delete => TxnOp::delete(slot.key.clone(), None),
                })
                .collect();
            let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
            let mut kv = self.client.kv_client();
            let sent = Instant::now();
            let response = tokio::time::timeout(self.config.txn_timeout, kv.txn(txn)).await;
            self.metrics
                .store_txn_seconds
                .observe(sent.elapsed().as_secs_f64());
            let response = match response {
                Ok(Ok(response)) => response,
                Ok(Err(error)) if refused_unapplied(&error) => {
                    return self
                        .unavailable(batch, format!("etcd refused the transaction: {error}"));
                }
                Ok(Err(error)) => {
                    return self.in_doubt(batch, format!("etcd transaction failed: {error}"));
                }
                Err(_) => return self.in_doubt(batch, "etcd transaction timed out".into()),
            };
            if response.succeeded() {
                self.metrics
                    .store_txns
                    .with_label_values(&[outcome::COMMITTED])
                    .inc();
                self.metrics
                    .store_batch_size
                    .observe(batch.slots.len() as f64);
                batch.resolve_all(&Ok(()));
                return Ok(());
            }
            self.metrics
                .store_txns
                .with_label_values(&[outcome::FENCED])
                .inc();
            let responses = response.op_responses();
            for ((shard, epoch, raw), op) in held.iter().zip(responses) {
                let now = match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                };
                let still_ours = now
                    .as_ref()
                    .and_then(|bytes| Assignment::decode(bytes).ok())
                    .is_some_and(|a| a.node == self.ownership.node() && a.epoch == *epoch);
                match now {
                    Some(bytes) if still_ours => {
                        if bytes != *raw {
                            current.insert(*shard, (*epoch, bytes));
                        }
                    }
                    _ => {
                        // The view still says ours under `epoch`, etcd says otherwise: stop
                        // routing the shard here until the view catches up, since its rooms
                        // stop on the refusal and a resume routed here would find no room.
                        self.ownership.mark_stale(*shard, *epoch);
                        self.fence(&mut batch, *shard);
                    }
                }
            }
        }
        // Not an etcd outage: refuse this batch only; the next one tries normally.
        let _ = self.unavailable(
            batch,
            "shard assignments kept changing during the commit".into(),
        );
        Ok(())
    }

    fn fence(&self, batch: &mut Batch, shard: ShardId) {
        let told = batch.resolve_shard(shard, &Err(StoreError::Fenced { shard }));
        self.metrics.store_fenced.inc_by(told as u64);
        tracing::warn!(
            shard,
            commits = told,
            "commits refused: shard no longer held by this node"
        );
    }

    /// Fails a batch whose transaction was answered and not applied (its compares failed, or
    /// etcd refused it because its space quota is full).
    fn unavailable(&self, batch: Batch, message: String) -> Result<(), StoreError> {
        self.metrics
            .store_txns
            .with_label_values(&[outcome::UNAVAILABLE])
            .inc();
        tracing::warn!(rooms = batch.slots.len(), %message, "room commits failed");
        let error = StoreError::Unavailable(message);
        batch.resolve_all(&Err(error.clone()));
        Err(error)
    }

    /// Fails a batch whose transaction got no answer: every commit in it is in doubt. Returns
    /// the error for the commits queued behind it, which were never sent.
    fn in_doubt(&self, batch: Batch, message: String) -> Result<(), StoreError> {
        self.metrics
            .store_txns
            .with_label_values(&[outcome::UNAVAILABLE])
            .inc();
        tracing::warn!(rooms = batch.slots.len(), %message, "room commits failed, outcome unknown");
        batch.resolve_all(&Err(StoreError::InDoubt(message.clone())));
        Err(StoreError::Unavailable(message))
    }
}

/// gRPC's RESOURCE_EXHAUSTED, etcd's answer when its space quota is full ("mvcc: database
/// space exceeded", the NOSPACE alarm).
const RESOURCE_EXHAUSTED: i32 = 8;

/// Whether etcd answered that it did not apply a request (its space quota is full): unlike a
/// timeout or a broken connection, such an answer leaves no doubt.
fn refused_unapplied(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if i32::from(status.code()) == RESOURCE_EXHAUSTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        shard: ShardId,
        room: &str,
        op: Op,
    ) -> (Request, oneshot::Receiver<Result<(), StoreError>>) {
        let (done, rx) = oneshot::channel();
        let keys = Keyspace::new("n", "c").unwrap();
        let request = Request {
            shard,
            room: room.into(),
            key: keys.room(shard, room).unwrap(),
            op,
            done,
            queued_at: Instant::now(),
        };
        (request, rx)
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn a_batch_collapses_commits_of_one_room_and_tells_every_caller() {
        let mut batch = Batch::default();
        let (a1, mut rx1) = request(1, "a", Op::Put(vec![1; 10]));
        let (a2, mut rx2) = request(1, "a", Op::Put(vec![2; 4]));
        let (b, mut rx3) = request(2, "b", Op::Delete);
        batch.push(a1);
        batch.push(a2);
        batch.push(b);
        assert_eq!(batch.slots.len(), 2);
        assert_eq!(batch.bytes, 4);
        assert_eq!(batch.shards(), vec![1, 2]);
        assert!(matches!(&batch.slots[&(1, "a".to_owned())].op, Op::Put(v) if v == &vec![2; 4]));
        assert_eq!(
            batch.resolve_shard(1, &Err(StoreError::Fenced { shard: 1 })),
            2
        );
        batch.resolve_all(&Ok(()));
        assert_eq!(
            rx1.try_recv().unwrap(),
            Err(StoreError::Fenced { shard: 1 })
        );
        assert_eq!(
            rx2.try_recv().unwrap(),
            Err(StoreError::Fenced { shard: 1 })
        );
        assert_eq!(rx3.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn batches_respect_op_and_byte_limits() {
        let config = StoreConfig {
            max_batch_ops: 2,
            max_batch_bytes: 10,
            ..StoreConfig::default()
        };
        let mut batch = Batch::default();
        let (r, _rx) = request(1, "a", Op::Put(vec![0; 8]));
        assert!(batch.fits(&r, &config));
        batch.push(r);
        let (r, _rx2) = request(1, "b", Op::Put(vec![0; 3]));
        assert!(!batch.fits(&r, &config), "bytes");
        let (r, _rx3) = request(1, "b", Op::Put(vec![0; 2]));
        assert!(batch.fits(&r, &config));
        batch.push(r);
        let (r, _rx4) = request(1, "c", Op::Delete);
        assert!(!batch.fits(&r, &config), "ops");
    }
}
