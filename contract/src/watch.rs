//! The one resilient etcd watch loop the node and the operator both run, over one or more key
//! ranges: a consistent initial read (one transaction, one revision), then a watch from the
//! next revision; on any error, cancel or compaction it backs off, reads everything again and
//! re-watches. The [`WatchObserver`] sees an [`Update::Reset`] with the full contents after
//! every (re)sync, then incremental changes, and is told when the watch is up or down.

use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// One key or key prefix to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRange {
    /// The key, or the prefix when `prefix` is set.
    pub key: String,
    /// Watch every key starting with `key`.
    pub prefix: bool,
}

impl WatchRange {
    /// Every key under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            key: prefix.into(),
            prefix: true,
        }
    }

    /// Exactly `key`.
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            prefix: false,
        }
    }
}

/// One stored key and its value (for a delete: the key, no value, the delete's revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key.
    pub key: Vec<u8>,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The etcd revision of the key's last modification.
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl Entry {
    /// A key without value, as a delete reports it.
    pub fn deleted(key: impl Into<Vec<u8>>, revision: i64) -> Self {
        Self {
            key: key.into(),
            value: Vec::new(),
            mod_revision: revision,
            lease: 0,
        }
    }
}

impl From<&KeyValue> for Entry {
    fn from(kv: &KeyValue) -> Self {
        Self {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// What a watch consumer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The complete contents of every watched range at one revision (replace all state).
    Reset(Vec<Entry>),
    /// A key was created or changed.
    Put(Entry),
    /// A key was deleted (or its lease expired); the entry carries the delete's revision.
    Delete(Entry),
}

/// Timing of etcd calls shared by the background loops.
#[derive(Debug, Clone, Copy)]
pub struct EtcdTiming {
    /// Upper bound of one unary etcd request (read, txn, lease grant); a request that takes
    /// longer counts as etcd being unreachable.
    pub request_timeout: Duration,
    /// First retry delay after an error (doubles, with jitter).
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
}

impl Default for EtcdTiming {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_millis(1500),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl EtcdTiming {
    /// A fresh backoff with these delays.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_initial, self.backoff_max)
    }
}

/// Why one watch session ended (always followed by a resync).
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd request timed out")]
    Timeout,
    #[error("watch canceled by etcd: {0}")]
    Canceled(String),
    #[error("watch stream closed")]
    Closed,
    #[error("shutting down")]
    Shutdown,
    #[error("the observer is gone")]
    ObserverGone,
}

/// Whoever consumes a watch: the data, plus whether the watch is established.
///
/// Every method runs on the watch task and must not block.
pub trait WatchObserver: Send {
    /// One update, in order: a [`Update::Reset`] after every (re)sync, then changes.
    fn update(&mut self, update: Update);

    /// The watch became established (`true`: etcd confirmed every range) or ended (`false`,
    /// also after the last session when the loop stops).
    fn connected(&mut self, _up: bool) {}

    /// A session ended and the loop is about to read everything again (a resync).
    fn resyncing(&mut self) {}

    /// Called after the updates of one read or one watch response, which belong together (one
    /// etcd revision): an observer that batches hands them on here, and may wait (a bounded
    /// queue). `false` stops the watch for good (the consumer is gone).
    fn flush(&mut self) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }
}

/// What one watch needs besides its ranges and its observer.
#[derive(Clone)]
pub struct WatchSpec {
    /// The etcd client (one multiplexed connection).
    pub client: Client,
    /// Request timeout and reconnect backoff.
    pub timing: EtcdTiming,
    /// The loop stops when this is cancelled.
    pub shutdown: CancellationToken,
    /// Names the watch in logs.
    pub name: &'static str,
}

impl std::fmt::Debug for WatchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSpec")
            .field("name", &self.name)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// Runs the watch of `ranges` until `spec.shutdown` is cancelled, telling `observer`.
pub async fn run_watch(spec: WatchSpec, ranges: Vec<WatchRange>, mut observer: impl WatchObserver) {
    let WatchSpec {
        client,
        timing,
        shutdown,
        name,
    } = spec;
    let mut backoff = timing.backoff();
    loop {
        let mut established = false;
        let result = session(
            &client,
            &ranges,
            timing,
            &shutdown,
            &mut observer,
            &mut established,
        )
        .await;
        observer.connected(false);
        match result {
            SessionEnd::Shutdown | SessionEnd::ObserverGone => break,
            end if established => {
                // Warn once per outage; the retries that follow log at debug level.
                backoff.reset();
                tracing::warn!(watch = name, error = %end, "etcd watch interrupted; resyncing");
            }
            end => tracing::debug!(watch = name, error = %end, "etcd watch still down"),
        }
        observer.resyncing();
        let delay = backoff.next_delay();
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn session(
    client: &Client,
    ranges: &[WatchRange],
    timing: EtcdTiming,
    shutdown: &CancellationToken,
    observer: &mut impl WatchObserver,
    established: &mut bool,
) -> SessionEnd {
    let work = async {
        let (revision, entries) = read_all(client.clone(), ranges, timing).await?;
        observer.update(Update::Reset(entries));
        if !observer.flush().await {
            return Err(SessionEnd::ObserverGone);
        }
        let mut stream = open_watch(client.clone(), ranges, revision + 1, timing).await?;
        // "Established" means etcd confirmed every watcher; events may arrive interleaved
        // with the confirmations and are applied either way.
        let mut created = 0;
        loop {
            let response = stream.message().await?.ok_or(SessionEnd::Closed)?;
            if response.canceled() {
                let reason = if response.compact_revision() > 0 {
                    format!("compacted at revision {}", response.compact_revision())
                } else {
                    response.cancel_reason().to_owned()
                };
                return Err::<(), _>(SessionEnd::Canceled(reason));
            }
            if response.created() {
                created += 1;
                if created == ranges.len() {
                    observer.connected(true);
                    *established = true;
                }
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => observer.update(Update::Put(Entry::from(kv))),
                    EventType::Delete => observer.update(Update::Delete(Entry::from(kv))),
                }
            }
            if !response.events().is_empty() && !observer.flush().await {
                return Err(SessionEnd::ObserverGone);
            }
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => SessionEnd::Shutdown,
        result = work => match result {
            Ok(()) => SessionEnd::Closed,
            Err(end) => end,
        },
    }
}

async fn with_timeout<T>(
    timing: EtcdTiming,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SessionEnd> {
    match tokio::time::timeout(timing.request_timeout, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionEnd::Timeout),
    }
}

async fn read_all(
    client: Client,
    ranges: &[WatchRange],
    timing: EtcdTiming,
) -> Result<(i64, Vec<Entry>), SessionEnd> {
    let ops: Vec<TxnOp> = ranges
        .iter()
        .map(|r| {
            let options = r.prefix.then(|| GetOptions::new().with_prefix());
            TxnOp::get(r.key.clone(), options)
        })
        .collect();
    let mut kv = client.kv_client();
    let response = with_timeout(timing, kv.txn(Txn::new().and_then(ops))).await?;
    let revision = response.header().map(|h| h.revision()).unwrap_or_default();
    let mut entries = Vec::new();
    for op in response.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            entries.extend(get.kvs().iter().map(Entry::from));
        }
    }
    Ok((revision, entries))
}

async fn open_watch(
    client: Client,
    ranges: &[WatchRange],
    start_revision: i64,
    timing: EtcdTiming,
) -> Result<etcd_client::WatchStream, SessionEnd> {
    let options = |r: &WatchRange| {
        let options = WatchOptions::new().with_start_revision(start_revision);
        if r.prefix {
            options.with_prefix()
        } else {
            options
        }
    };
    let mut watch = client.watch_client();
    let first = ranges.first().ok_or(SessionEnd::Closed)?;
    let open = async {
        let mut stream = watch.watch(first.key.clone(), Some(options(first))).await?;
        for range in &ranges[1..] {
            stream
                .watch(range.key.clone(), Some(options(range)))
                .await?;
        }
        Ok(stream)
    };
    with_timeout(timing, open).await
}
