//! The client library, the `client` subcommand and the bench against real nodes on loopback:
//! the scripted co-host flow, typed errors, redirect to a room's owner, resume after the
//! connection is cut, and a short bench smoke run.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use common::{SDP, TestNode, settings, token};
use signaling_node::routing::{Ownership, OwnershipView, SharedOwnership};
use signaling_node::store::MemoryStore;
use switchboard_client::cli::{ClientArgs, run_client};
use switchboard_client::{Client, ClientError, ConnectOptions};
use switchboard_contract::shard::ShardId;
use switchboard_protocol::{ErrorCode, EventKind, Message};
use switchboard_testkit::{Pki, TempDir};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SECRET: &str = "integration-test-secret";

#[derive(Parser)]
struct ClientCli {
    #[command(flatten)]
    args: ClientArgs,
}

fn client_args(args: &[&str]) -> ClientArgs {
    ClientCli::try_parse_from(std::iter::once("client").chain(args.iter().copied()))
        .unwrap()
        .args
}

fn options(user: &str, rooms: &[&str]) -> ConnectOptions {
    let mut options = ConnectOptions::new(token(user, rooms));
    options.reconnect.initial_backoff = Duration::from_millis(50);
    options.reconnect.max_backoff = Duration::from_millis(200);
    options.reconnect.max_attempts = 40;
    options
}

async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .expect("timed out waiting for a frame")
        .expect("client failed")
}

async fn next_where(client: &mut Client, mut pick: impl FnMut(&Message) -> bool) -> Message {
    loop {
        let msg = next(client).await;
        if pick(&msg) {
            return msg;
        }
    }
}

#[tokio::test]
async fn demo_runs_the_whole_cohost_flow() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url();
    let args = client_args(&[
        "--url", &url, "--secret", SECRET, "--room", "demo", "--demo", "--hold", "0.2",
    ]);
    tokio::time::timeout(Duration::from_secs(20), run_client(args))
        .await
        .expect("demo timed out")
        .expect("demo failed");
}

#[tokio::test]
async fn host_and_guest_scripts_complete_in_two_clients() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url();
    let guest = client_args(&[
        "--url", &url, "--secret", SECRET, "--user", "bob", "--room", "studio", "--script", "guest",
    ]);
    // The host starts first and waits for its guest to arrive.
    let host_token = token("alice", &["studio"]);
    let host = client_args(&[
        "--url",
        &url,
        "--token",
        &host_token,
        "--room",
        "studio",
        "--script",
        "cohost-host",
        "--invite",
        "bob",
        "--hold",
        "0.2",
        "--protocol",
        "v1",
    ]);
    let host = tokio::spawn(run_client(host));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let guest = tokio::spawn(run_client(guest));
    let (host, guest) = tokio::time::timeout(Duration::from_secs(20), async {
        (host.await.unwrap(), guest.await.unwrap())
    })
    .await
    .expect("flow timed out");
    host.expect("host script failed");
    guest.expect("guest script failed");
}

#[tokio::test]
async fn server_refusals_are_typed_errors() {
    let node = TestNode::start(|_| {}).await;
    let mut alice = Client::connect(&node.url(), options("alice", &["r1"]))
        .await
        .unwrap();
    // A room the token does not grant.
    let err = alice.join("elsewhere").await.unwrap_err();
    assert!(err.code().is_some(), "{err}");
    alice.join("r1").await.unwrap();
    let bob = Client::connect(&node.url(), options("bob", &["r1"]))
        .await
        .unwrap();
    bob.join("r1").await.unwrap();
    let call = alice.invite("r1", "bob").await.unwrap();
    // An offer before the invitation is accepted is an invalid transition, reported as an
    // Error frame through recv.
    alice.offer(&call, SDP).await.unwrap();
    let Message::Error(error) = next_where(&mut alice, |m| matches!(m, Message::Error(_))).await
    else {
        unreachable!()
    };
    assert_eq!(
        ErrorCode::from_code(error.code),
        Some(ErrorCode::InvalidTransition)
    );
    // Operations on calls the client never saw are refused locally.
    assert!(matches!(
        alice.hangup("c-unknown", "x").await,
        Err(ClientError::UnknownCall(_))
    ));
    // A bad token fails the connect with AuthFailed.
    let mut forged = ConnectOptions::new(format!("{}x", token("mallory", &["r1"])));
    forged.reconnect.max_attempts = 0;
    let err = Client::connect(&node.url(), forged).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err}");
}

/// Every shard is owned by the node at `url`.
struct Elsewhere {
    url: String,
    shards: u32,
}

impl OwnershipView for Elsewhere {
    fn owner_of(&self, _shard: ShardId) -> Ownership {
        Ownership::Remote {
            url: self.url.clone(),
        }
    }

    fn shard_count(&self) -> u32 {
        self.shards
    }
}

#[tokio::test]
async fn redirects_are_followed_to_the_rooms_owner() {
    let owner = TestNode::start(|_| {}).await;
    let settings = settings(|_| {});
    let ownership: SharedOwnership = Arc::new(Elsewhere {
        url: owner.url(),
        shards: settings.shard_count,
    });
    let store = Arc::new(MemoryStore::new());
    let front = TestNode::start_full(settings, store.clone(), store, ownership).await;

    let client = Client::connect(&front.url(), options("alice", &["studio"]))
        .await
        .unwrap();
    assert_eq!(client.session().url, owner.url());
    let joined = client.join("studio").await.unwrap();
    assert_eq!(joined.members, vec!["alice".to_string()]);
    assert!(owner.registry().room("studio").is_some());
    assert!(front.registry().room("studio").is_none());
}

/// A loopback TCP proxy whose connections can be cut and whose door can be shut.
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (links2, open2) = (links.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !open2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(link);
            }
        });
        Self { addr, links, open }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Cuts every live connection and refuses new ones until [`Proxy::reopen`].
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn reopen(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_cut_connection_resumes_its_session_and_gets_what_it_missed() {
    let node = TestNode::start(|_| {}).await;
    let proxy = Proxy::start(node.addr).await;
    let mut alice = Client::connect(&proxy.url(), options("alice", &["studio"]))
        .await
        .unwrap();
    alice.join("studio").await.unwrap();
    let session = alice.session().session;
    let mut bob = Client::connect(&node.url(), options("bob", &["studio"]))
        .await
        .unwrap();
    bob.join("studio").await.unwrap();
    next_where(
        &mut alice,
        |m| matches!(m, Message::Event(e) if e.kind == EventKind::MemberJoined && e.user == "bob"),
    )
    .await;

    proxy.cut();
    // Bob sees alice suspended, then invites her while she is away.
    next_where(&mut bob, |m| {
        matches!(m, Message::Event(e) if e.kind == EventKind::MemberSuspended && e.user == "alice")
    })
    .await;
    let call = bob.invite("studio", "alice").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.reopen();

    // Alice comes back on the same session and receives what happened meanwhile.
    let Message::Welcome(welcome) =
        next_where(&mut alice, |m| matches!(m, Message::Welcome(_))).await
    else {
        unreachable!()
    };
    assert!(welcome.resumed, "{welcome:?}");
    assert_eq!(welcome.session, session);
    let invite = next_where(&mut alice, |m| matches!(m, Message::Invite(_))).await;
    let Message::Invite(invite) = invite else {
        unreachable!()
    };
    assert_eq!(invite.call_id, call);
    assert_eq!(invite.from, "bob");
    // The resumed session is fully usable: accept the call.
    alice.accept(&call).await.unwrap();
    next_where(
        &mut bob,
        |m| matches!(m, Message::InviteResult(r) if r.accepted),
    )
    .await;
    assert!(alice.session().reconnects >= 1);
}

#[test]
fn bench_smoke_run_reports_json_without_errors() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node = runtime.block_on(TestNode::start(|_| {}));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_signaling-node"))
        .args([
            "bench",
            "--url",
            &node.url(),
            "--secret",
            SECRET,
            "--connections",
            "20",
            "--duration",
            "2",
            "--rate",
            "200",
            "--flow-rate",
            "10",
            "--baseline",
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(json["errors"], 0, "{stdout}");
    assert_eq!(json["baseline_errors"], 0, "{stdout}");
    assert_eq!(json["connections"], 20);
    assert_eq!(json["join_count"], 20);
    assert!(json["relay_count"].as_u64().unwrap() > 0, "{stdout}");
    assert!(json["flows"].as_u64().unwrap() > 0, "{stdout}");
    for key in [
        "join_p50_ms",
        "join_p99_ms",
        "join_p999_ms",
        "relay_p50_ms",
        "relay_p99_ms",
        "msgs_per_sec",
        "ratio_relay_p50",
    ] {
        assert!(json[key].is_number(), "{key} missing in {last}");
    }
    drop(node);
}

#[tokio::test]
async fn wss_with_a_ca_file() {
    let dir = TempDir::new("client-tls").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let mut s = settings(|_| {});
    s.tls = Some(signaling_node::config::TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
    });
    let node = TestNode::start_with(s, Arc::new(MemoryStore::new())).await;
    let url = format!("wss://{}/ws", node.addr);

    let mut opts = options("alice", &["secure"]);
    opts.ca_file = Some(pki.ca.clone());
    let client = Client::connect(&url, opts).await.unwrap();
    client.join("secure").await.unwrap();

    // Without the CA the client refuses to connect, with a TLS error.
    let mut opts = options("alice", &["secure"]);
    opts.reconnect.max_attempts = 0;
    let err = Client::connect(&url, opts).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    // A CA that did not sign the server's certificate is refused too.
    let mut opts = options("alice", &["secure"]);
    opts.ca_file = Some(pki.server_cert.clone());
    let err = Client::connect(&url, opts).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
}
