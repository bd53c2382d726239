//! The server in cluster mode against a real etcd: it serves the shards assigned to it once
//! restored, commits room snapshots to etcd, applies and acknowledges the operator's config,
//! redirects joins for shards owned elsewhere, migrates members of a shard taken away, and
//! deregisters on shutdown.

mod common;

use common::{Client, Got, settings, token};
use signaling_node::cluster::ClusterArgs;
use signaling_node::config::ConfigHandle;
use signaling_node::metrics::Metrics;
use signaling_node::server::Listeners;
use signaling_node::server::cluster::{ClusterModeError, serve_cluster};
use switchboard_contract::ClusterSettings;
use switchboard_contract::keys::{
    Ack, Assignment, ConfigValue, Keyspace, Load, NodeInfo, NodeState, Value,
};
use switchboard_contract::shard::shard_of;
use switchboard_protocol::{ErrorCode, Join, Message};
use switchboard_testkit::{Etcd, eventually, get, put};

const SHARDS: u32 = 16;

fn assignment(node: &str, epoch: u64) -> Vec<u8> {
    Assignment {
        node: node.into(),
        epoch,
        version: "default".into(),
        handoff_to: None,
    }
    .encode()
}

/// An etcd whose assignments give every shard to "n1" at epoch 1, a client of it and the
/// keyspace of cluster "srv".
async fn etcd_assigning_every_shard_to_n1() -> (Etcd, etcd_client::Client, Keyspace) {
    let etcd = Etcd::start().await;
    let kv = etcd.client().await;
    let keys = Keyspace::new("test", "srv").unwrap();
    for shard in 0..SHARDS {
        put(&kv, &keys.assignment(shard), assignment("n1", 1)).await;
    }
    (etcd, kv, keys)
}

/// Node "n1" serving in cluster mode (cluster "srv") against `etcd`, stopped through `stop`.
struct Node {
    addr: std::net::SocketAddr,
    config: ConfigHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ClusterModeError>>,
}

impl Node {
    async fn start(etcd: &Etcd) -> Self {
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let addr = listeners.ws.local_addr().unwrap();
        let mut s = settings(|_| {});
        s.node_name = "n1".into();
        s.advertise_url = format!("ws://{addr}/ws");
        s.shard_count = SHARDS;
        let config = ConfigHandle::fixed(s);
        let args = ClusterArgs {
            etcd_endpoints: vec![etcd.endpoint()],
            namespace: "test".into(),
            cluster: Some("srv".into()),
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let node_config = config.clone();
        let task = tokio::spawn(async move {
            serve_cluster(&args, node_config, Metrics::new(), listeners, async move {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            addr,
            config,
            stop,
            task,
        }
    }
}

/// Connects, says Hello and joins `room`; None while the node cannot serve it yet (1010).
async fn try_join(addr: std::net::SocketAddr, user: &str, room: &str) -> Option<(Client, Message)> {
    let mut c = Client::connect(addr, &["switchboard.v2"]).await;
    c.hello(&token(user, &["*"]), None).await;
    c.send(&Message::Join(Join {
        request_id: 1,
        room: room.into(),
    }))
    .await;
    match c.next().await {
        Got::Msg(Message::Error(e)) if e.code == ErrorCode::Draining.code() => None,
        Got::Msg(msg) => Some((c, msg)),
        Got::Closed(code) => panic!("closed {code:?}"),
    }
}

/// A room id whose shard differs from `other`'s.
fn room_in_another_shard(other: &str) -> String {
    (0..)
        .map(|i| format!("room-{i}"))
        .find(|r| shard_of(r, SHARDS) != shard_of(other, SHARDS))
        .unwrap()
}

#[tokio::test]
async fn cluster_mode_end_to_end_against_etcd() {
    switchboard_testkit::init_tracing();
    let (etcd, kv, keys) = etcd_assigning_every_shard_to_n1().await;
    let other_node = NodeInfo {
        url: "ws://n2.example:7000/ws".into(),
        version: "default".into(),
        protocols: vec!["switchboard.v2".into()],
        state: NodeState::Ready,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: 0,
        liveness: None,
    };
    put(&kv, &keys.node("n2").unwrap(), other_node.encode()).await;

    let Node {
        addr,
        config,
        stop,
        task,
    } = Node::start(&etcd).await;

    // Registered under its lease, then serving once its shards are restored.
    let registration = eventually("node registration", || async {
        get(&kv, &keys.node("n1").unwrap()).await
    })
    .await;
    let info = NodeInfo::decode(&registration).unwrap();
    assert_eq!(info.url, format!("ws://{addr}/ws"));
    assert_eq!(info.protocols, vec!["switchboard.v2", "switchboard.v1"]);
    let (mut alice, joined) = eventually("joins served", || try_join(addr, "alice", "r")).await;
    assert!(matches!(joined, Message::Joined(_)), "{joined:?}");
    let shard = shard_of("r", SHARDS);
    assert!(
        get(&kv, &keys.room(shard, "r").unwrap()).await.is_some(),
        "the join was committed to etcd"
    );

    // The operator's config is applied without restart and acknowledged.
    let value = ConfigValue {
        revision: 7,
        settings: ClusterSettings {
            room_size: Some(3),
            heartbeat_seconds: Some(5),
            ..Default::default()
        },
    };
    put(&kv, &keys.config(), value.encode()).await;
    eventually("config applied", || async {
        (config.current().tunables.max_room_members == 3).then_some(())
    })
    .await;
    let ack = eventually("config acked", || async {
        let bytes = get(&kv, &keys.ack("n1").unwrap()).await?;
        let ack = Ack::decode(&bytes).ok()?;
        (ack.config_revision == 7).then_some(ack)
    })
    .await;
    assert_eq!(ack.config_revision, 7);

    // A shard assigned to another node: joins are redirected there.
    let elsewhere = room_in_another_shard("r");
    put(
        &kv,
        &keys.assignment(shard_of(&elsewhere, SHARDS)),
        assignment("n2", 2),
    )
    .await;
    let redirect = eventually("redirect", || async {
        match try_join(addr, "bob", &elsewhere).await {
            Some((_, Message::Redirect(r))) => Some(r),
            _ => None,
        }
    })
    .await;
    assert_eq!(redirect.url, "ws://n2.example:7000/ws");
    assert_eq!(redirect.room, elsewhere);

    // The shard of "r" moves away: its members are told to migrate to the new owner.
    put(&kv, &keys.assignment(shard), assignment("n2", 2)).await;
    let migrate = alice
        .recv_until(|m| match m {
            Message::Migrate(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(migrate.url, "ws://n2.example:7000/ws");
    assert_eq!(migrate.resume_token, alice.session());
    assert!(
        get(&kv, &keys.room(shard, "r").unwrap()).await.is_some(),
        "a released room's snapshot stays for the new owner"
    );

    // Shutdown: drains and deregisters (lease revoked).
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(15), task)
        .await
        .expect("shutdown within the drain budget")
        .unwrap()
        .unwrap();
    assert!(get(&kv, &keys.node("n1").unwrap()).await.is_none());
}

#[tokio::test]
async fn a_resume_etcd_refuses_to_store_is_closed_with_1013_not_sent_back_here() {
    // Soak fault etcd-quota-full: the resume was answered with `Migrate` back to this node,
    // which the clients followed at once, over and over, for as long as etcd refused writes.
    switchboard_testkit::init_tracing();
    let (etcd, kv, keys) = etcd_assigning_every_shard_to_n1().await;
    let node = Node::start(&etcd).await;
    let (alice, joined) = eventually("joins served", || try_join(node.addr, "alice", "r")).await;
    let Message::Joined(joined) = joined else {
        panic!("expected Joined, got {joined:?}");
    };
    let session = alice.session();
    let room_key = keys.room(shard_of("r", SHARDS), "r").unwrap();
    let joined_snapshot = get(&kv, &room_key).await;
    drop(alice);
    // The suspension is committed (the snapshot changes) before etcd fills up.
    eventually("alice suspended", || async {
        (get(&kv, &room_key).await != joined_snapshot).then_some(())
    })
    .await;

    etcd.set_space_full(true).await;
    let resume = (session.clone(), joined.last_seq);
    let mut again = Client::connect(node.addr, &["switchboard.v2"]).await;
    let welcome = again
        .hello(&token("alice", &["*"]), Some(resume.clone()))
        .await;
    assert!(welcome.resumed);
    match again.next().await {
        Got::Closed(code) => assert_eq!(code, Some(1013)),
        Got::Msg(msg) => panic!("expected a 1013 close, got {msg:?}"),
    }

    etcd.set_space_full(false).await;
    let mut back = Client::connect(node.addr, &["switchboard.v2"]).await;
    back.hello(&token("alice", &["*"]), Some(resume)).await;
    match back.next().await {
        Got::Msg(Message::Event(e)) => assert_eq!(e.room, "r"),
        other => panic!("expected the room's replay, got {other:?}"),
    }
    let _ = node.stop.send(());
    let _ = node.task.await;
}
