//! Records what etcd holds for one run cluster: a live watch of the cluster's prefix from the
//! run's first revision keeps every `assignments/` and `rooms/` write with every event the
//! snapshots held, and stamps ownership changes on the run's clock; at the end the final room
//! snapshots are read. Compacts the fleet etcd between runs so a long soak stays within etcd's
//! space quota.
//!
//! The history is watched live, not replayed at the end: a watch from a revision thousands of
//! writes back makes etcd load all of them at once, and that took the fleet etcd past its
//! 512 MiB memory limit (examples/etcd) after one 30 s run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, EventType, GetOptions, WatchOptions};
use signaling_node::room::snapshot;
use switchboard_contract::keys::{Assignment, Key, Keyspace, Value};

use super::error::SoakError;
use super::event_log::EventLog;
use super::history::{AssignmentWrite, FinalRoom, RoomWrite, SeenEvent};
use super::windows::TimedAssignment;

/// Largest watch response accepted: a run's history replays in a few large responses (room
/// snapshots are kilobytes each), bounded so a runaway history cannot take all memory.
pub const MAX_WATCH_MESSAGE: usize = 128 * 1024 * 1024;

/// What etcd holds for a run.
#[derive(Debug, Default)]
pub struct EtcdRecord {
    /// Final room states by room id.
    pub finals: BTreeMap<String, FinalRoom>,
    /// Every assignment write.
    pub assignments: Vec<AssignmentWrite>,
    /// Every room write.
    pub room_writes: Vec<RoomWrite>,
    /// Every event the room writes held.
    pub log: EventLog,
    /// Values that did not decode (each one is itself a finding).
    pub undecodable: Vec<String>,
    /// Deletions of room keys (`revision key`), for the kept evidence.
    pub room_deletes: Vec<String>,
}

fn seen(e: &switchboard_protocol::Event) -> SeenEvent {
    SeenEvent {
        room: e.room.clone(),
        seq: e.seq,
        kind: e.kind.name().to_string(),
        user: e.user.clone(),
        call_id: e.call_id.clone(),
        state: e.state.clone(),
    }
}

/// The fleet etcd's current revision: a run's history starts after it.
pub async fn revision(url: &str) -> Result<i64, SoakError> {
    let mut client = Client::connect([url], None).await?;
    let resp = client.get("\0", None).await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// Compacts the fleet etcd's history up to now and defragments it. Without it the
/// uncompacted history of every run filled etcd's default 2 GiB quota after about 128 runs
/// ("mvcc: database space exceeded"; every node then answered 1010).
pub async fn compact(url: &str) -> Result<(), SoakError> {
    let now = revision(url).await?;
    let mut client = Client::connect([url], None).await?;
    client
        .compact(now, Some(CompactionOptions::new().with_physical()))
        .await?;
    client.defragment().await?;
    Ok(())
}

/// What the live watch has recorded so far.
#[derive(Debug, Default)]
struct Recorded {
    record: EtcdRecord,
    /// The next revision the watch asks for.
    next: i64,
    /// Why the history has a hole (etcd compacted revisions the watch had not seen).
    gap: Option<String>,
}

impl Recorded {
    /// Takes in one watch event seen at `at_ms` on the run's clock.
    fn apply(&mut self, keys: &Keyspace, event: &etcd_client::Event) {
        let Some(kv) = event.kv() else { return };
        self.next = self.next.max(kv.mod_revision() + 1);
        let out = &mut self.record;
        if event.event_type() != EventType::Put {
            if let Ok(Key::Room { shard, room }) = keys.parse(kv.key()) {
                out.log.forget_room(&room);
                out.room_deletes.push(format!(
                    "rev {} delete room {shard}/{room}",
                    kv.mod_revision()
                ));
            }
            return;
        }
        match keys.parse(kv.key()) {
            Ok(Key::Assignment(shard)) => match Assignment::decode(kv.value()) {
                Ok(a) => out.assignments.push(AssignmentWrite {
                    revision: kv.mod_revision(),
                    shard,
                    node: a.node,
                    epoch: a.epoch,
                }),
                Err(e) => out.undecodable.push(format!("assignment {shard}: {e}")),
            },
            Ok(Key::Room { shard, room }) => match snapshot::decode(kv.value()) {
                Ok(d) => {
                    for e in &d.recent_events {
                        out.log.add(kv.mod_revision(), seen(e));
                    }
                    out.room_writes.push(RoomWrite {
                        revision: kv.mod_revision(),
                        shard,
                        room,
                        node: d.meta.node,
                        epoch: d.epoch,
                    });
                }
                Err(e) => out.undecodable.push(format!("room {shard}/{room}: {e}")),
            },
            _ => {}
        }
    }
}

/// A live watch of a run cluster's keys from the run's first revision; it reconnects from the
/// last revision it saw after a break (an etcd restart is a fault) and stops when dropped.
/// Its room snapshots make it lag under load, so ownership changes are stamped by an
/// [`OwnerWatch`] of their own.
pub struct HistoryWatch {
    url: String,
    keys: Keyspace,
    state: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
}

/// How long [`HistoryWatch::finish`] waits for the watch to reach etcd's last write.
pub const CATCH_UP: Duration = Duration::from_secs(30);

impl HistoryWatch {
    /// Starts watching `cluster` in `ns` from revision `since + 1`.
    pub fn start(url: &str, ns: &str, cluster: &str, since: i64) -> Result<Self, SoakError> {
        let keys = Keyspace::new(ns, cluster).map_err(|e| SoakError::Setup(e.to_string()))?;
        let state = Arc::new(Mutex::new(Recorded {
            next: since + 1,
            ..Recorded::default()
        }));
        let task = tokio::spawn(watch(url.to_string(), keys.clone(), Arc::clone(&state)));
        Ok(Self {
            url: url.to_string(),
            keys,
            state,
            task,
        })
    }

    /// Reads the final room snapshots, waits until the watch has seen every write up to now,
    /// and returns the record.
    pub async fn finish(&self) -> Result<EtcdRecord, SoakError> {
        let mut client = Client::connect([self.url.as_str()], None).await?;
        let mut finals = BTreeMap::new();
        let mut undecodable = Vec::new();
        let rooms = client
            .get(
                self.keys.rooms_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        for kv in rooms.kvs() {
            match snapshot::decode(kv.value()) {
                Ok(d) => {
                    finals.insert(
                        d.room.clone(),
                        FinalRoom {
                            last_seq: d.last_seq,
                            members: d.members.iter().map(|m| m.user.clone()).collect(),
                            recent: d.recent_events.iter().map(seen).collect(),
                        },
                    );
                }
                Err(e) => {
                    undecodable.push(format!("{}: {e}", String::from_utf8_lossy(kv.key())));
                }
            }
        }
        // Every put under the prefix is at or below the newest mod_revision of a live key
        // (deletes after it are not needed: the checks look at puts only).
        let live = client
            .get(
                self.keys.prefix(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let end = live
            .kvs()
            .iter()
            .map(|kv| kv.mod_revision())
            .max()
            .unwrap_or(0);
        let started = Instant::now();
        loop {
            {
                let mut state = self
                    .state
                    .lock()
                    .map_err(|_| SoakError::Setup("the history watch panicked".into()))?;
                if let Some(gap) = &state.gap {
                    return Err(SoakError::Setup(gap.clone()));
                }
                if state.next > end {
                    let mut record = std::mem::take(&mut state.record);
                    record.finals = finals;
                    record.undecodable.extend(undecodable);
                    return Ok(record);
                }
            }
            if started.elapsed() > CATCH_UP {
                return Err(SoakError::Timeout {
                    what: format!("the history watch to reach revision {end}"),
                    timeout: CATCH_UP,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HistoryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watch loop behind [`HistoryWatch`]: from the next revision not seen, again after each
/// break.
async fn watch(url: String, keys: Keyspace, state: Arc<Mutex<Recorded>>) {
    loop {
        let next = state.lock().map(|s| s.next).unwrap_or(0);
        let stream = async {
            let client = Client::connect([url.as_str()], None).await?;
            let options = WatchOptions::new().with_prefix().with_start_revision(next);
            let stream = client
                .watch_client()
                .max_decoding_message_size(MAX_WATCH_MESSAGE)
                .watch(keys.prefix(), Some(options))
                .await?;
            Ok::<_, etcd_client::Error>((client, stream))
        }
        .await;
        if let Ok((_client, mut stream)) = stream {
            while let Ok(Some(resp)) = stream.message().await {
                let Ok(mut state) = state.lock() else { return };
                if resp.compact_revision() > 0 {
                    state.gap = Some(format!(
                        "etcd compacted the run's history at revision {} before it was watched",
                        resp.compact_revision()
                    ));
                    return;
                }
                for event in resp.events() {
                    state.apply(&keys, event);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A live watch of a run cluster's `assignments/`, stamping each write on the run's clock;
/// it reconnects after etcd restarts (a fault) and stops when dropped.
pub struct OwnerWatch {
    seen: Arc<Mutex<Vec<TimedAssignment>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OwnerWatch {
    /// Starts watching `cluster`'s assignments from revision `since + 1`, stamping by `t0`.
    pub fn start(
        url: &str,
        ns: &str,
        cluster: &str,
        since: i64,
        t0: Instant,
    ) -> Result<Self, SoakError> {
        let keys = Keyspace::new(ns, cluster).map_err(|e| SoakError::Setup(e.to_string()))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(watch_owners(
            url.to_string(),
            keys,
            since,
            t0,
            Arc::clone(&seen),
        ));
        Ok(Self { seen, task })
    }

    /// Everything seen so far.
    pub fn take(&self) -> Vec<TimedAssignment> {
        self.seen
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

impl Drop for OwnerWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watch loop behind [`OwnerWatch`]: from the last revision seen, again after each error.
async fn watch_owners(
    url: String,
    keys: Keyspace,
    since: i64,
    t0: Instant,
    seen: Arc<Mutex<Vec<TimedAssignment>>>,
) {
    let mut next = since + 1;
    loop {
        let stream = async {
            let mut client = Client::connect([url.as_str()], None).await?;
            let prefix = keys.assignments_prefix();
            let options = WatchOptions::new().with_prefix().with_start_revision(next);
            let stream = client.watch(prefix, Some(options)).await?;
            Ok::<_, etcd_client::Error>((client, stream))
        }
        .await;
        if let Ok((_client, mut stream)) = stream {
            while let Ok(Some(resp)) = stream.message().await {
                let at_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    next = next.max(kv.mod_revision() + 1);
                    if event.event_type() != EventType::Put {
                        continue;
                    }
                    if let (Ok(Key::Assignment(shard)), Ok(a)) =
                        (keys.parse(kv.key()), Assignment::decode(kv.value()))
                        && let Ok(mut seen) = seen.lock()
                    {
                        seen.push(TimedAssignment {
                            at_ms,
                            shard,
                            node: a.node,
                            epoch: a.epoch,
                        });
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
