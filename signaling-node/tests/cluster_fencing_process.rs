//! Fencing with real node processes: two `signaling-node serve` processes in cluster mode
//! against a real etcd, this test standing in for the operator.
//!
//! Node A owns the shard of a live room; A is frozen (SIGSTOP) past its 2 s lease, so its node
//! key expires; the stand-in operator reassigns the shard to B with `epoch + 1` (one txn that
//! compares the assignment's mod revision); a member resumes on B and another joins there
//! (transitions B commits). A member still connected to the frozen A sends a transition
//! that sits in A's socket buffer. Then A is thawed (SIGCONT): it processes that transition
//! while its view is stale. The test proves A cannot overwrite B's state — the room's
//! snapshot in etcd is byte-for-byte what B wrote — and that A fenced itself (lease lost,
//! registered again under a new lease, logged), refused the stale transition, and now sends
//! clients of that room to B.
//!
//! After such a pause the node's own lease-loss fence acts first (it is time-based), so the
//! second test pins the last line of defence: a commit already in flight when the shard moves
//! (held between the node and etcd) is refused by the transaction's compare.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{Client, Got, SECRET, http_get, token};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use signaling_node::room::snapshot;
use switchboard_contract::keys::{Assignment, Keyspace, NodeInfo, Value};
use switchboard_contract::shard::shard_of;
use switchboard_protocol::{ErrorCode, EventKind, Hello, Join, Leave, Message, Resume};
use switchboard_testkit::{Etcd, eventually, free_port, get, get_with_lease, put};

const SHARDS: u32 = 4;
const ROOM: &str = "studio";
const NAMESPACE: &str = "test";
const CLUSTER: &str = "fence";

/// One `signaling-node serve` child process; killed on drop.
struct NodeProcess {
    name: String,
    child: Child,
    ws: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl NodeProcess {
    fn spawn(etcd: &Etcd, dir: &std::path::Path, name: &str) -> Self {
        Self::spawn_via(&etcd.endpoint(), dir, name)
    }

    /// Starts a node that reaches etcd at `endpoint`.
    fn spawn_via(endpoint: &str, dir: &std::path::Path, name: &str) -> Self {
        let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create node log");
        let child = Command::new(env!("CARGO_BIN_EXE_signaling-node"))
            .arg("serve")
            .args(["--listen", &ws.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--node-name", name])
            .args(["--advertise-url", &format!("ws://{ws}/ws")])
            .args(["--shard-count", &SHARDS.to_string()])
            .args(["--jwt-secret", std::str::from_utf8(SECRET).unwrap()])
            .args(["--etcd-endpoints", endpoint])
            .args(["--namespace", NAMESPACE, "--cluster", CLUSTER])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .expect("spawn signaling-node serve");
        Self {
            name: name.into(),
            child,
            ws,
            admin,
            log,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Value of the first metric line starting with `prefix` (0 when absent).
    async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").await;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assignment(node: &str, epoch: u64) -> Assignment {
    Assignment {
        node: node.into(),
        epoch,
        version: "default".into(),
        handoff_to: None,
    }
}

/// Connects to `addr`, says Hello as `user` and joins [`ROOM`]; None while the node answers
/// 1010 (not serving the shard yet) or redirects.
async fn try_join(addr: SocketAddr, user: &str) -> Option<(Client, u64)> {
    try_join_room(addr, user, ROOM).await
}

/// Like [`try_join`] for any room.
async fn try_join_room(addr: SocketAddr, user: &str, room: &str) -> Option<(Client, u64)> {
    let mut c = Client::try_connect(addr, &["switchboard.v2"], &[])
        .await
        .ok()?;
    c.hello(&token(user, &["*"]), None).await;
    c.send(&Message::Join(Join {
        request_id: 1,
        room: room.into(),
    }))
    .await;
    match c.next().await {
        Got::Msg(Message::Joined(j)) => Some((c, j.last_seq)),
        Got::Msg(Message::Error(e)) if e.code == ErrorCode::Draining.code() => None,
        Got::Msg(Message::Redirect(_)) => None,
        other => panic!("unexpected answer to a join: {other:?}"),
    }
}

/// Resumes `session` on `addr`; None while the node cannot serve the room yet.
async fn try_resume(addr: SocketAddr, user: &str, session: &str, seq: u64) -> Option<Client> {
    let mut c = Client::try_connect(addr, &["switchboard.v2"], &[])
        .await
        .ok()?;
    c.send(&Message::Hello(Hello {
        token: token(user, &[ROOM]),
        versions: vec![],
        resume: Some(Resume {
            session: session.into(),
            last_seq: seq,
        }),
    }))
    .await;
    match c.next().await {
        Got::Msg(Message::Welcome(w)) if w.resumed => {
            c.welcome = Some(w);
            Some(c)
        }
        Got::Msg(Message::Welcome(_)) => None,
        Got::Msg(Message::Error(e)) if e.code == ErrorCode::Draining.code() => None,
        Got::Msg(Message::Redirect(_)) => None,
        other => panic!("unexpected answer to a resume: {other:?}"),
    }
}

/// How A answered a member's stale transition; panics if A acknowledged it.
async fn stale_outcome(c: &mut Client, user: &str, b_url: &str) -> String {
    loop {
        match c.next().await {
            Got::Msg(Message::Event(e)) if e.kind == EventKind::MemberLeft && e.user == user => {
                panic!("A acknowledged a transition for a shard it no longer owns: {e:?}")
            }
            Got::Msg(Message::Error(e)) if e.request_id == 7 => return format!("error {}", e.code),
            Got::Msg(Message::Migrate(m)) => {
                assert!(
                    m.url.is_empty() || m.url == b_url,
                    "migrated to {:?}, not B",
                    m.url
                );
                return if m.url.is_empty() {
                    "migrate".into()
                } else {
                    "migrate to B".into()
                };
            }
            Got::Closed(code) => return format!("closed {code:?}"),
            Got::Msg(_) => {}
        }
    }
}

/// Joins [`ROOM`] through `addr`, expecting a Redirect; returns its URL.
async fn redirect_of(addr: SocketAddr, user: &str) -> Option<String> {
    let mut c = Client::try_connect(addr, &["switchboard.v2"], &[])
        .await
        .ok()?;
    c.hello(&token(user, &["*"]), None).await;
    c.send(&Message::Join(Join {
        request_id: 1,
        room: ROOM.into(),
    }))
    .await;
    match c.next().await {
        Got::Msg(Message::Redirect(r)) => Some(r.url),
        _ => None,
    }
}

/// Every room key of `shard` with its value and mod revision.
async fn shard_contents(
    kv: &etcd_client::Client,
    keys: &Keyspace,
    shard: u32,
) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut client = kv.kv_client();
    let response = client
        .get(
            keys.shard_rooms_prefix(shard),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("etcd get");
    response
        .kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
        .collect()
}

/// `n` more rooms hashing into the same shard as [`ROOM`].
fn sibling_rooms(n: usize) -> Vec<String> {
    let shard = shard_of(ROOM, SHARDS);
    (0..)
        .map(|i| format!("side-{i}"))
        .filter(|r| shard_of(r, SHARDS) == shard)
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_old_owner_cannot_overwrite_the_new_owners_state() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let kv = etcd.client().await;
    let keys = Keyspace::new(NAMESPACE, CLUSTER).unwrap();
    let shard = shard_of(ROOM, SHARDS);
    let room_key = keys.room(shard, ROOM).unwrap();
    for s in 0..SHARDS {
        put(&kv, &keys.assignment(s), assignment("node-a", 1).encode()).await;
    }
    let dir = std::env::temp_dir().join(format!("switchboard-fencing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = NodeProcess::spawn(&etcd, &dir, "node-a");
    let b = NodeProcess::spawn(&etcd, &dir, "node-b");

    // A serves the room: alice and bob join (two transitions committed under epoch 1).
    let (mut alice, _) = eventually("A serves the room", || try_join(a.ws, "alice")).await;
    let (mut bob, _) = try_join(a.ws, "bob").await.expect("bob joins on A");
    // More rooms of the same shard, one member each on A: each will send a stale transition,
    // so A very likely reaches its store with one before it learns that it lost the shard.
    let siblings = sibling_rooms(8);
    let mut others = Vec::new();
    for (i, room) in siblings.iter().enumerate() {
        let (c, _) = try_join_room(a.ws, &format!("m{i}"), room)
            .await
            .expect("member joins on A");
        others.push(c);
    }
    let seen = alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    let alice_session = alice.session();
    let stored = snapshot::decode(&get(&kv, &room_key).await.expect("room committed")).unwrap();
    assert_eq!((stored.meta.node.as_str(), stored.epoch), ("node-a", 1));
    assert_eq!(stored.members.len(), 2);
    eventually("B registered", || async {
        get(&kv, &keys.node("node-b").unwrap()).await
    })
    .await;
    let (_, old_lease) = get_with_lease(&kv, &keys.node("node-a").unwrap())
        .await
        .expect("A registered");

    // Freeze A past its 2 s lease: its key expires.
    a.signal("-STOP");
    eventually("A's node key expired", || async {
        get(&kv, &keys.node("node-a").unwrap())
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // bob, still connected to the frozen A, leaves the room: the frame waits in A's socket.
    bob.send(&Message::Leave(Leave {
        request_id: 7,
        room: ROOM.into(),
    }))
    .await;
    for (c, room) in others.iter_mut().zip(&siblings) {
        c.send(&Message::Leave(Leave {
            request_id: 7,
            room: room.clone(),
        }))
        .await;
    }

    // The stand-in operator reassigns the shard to B with epoch + 1, compare-and-swap.
    let mut kv_client = kv.kv_client();
    let current = kv_client
        .get(keys.assignment(shard), None)
        .await
        .unwrap()
        .kvs()[0]
        .mod_revision();
    let txn = Txn::new()
        .when([Compare::mod_revision(
            keys.assignment(shard),
            CompareOp::Equal,
            current,
        )])
        .and_then([TxnOp::put(
            keys.assignment(shard),
            assignment("node-b", 2).encode(),
            None,
        )]);
    assert!(kv_client.txn(txn).await.unwrap().succeeded());

    // alice resumes on B; carol joins there: B commits both under epoch 2.
    let mut alice_b = eventually("alice resumes on B", || {
        try_resume(b.ws, "alice", &alice_session, seen.seq)
    })
    .await;
    alice_b
        .recv_until(|m| match m {
            Message::Event(e) if e.kind == EventKind::MemberResumed && e.user == "alice" => {
                Some(())
            }
            _ => None,
        })
        .await;
    let (_carol, _) = try_join(b.ws, "carol").await.expect("carol joins on B");
    alice_b
        .recv_until(|m| match m {
            Message::Event(e) if e.kind == EventKind::MemberJoined && e.user == "carol" => Some(()),
            _ => None,
        })
        .await;
    let b_state = get(&kv, &room_key).await.expect("B's snapshot");
    let decoded = snapshot::decode(&b_state).unwrap();
    assert_eq!((decoded.meta.node.as_str(), decoded.epoch), ("node-b", 2));
    let members: Vec<&str> = decoded.members.iter().map(|m| m.user.as_str()).collect();
    assert!(members.contains(&"carol"), "{members:?}");
    assert!(
        members.contains(&"bob"),
        "bob's seat came over from A: {members:?}"
    );

    // Everything stored for the shard now (B's writes and the rooms B has not touched).
    let before_thaw = shard_contents(&kv, &keys, shard).await;
    assert_eq!(before_thaw.len(), siblings.len() + 1);

    // Thaw A. It presumes its lease lost, fences itself, asks etcd, finds the lease gone and
    // registers again under a new lease.
    a.signal("-CONT");
    let new_lease = eventually("A registered again", || async {
        let (value, lease) = get_with_lease(&kv, &keys.node("node-a").unwrap()).await?;
        NodeInfo::decode(&value).ok()?;
        (lease != old_lease).then_some(lease)
    })
    .await;
    assert_ne!(new_lease, 0);
    eventually("A counted its lost lease", || async {
        (a.metric("switchboard_lease_lost_total").await >= 1.0).then_some(())
    })
    .await;
    // It presumed the lease lost, asked etcd, and learnt it was gone (revoked).
    assert!(
        a.log().contains("the node lease is gone"),
        "A logs the lost lease:\n{}",
        a.log()
    );

    // No stale leave was acknowledged by A: each was refused (fenced) or its member was sent
    // away (Migrate to B, or the connection closed).
    let mut outcomes = Vec::new();
    for (c, user) in std::iter::once((&mut bob, "bob".to_string())).chain(
        others
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (c, format!("m{i}"))),
    ) {
        outcomes.push(stale_outcome(c, &user, &b.url()).await);
    }
    println!("stale leaves on A: {outcomes:?}");

    // New clients reaching A for the room are redirected to B.
    let url = eventually("A redirects the room to B", || redirect_of(a.ws, "dave")).await;
    assert_eq!(url, b.url());

    // Whatever A tried, etcd still holds exactly B's state, and B still serves it.
    let fenced = a.metric("switchboard_store_fenced_total").await;
    println!(
        "A: store_fenced_total={fenced}, fenced txns={}",
        a.metric("switchboard_store_txns_total{outcome=\"fenced\"}")
            .await
    );
    assert_eq!(
        shard_contents(&kv, &keys, shard).await,
        before_thaw,
        "A wrote to a shard it no longer owns"
    );
    let after = get(&kv, &room_key).await.expect("room still stored");
    assert_eq!(
        snapshot::decode(&after).unwrap(),
        decoded,
        "the room's snapshot must still be B's"
    );
    assert_eq!(after, b_state);
    alice_b.ping(42).await;
    let stored: Assignment = Assignment::decode(&get(&kv, &keys.assignment(shard)).await.unwrap())
        .expect("assignment decodes");
    assert_eq!(stored, assignment("node-b", 2));
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP proxy between a node and etcd that can hold everything the node sends (etcd's answers
/// and watch events still flow), keeping a copy of the bytes held.
struct HoldProxy {
    addr: SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
    held: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl HoldProxy {
    async fn start(upstream: SocketAddr) -> Self {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold, hold_rx) = tokio::sync::watch::channel(false);
        let held = Arc::new(Mutex::new(Vec::new()));
        let counter = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
                let mut hold_rx = hold_rx.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    // Reads go on while holding (into `pending`), so everything the node
                    // sends during the hold is seen; it is written on release, in order.
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut pending = Vec::new();
                    loop {
                        tokio::select! {
                            read = client_rx.read(&mut buf) => {
                                let n = match read {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                if *hold_rx.borrow() {
                                    pending.extend_from_slice(&buf[..n]);
                                    counter.lock().unwrap().extend_from_slice(&buf[..n]);
                                } else if server_tx.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            changed = hold_rx.changed() => {
                                if changed.is_err() {
                                    return;
                                }
                                let holding = *hold_rx.borrow_and_update();
                                if !holding
                                    && !pending.is_empty()
                                    && server_tx.write_all(&std::mem::take(&mut pending)).await.is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr, hold, held }
    }

    fn set_hold(&self, on: bool) {
        self.held.lock().unwrap().clear();
        self.hold.send_replace(on);
    }

    /// Whether the bytes held since the hold began contain `needle` (gRPC frames carry keys
    /// in the clear).
    fn holds(&self, needle: &[u8]) -> bool {
        self.held
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }
}

/// The compare itself, deterministically: A's commit of a stale transition is in flight (held
/// between A and etcd) when the shard moves to B with `epoch + 1`; when it reaches etcd, the
/// transaction's compare on the assignment fails, A counts a fenced transaction, refuses the
/// transition, and the room's snapshot keeps the state from before it. Without the compare
/// the stale snapshot (bob gone) would overwrite the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_commit_in_flight_when_the_shard_moves_is_refused_by_etcd() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let kv = etcd.client().await;
    let keys = Keyspace::new(NAMESPACE, CLUSTER).unwrap();
    let shard = shard_of(ROOM, SHARDS);
    let room_key = keys.room(shard, ROOM).unwrap();
    for s in 0..SHARDS {
        put(&kv, &keys.assignment(s), assignment("node-a", 1).encode()).await;
    }
    let upstream: SocketAddr = etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = HoldProxy::start(upstream).await;
    let dir = std::env::temp_dir().join(format!("switchboard-fencing-txn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = NodeProcess::spawn_via(&format!("http://{}", proxy.addr), &dir, "node-a");

    let (mut alice, _) = eventually("A serves the room", || try_join(a.ws, "alice")).await;
    let (mut bob, _) = try_join(a.ws, "bob").await.expect("bob joins on A");
    alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    let before = get(&kv, &room_key).await.expect("room committed");
    assert_eq!(snapshot::decode(&before).unwrap().members.len(), 2);
    let fenced_before = a
        .metric("switchboard_store_txns_total{outcome=\"fenced\"}")
        .await;

    // Hold what A sends to etcd; bob leaves; wait until A's commit is held in the proxy.
    proxy.set_hold(true);
    bob.send(&Message::Leave(Leave {
        request_id: 7,
        room: ROOM.into(),
    }))
    .await;
    eventually("A's commit is in flight", || async {
        proxy.holds(room_key.as_bytes()).then_some(())
    })
    .await;
    // The stand-in operator moves the shard to B with epoch + 1 meanwhile.
    put(
        &kv,
        &keys.assignment(shard),
        assignment("node-b", 2).encode(),
    )
    .await;
    proxy.set_hold(false);

    // etcd refused A's transaction on its compare; A refused bob's leave.
    eventually("A counted a fenced transaction", || async {
        (a.metric("switchboard_store_txns_total{outcome=\"fenced\"}")
            .await
            > fenced_before)
            .then_some(())
    })
    .await;
    let outcome = stale_outcome(&mut bob, "bob", "").await;
    assert!(outcome.starts_with("error"), "bob's leave: {outcome}");
    let after = get(&kv, &room_key).await.expect("room still stored");
    assert_eq!(
        after, before,
        "the stale snapshot must not overwrite the room"
    );
    drop(a);
    let _ = std::fs::remove_dir_all(&dir);
}
