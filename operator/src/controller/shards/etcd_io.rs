//! etcd side of the shard manager: the contract's watch loop over `nodes/`, `assignments/`,
//! `acks/` and `rollout` (a consistent read, then a watch from the next revision, re-read after
//! any failure) feeding the manager's inputs, batched conditional assignment writes, lease
//! revocation, ack cleanup and room counts.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use futures::StreamExt;
use switchboard_contract::keys::{Ack, Assignment, Key, Keyspace, NodeInfo, RolloutValue, Value};
use switchboard_contract::watch::{
    Entry, EtcdTiming, Update, WatchObserver, WatchRange, WatchSpec, run_watch,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::Write;
use super::health::NodeObs;
use super::state::{Change, Input, Tracked};
use crate::placement::ShardId;

/// Most operations in one etcd transaction (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Bound on every etcd request, so a hung connection cannot stall the manager.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd request failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client returned an error.
    #[error("etcd request failed: {0}")]
    Client(#[from] etcd_client::Error),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("etcd request timed out")]
    Timeout,
}

async fn timed<T>(
    future: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(EtcdError::Timeout),
    }
}

/// Decodes a put of a watched key (`None`: not a key the manager watches, or unusable).
pub fn decode_put(keys: &Keyspace, kv: &Entry) -> Option<Change> {
    let key = match keys.parse(&kv.key) {
        Ok(key) => key,
        Err(error) => {
            tracing::debug!(%error, "ignoring a key outside the keyspace");
            return None;
        }
    };
    match key {
        Key::Node(name) => match NodeInfo::decode(&kv.value) {
            Ok(info) => Some(Change::Node(
                name,
                NodeObs {
                    info,
                    lease: kv.lease,
                    mod_revision: kv.mod_revision,
                },
            )),
            Err(error) => {
                tracing::warn!(node = %name, %error, "node value does not decode; node ignored");
                Some(Change::NodeGone(name))
            }
        },
        Key::Assignment(shard) => {
            let value = Assignment::decode(&kv.value)
                .inspect_err(|error| tracing::warn!(shard, %error, "assignment does not decode"))
                .ok();
            Some(Change::Assignment(shard, value, kv.mod_revision))
        }
        Key::Ack(pod) => {
            let value = Ack::decode(&kv.value)
                .inspect_err(|error| tracing::warn!(%pod, %error, "ack does not decode"))
                .unwrap_or_default();
            Some(Change::Ack(
                pod,
                Tracked {
                    value,
                    mod_revision: kv.mod_revision,
                },
            ))
        }
        Key::Rollout => match RolloutValue::decode(&kv.value) {
            Ok(value) => Some(Change::Rollout(value)),
            Err(error) => {
                // Like the nodes: an unreadable value keeps the last good one in effect.
                tracing::warn!(%error, "rollout value does not decode; keeping the last good one");
                None
            }
        },
        Key::Config | Key::Room { .. } => None,
    }
}

/// Decodes a delete of a watched key.
pub fn decode_delete(keys: &Keyspace, kv: &Entry) -> Option<Change> {
    match keys.parse(&kv.key).ok()? {
        Key::Node(name) => Some(Change::NodeGone(name)),
        Key::Assignment(shard) => Some(Change::AssignmentGone(shard, kv.mod_revision)),
        Key::Ack(pod) => Some(Change::AckGone(pod)),
        Key::Rollout => Some(Change::RolloutGone),
        Key::Config | Key::Room { .. } => None,
    }
}

/// Feeds `inputs` with a full read, then the watch's changes, until the manager is gone
/// (its input channel closed): the contract's watch loop, which backs off and reads everything
/// again after any failure.
pub async fn watch_loop(client: Client, keys: Keyspace, inputs: mpsc::Sender<Input>) {
    let spec = WatchSpec {
        client,
        timing: EtcdTiming {
            request_timeout: REQUEST_TIMEOUT,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        },
        // The loop ends when the manager drops its inputs (`flush` returns false).
        shutdown: CancellationToken::new(),
        name: "shard_manager",
    };
    let ranges = vec![
        WatchRange::prefix(keys.nodes_prefix()),
        WatchRange::prefix(keys.assignments_prefix()),
        WatchRange::prefix(keys.acks_prefix()),
        WatchRange::key(keys.rollout()),
    ];
    let feed = Feed {
        keys,
        inputs,
        pending: None,
    };
    run_watch(spec, ranges, feed).await;
}

/// Turns watch updates into manager inputs: one input per read or per watch response, since
/// the manager re-evaluates after each input and a response is one etcd revision.
struct Feed {
    keys: Keyspace,
    inputs: mpsc::Sender<Input>,
    pending: Option<Input>,
}

impl WatchObserver for Feed {
    fn update(&mut self, update: Update) {
        let keys = &self.keys;
        match update {
            Update::Reset(entries) => {
                let changes = entries.iter().filter_map(|e| decode_put(keys, e)).collect();
                self.pending = Some(Input::Reset(changes));
            }
            Update::Put(entry) => self.push(decode_put(keys, &entry)),
            Update::Delete(entry) => self.push(decode_delete(keys, &entry)),
        }
    }

    async fn flush(&mut self) -> bool {
        match self.pending.take() {
            Some(Input::Changes(changes)) if changes.is_empty() => true,
            Some(input) => self.inputs.send(input).await.is_ok(),
            None => true,
        }
    }
}

impl Feed {
    fn push(&mut self, change: Option<Change>) {
        let Some(change) = change else { return };
        match &mut self.pending {
            Some(Input::Changes(changes)) => changes.push(change),
            _ => self.pending = Some(Input::Changes(vec![change])),
        }
    }
}

/// What became of one batch of writes.
#[derive(Debug)]
pub enum Outcome {
    /// Committed at this revision.
    Written(Vec<Write>, i64),
    /// A compare failed: nothing was written; these are the keys' current values.
    Conflict(Vec<Write>, Vec<Change>),
    /// The request failed; nothing is known to be written.
    Failed(Vec<Write>, EtcdError),
}

/// Writes `writes` in transactions of at most `batch` keys (each compared on its mod
/// revision), `concurrency` transactions at a time.
pub async fn commit(
    client: &Client,
    keys: &Keyspace,
    writes: Vec<Write>,
    batch: usize,
    concurrency: usize,
) -> Vec<Outcome> {
    futures::stream::iter(batches(writes, batch))
        .map(|writes| commit_batch(client.clone(), keys, writes))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Splits `writes` into transactions of at most `batch` (clamped to 1..=[`MAX_TXN_OPS`]).
pub fn batches<T>(writes: Vec<T>, batch: usize) -> Vec<Vec<T>> {
    let batch = batch.clamp(1, MAX_TXN_OPS);
    let mut out = Vec::with_capacity(writes.len().div_ceil(batch));
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        out.push(writes.by_ref().take(batch).collect());
    }
    out
}

async fn commit_batch(client: Client, keys: &Keyspace, writes: Vec<Write>) -> Outcome {
    let mut compares = Vec::with_capacity(writes.len());
    let mut puts = Vec::with_capacity(writes.len());
    let mut gets = Vec::with_capacity(writes.len());
    for write in &writes {
        let key = keys.assignment(write.shard);
        compares.push(Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            write.expect,
        ));
        puts.push(TxnOp::put(key.clone(), write.value.encode(), None));
        gets.push(TxnOp::get(key, None));
    }
    let txn = Txn::new().when(compares).and_then(puts).or_else(gets);
    let response = match timed(client.kv_client().txn(txn)).await {
        Ok(response) => response,
        Err(error) => return Outcome::Failed(writes, error),
    };
    if response.succeeded() {
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        return Outcome::Written(writes, revision);
    }
    let responses = response.op_responses();
    let mut current = Vec::with_capacity(writes.len());
    for (write, op) in writes.iter().zip(responses) {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        match get.kvs().first() {
            Some(kv) => current.extend(decode_put(keys, &Entry::from(kv))),
            // Gone: a delete "at" the newest revision we know nothing about.
            None => current.push(Change::AssignmentGone(write.shard, i64::MAX)),
        }
    }
    Outcome::Conflict(writes, current)
}

/// Revokes `lease` (fencing its node). A lease that no longer exists counts as revoked.
pub async fn revoke(client: &Client, lease: i64) -> Result<(), EtcdError> {
    match timed(client.lease_client().revoke(lease)).await {
        Ok(_) => Ok(()),
        Err(EtcdError::Client(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("lease not found") =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Deletes `acks/<pod>` if it still has `mod_revision`.
pub async fn delete_ack(
    client: &Client,
    keys: &Keyspace,
    pod: &str,
    mod_revision: i64,
) -> Result<(), EtcdError> {
    let Ok(key) = keys.ack(pod) else {
        return Ok(());
    };
    let txn = Txn::new()
        .when(vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            mod_revision,
        )])
        .and_then(vec![TxnOp::delete(key, None)]);
    timed(client.kv_client().txn(txn)).await.map(|_| ())
}

/// Counts room keys per shard with a paged keys-only scan of `rooms/` (memory bounded by the
/// page size, not the number of rooms).
pub async fn count_rooms(
    client: &Client,
    keys: &Keyspace,
    page: i64,
) -> Result<BTreeMap<ShardId, u64>, EtcdError> {
    let prefix = keys.rooms_prefix();
    let mut end = prefix.clone().into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1; // '/' + 1: the end of the prefix range
    }
    let mut start = prefix.into_bytes();
    let mut counts: BTreeMap<ShardId, u64> = BTreeMap::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(page);
        let response = timed(client.kv_client().get(start.clone(), Some(options))).await?;
        for kv in response.kvs() {
            if let Ok(Key::Room { shard, .. }) = keys.parse(kv.key()) {
                *counts.entry(shard).or_insert(0) += 1;
            }
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(counts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_and_keep_order() {
        let split = batches((0..300).collect(), 1000);
        assert_eq!(
            split.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![128, 128, 44]
        );
        assert_eq!(split.concat(), (0..300).collect::<Vec<_>>());
        let single = batches((0..3).collect(), 0);
        assert_eq!(single, vec![vec![0], vec![1], vec![2]]);
        // Each batch holds only its own elements (no quadratic capacity).
        assert!(single.iter().all(|b| b.capacity() <= 1));
        assert!(batches(Vec::<u8>::new(), 5).is_empty());
    }
}
