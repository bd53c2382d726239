//! The node side of the two-phase handoff (docs/architecture.md) against a real etcd,
//! with two real `serve_cluster` nodes and this test standing in for the operator: the old
//! owner stops mutating the shard, migrates its members to the new owner's URL, acknowledges
//! `released[shard] = epoch`; after the reassignment with `epoch + 1` the new owner restores,
//! acknowledges `serving[shard] = epoch + 1`, and the clients resume there with their room
//! membership and event sequence intact. Then the new owner is drained (SIGTERM path): the
//! stand-in operator hands its shard back and the node exits once it holds nothing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Got, settings, token};
use etcd_client::Client as Etcd;
use signaling_node::cluster::ClusterArgs;
use signaling_node::config::ConfigHandle;
use signaling_node::metrics::Metrics;
use signaling_node::server::Listeners;
use signaling_node::server::cluster::{ClusterModeError, serve_cluster};
use switchboard_contract::keys::{Ack, Assignment, Keyspace, NodeInfo, NodeState, Value};
use switchboard_contract::shard::shard_of;
use switchboard_protocol::{
    ErrorCode, EventKind, Invite, InviteResult, Join, Message, Migrate, Sdp,
};
use switchboard_testkit::{eventually, get, put};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SHARDS: u32 = 8;
const ROOM: &str = "r";

fn assignment(node: &str, epoch: u64, handoff_to: Option<&str>) -> Vec<u8> {
    Assignment {
        node: node.into(),
        epoch,
        version: "default".into(),
        handoff_to: handoff_to.map(str::to_owned),
    }
    .encode()
}

struct RunningNode {
    addr: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ClusterModeError>>,
}

async fn start_node(etcd: &switchboard_testkit::Etcd, name: &str) -> RunningNode {
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let addr = listeners.ws.local_addr().unwrap();
    let mut s = settings(|_| {});
    s.node_name = name.into();
    s.advertise_url = format!("ws://{addr}/ws");
    s.shard_count = SHARDS;
    s.drain_timeout = Duration::from_secs(8);
    let url = s.advertise_url.clone();
    let args = ClusterArgs {
        etcd_endpoints: vec![etcd.endpoint()],
        namespace: "test".into(),
        cluster: Some("ho".into()),
        ..Default::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve_cluster(
            &args,
            ConfigHandle::fixed(s),
            Metrics::new(),
            listeners,
            async move {
                let _ = stopped.await;
            },
        )
        .await
    });
    RunningNode {
        addr,
        url,
        stop: Some(stop),
        task,
    }
}

async fn ack_of(kv: &Etcd, keys: &Keyspace, pod: &str) -> Option<Ack> {
    Ack::decode(&get(kv, &keys.ack(pod).unwrap()).await?).ok()
}

/// Connects as `user` (optionally resuming) and joins `room`; None while the node answers
/// 1010 (shard not served yet).
async fn try_join(addr: SocketAddr, user: &str) -> Option<Client> {
    let mut c = Client::connect(addr, &["switchboard.v2"]).await;
    c.hello(&token(user, &["*"]), None).await;
    c.send(&Message::Join(Join {
        request_id: 1,
        room: ROOM.into(),
    }))
    .await;
    match c.next().await {
        Got::Msg(Message::Joined(_)) => Some(c),
        Got::Msg(Message::Error(e)) if e.code == ErrorCode::Draining.code() => None,
        other => panic!("unexpected answer to a join: {other:?}"),
    }
}

/// Resumes `session` as `user` on `addr`; None while the node cannot serve the room yet.
async fn try_resume(addr: SocketAddr, user: &str, session: &str, seq: u64) -> Option<Client> {
    let mut c = Client::connect(addr, &["switchboard.v2"]).await;
    c.send(&Message::Hello(switchboard_protocol::Hello {
        token: token(user, &[ROOM]),
        versions: vec![],
        resume: Some(switchboard_protocol::Resume {
            session: session.into(),
            last_seq: seq,
        }),
    }))
    .await;
    match c.next().await {
        Got::Msg(Message::Welcome(w)) => {
            assert!(w.resumed, "{user}'s session resumes on the new owner");
            assert_eq!(w.session, session);
            c.welcome = Some(w);
            Some(c)
        }
        Got::Msg(Message::Error(e)) if e.code == ErrorCode::Draining.code() => None,
        other => panic!("unexpected answer to a resume: {other:?}"),
    }
}

async fn migrate(c: &mut Client) -> Migrate {
    c.recv_until(|m| match m {
        Message::Migrate(m) => Some(m.clone()),
        _ => None,
    })
    .await
}

/// The stand-in operator's phase 1 and 3 for `shard`: handoff_to, wait for the release ack,
/// reassign with epoch + 1.
async fn hand_off(kv: &Etcd, keys: &Keyspace, shard: u32, from: &str, to: &str, epoch: u64) {
    put(
        kv,
        &keys.assignment(shard),
        assignment(from, epoch, Some(to)),
    )
    .await;
    eventually("the old owner acknowledges the release", || async {
        let ack = ack_of(kv, keys, from).await?;
        (ack.released.get(&shard) == Some(&epoch)).then_some(())
    })
    .await;
    put(kv, &keys.assignment(shard), assignment(to, epoch + 1, None)).await;
}

#[tokio::test]
async fn a_shard_is_handed_off_without_losing_a_session_or_an_event() {
    switchboard_testkit::init_tracing();
    let etcd = switchboard_testkit::Etcd::start().await;
    let kv = etcd.client().await;
    let keys = Keyspace::new("test", "ho").unwrap();
    for shard in 0..SHARDS {
        put(&kv, &keys.assignment(shard), assignment("na", 1, None)).await;
    }
    let mut a = start_node(&etcd, "na").await;
    let mut b = start_node(&etcd, "nb").await;
    let shard = shard_of(ROOM, SHARDS);
    eventually("both nodes registered", || async {
        get(&kv, &keys.node("na").unwrap()).await?;
        get(&kv, &keys.node("nb").unwrap()).await
    })
    .await;

    // alice and bob on A, call c1 in Negotiating: every step was committed before it was
    // acknowledged.
    let mut alice = eventually("A serves the room", || try_join(a.addr, "alice")).await;
    let mut bob = try_join(a.addr, "bob").await.expect("bob joins");
    alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    alice
        .send(&Message::Invite(Invite {
            request_id: 1,
            room: ROOM.into(),
            call_id: "c1".into(),
            from: String::new(),
            to: "bob".into(),
        }))
        .await;
    bob.recv_until(|m| matches!(m, Message::Invite(_)).then_some(()))
        .await;
    bob.send(&Message::InviteResult(InviteResult {
        request_id: 2,
        room: ROOM.into(),
        call_id: "c1".into(),
        accepted: true,
        ..Default::default()
    }))
    .await;
    let seq = bob
        .recv_until(|m| match m {
            Message::Event(e) if e.state == "negotiating" => Some(e.seq),
            _ => None,
        })
        .await;
    alice
        .recv_until(|m| matches!(m, Message::Event(e) if e.state == "negotiating").then_some(()))
        .await;
    let ack = eventually("A acknowledges serving the shard", || async {
        let ack = ack_of(&kv, &keys, "na").await?;
        (ack.serving.get(&shard) == Some(&1)).then_some(ack)
    })
    .await;
    assert!(ack.released.is_empty());

    // Phase 1: the operator names the destination.
    put(
        &kv,
        &keys.assignment(shard),
        assignment("na", 1, Some("nb")),
    )
    .await;
    // Every member is told to migrate to B, with its session as the resume token.
    let (m_alice, m_bob) = (migrate(&mut alice).await, migrate(&mut bob).await);
    assert_eq!(
        (m_alice.url.as_str(), m_alice.room.as_str()),
        (b.url.as_str(), ROOM)
    );
    assert_eq!(m_alice.resume_token, alice.session());
    assert_eq!(m_bob.url, b.url);
    assert_eq!(m_bob.resume_token, bob.session());
    // The release is acknowledged (after the flush); the shard is no longer served by A.
    let ack = eventually("A acknowledges the release", || async {
        let ack = ack_of(&kv, &keys, "na").await?;
        (ack.released.get(&shard) == Some(&1)).then_some(ack)
    })
    .await;
    assert_eq!(ack.serving.get(&shard), None, "{ack:?}");
    assert!(ack.serving.len() == SHARDS as usize - 1, "{ack:?}");

    // A takes no more mutations for the shard: a join is redirected to B, a transition on
    // the old connection is refused; the stored snapshot does not change.
    let snapshot = get(&kv, &keys.room(shard, ROOM).unwrap()).await.unwrap();
    let mut carol = Client::connect(a.addr, &["switchboard.v2"]).await;
    carol.hello(&token("carol", &["*"]), None).await;
    carol
        .send(&Message::Join(Join {
            request_id: 9,
            room: ROOM.into(),
        }))
        .await;
    match carol.recv().await {
        Message::Redirect(r) => assert_eq!(r.url, b.url),
        other => panic!("a join during the handoff must not be served by A: {other:?}"),
    }
    alice
        .send(&Message::Offer(Sdp {
            request_id: 3,
            room: ROOM.into(),
            call_id: "c1".into(),
            sdp: common::SDP.into(),
            ..Default::default()
        }))
        .await;
    assert!(
        matches!(alice.recv().await, Message::Error(_)),
        "a transition after the release is refused"
    );
    // B does not serve it before the reassignment (no redirect back to A either).
    assert!(try_join(b.addr, "dave").await.is_none());
    assert_eq!(
        get(&kv, &keys.room(shard, ROOM).unwrap()).await.unwrap(),
        snapshot
    );

    // Phase 3: reassigned to B with epoch + 1; B restores and acknowledges serving.
    put(&kv, &keys.assignment(shard), assignment("nb", 2, None)).await;
    let ack = eventually("B acknowledges serving the shard", || async {
        let ack = ack_of(&kv, &keys, "nb").await?;
        (ack.serving.get(&shard) == Some(&2)).then_some(ack)
    })
    .await;
    assert!(ack.released.is_empty());
    eventually("A's ack forgets the shard", || async {
        let ack = ack_of(&kv, &keys, "na").await?;
        (!ack.released.contains_key(&shard) && !ack.serving.contains_key(&shard)).then_some(())
    })
    .await;

    // The clients resume on B: membership and the event sequence are intact (the next event
    // is exactly seq + 1), and the call still works.
    let (alice_session, bob_session) = (alice.session(), bob.session());
    drop((alice, bob));
    let mut alice = eventually("alice resumes on B", || {
        try_resume(b.addr, "alice", &alice_session, seq)
    })
    .await;
    let resumed = alice.expect_event().await;
    assert_eq!(
        (resumed.seq, resumed.kind, resumed.user.as_str()),
        (seq + 1, EventKind::MemberResumed, "alice")
    );
    let mut bob = try_resume(b.addr, "bob", &bob_session, seq)
        .await
        .expect("bob resumes");
    // bob gets everything after `seq`, gapless: alice's resume (and the call's restarted
    // negotiation) up to his own resume.
    let mut replay = Vec::new();
    loop {
        let e = bob.expect_event().await;
        let done = e.kind == EventKind::MemberResumed && e.user == "bob";
        replay.push((e.seq, e.kind, e.user));
        if done {
            break;
        }
    }
    let seqs: Vec<u64> = replay.iter().map(|(s, _, _)| *s).collect();
    let expected: Vec<u64> = (seq + 1..=seq + replay.len() as u64).collect();
    assert_eq!(seqs, expected, "{replay:?}");
    assert_eq!(
        replay[0],
        (seq + 1, EventKind::MemberResumed, "alice".to_owned())
    );
    let bob_seq = seqs.last().copied().unwrap();
    let _carol = try_join(b.addr, "carol").await.expect("B serves the room");
    alice
        .send(&Message::Offer(Sdp {
            request_id: 4,
            room: ROOM.into(),
            call_id: "c1".into(),
            sdp: common::SDP.into(),
            ..Default::default()
        }))
        .await;
    bob.recv_until(|m| matches!(m, Message::Offer(o) if o.from == "alice").then_some(()))
        .await;

    // Drain of B (SIGTERM): it marks itself draining; the stand-in operator hands its shard
    // back to A; B's members migrate to A and B exits once it holds nothing.
    let _ = b.stop.take().unwrap().send(());
    eventually("B marks itself draining", || async {
        let info = NodeInfo::decode(&get(&kv, &keys.node("nb").unwrap()).await?).ok()?;
        (info.state == NodeState::Draining).then_some(())
    })
    .await;
    hand_off(&kv, &keys, shard, "nb", "na", 2).await;
    assert_eq!(migrate(&mut alice).await.url, a.url);
    tokio::time::timeout(Duration::from_secs(3), &mut b.task)
        .await
        .expect("B exits once its shards are handed off, before the drain timeout")
        .unwrap()
        .unwrap();
    assert!(get(&kv, &keys.node("nb").unwrap()).await.is_none());
    let alice = eventually("alice resumes on A", || {
        try_resume(a.addr, "alice", &alice_session, bob_seq)
    })
    .await;
    drop(alice);

    let _ = a.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(15), &mut a.task)
        .await
        .expect("A exits within its drain budget")
        .unwrap()
        .unwrap();
}
