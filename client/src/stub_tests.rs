//! The client against scripted stub servers on real sockets: handshake, typed errors,
//! heartbeats, ICE batching, redirects, migration and resume after a dropped connection.
// tungstenite's handshake callback API returns its (large) ErrorResponse by value.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::*;
use switchboard_protocol::{
    Encoder, ErrorCode, ErrorFrame, Event, EventKind, Hello, Invite, Join, Joined, Migrate, Ping,
    Redirect, Welcome, decode,
};

type Ws = WebSocketStream<TcpStream>;

/// Serves every connection with `handler(connection index, socket)`; the WebSocket upgrade
/// picks `version`'s subprotocol.
async fn stub<F, Fut>(version: ProtocolVersion, handler: F) -> SocketAddr
where
    F: Fn(usize, Ws) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            let index = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Some(ws) = accept(tcp, version).await {
                    handler(index, ws).await;
                }
            });
        }
    });
    addr
}

/// The server side of the WebSocket upgrade, picking `version`'s subprotocol.
async fn accept(tcp: TcpStream, version: ProtocolVersion) -> Option<Ws> {
    let pick = |_req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        resp.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            version.subprotocol().parse().unwrap(),
        );
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async(tcp, pick).await.ok()
}

async fn recv(ws: &mut Ws) -> Message {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("stub timed out waiting for a frame")
            .expect("client closed")
            .expect("socket error");
        if let WsMessage::Binary(bytes) = next {
            return decode(&bytes).expect("client sent a bad frame");
        }
    }
}

async fn send(ws: &mut Ws, msg: Message) {
    let frame = Encoder::new().encode_to_vec(&msg).unwrap();
    ws.send(WsMessage::Binary(Bytes::from(frame)))
        .await
        .unwrap();
}

fn welcome(session: &str, version: u8, resumed: bool) -> Message {
    Message::Welcome(Welcome {
        session: session.into(),
        version,
        node: "stub".into(),
        heartbeat_ms: 30_000,
        resumed,
    })
}

/// Reads Hello, answers Welcome; returns the Hello.
async fn greet(ws: &mut Ws, session: &str, resumed: bool) -> Hello {
    let Message::Hello(hello) = recv(ws).await else {
        panic!("expected Hello");
    };
    send(ws, welcome(session, 2, resumed)).await;
    hello
}

/// Reads the next frame, which must be a Join; `what` names it in the panic.
async fn recv_join(ws: &mut Ws, what: &str) -> Join {
    let Message::Join(join) = recv(ws).await else {
        panic!("expected {what}");
    };
    join
}

/// Reads Join, answers Joined with `last_seq`.
async fn joined(ws: &mut Ws, last_seq: u64) -> String {
    let join = recv_join(ws, "Join").await;
    send(
        ws,
        Message::Joined(Joined {
            request_id: join.request_id,
            room: join.room.clone(),
            members: vec!["alice".into()],
            last_seq,
        }),
    )
    .await;
    join.room
}

fn event(room: &str, seq: u64) -> Message {
    Message::Event(Event {
        room: room.into(),
        seq,
        kind: EventKind::MemberJoined,
        user: format!("u{seq}"),
        call_id: String::new(),
        state: String::new(),
        at_ms: 0,
    })
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

fn options() -> ConnectOptions {
    let mut options = ConnectOptions::new("t");
    options.reconnect.initial_backoff = Duration::from_millis(10);
    options.reconnect.max_attempts = 5;
    options
}

async fn next(client: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .expect("client timed out")
        .expect("client failed")
}

/// Keeps a stub connection open until the client goes away.
async fn hold(ws: &mut Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// Opens `session`, answers the Join at `last_seq`, then drops the TCP connection without a
/// close handshake.
async fn join_then_drop(mut ws: Ws, session: &str, last_seq: u64) {
    greet(&mut ws, session, false).await;
    joined(&mut ws, last_seq).await;
    drop(ws);
}

/// Like `stub` (v2), with `other`'s URL handed to every connection to redirect or migrate to.
async fn stub_pointing_at<F, Fut>(other: SocketAddr, handler: F) -> SocketAddr
where
    F: Fn(usize, Ws, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let other = url(other);
    stub(ProtocolVersion::V2, move |index, ws| {
        handler(index, ws, other.clone())
    })
    .await
}

/// A Redirect of `room` to `url`; `request_id` 0 answers no request (a Hello).
fn redirect(request_id: u32, room: &str, url: String) -> Message {
    Message::Redirect(Redirect {
        request_id,
        room: room.into(),
        url,
    })
}

/// A Migrate of "studio" to `url` (empty: resume where it was) under `resume_token`.
fn migrate(url: String, resume_token: &str) -> Message {
    Message::Migrate(Migrate {
        room: "studio".into(),
        url,
        resume_token: resume_token.into(),
    })
}

/// An Error frame from a stub.
fn error(code: ErrorCode, request_id: u32, message: &str) -> Message {
    Message::Error(ErrorFrame {
        code: code.code(),
        message: message.into(),
        request_id,
    })
}

/// The client's next message, which must be a Welcome; `what` names it in the panic.
async fn next_welcome(client: &mut Client, what: &str) -> Welcome {
    let Message::Welcome(w) = next(client).await else {
        panic!("expected {what}");
    };
    w
}

#[tokio::test]
async fn hello_offers_versions_and_join_returns_joined() {
    let addr = stub(ProtocolVersion::V2, |_, mut ws| async move {
        let hello = greet(&mut ws, "s1", false).await;
        assert_eq!(hello.token, "t");
        assert_eq!(hello.versions, vec![2, 1]);
        assert!(hello.resume.is_none());
        joined(&mut ws, 7).await;
        hold(&mut ws).await;
    })
    .await;
    let client = Client::connect(&url(addr), options()).await.unwrap();
    assert_eq!(client.version(), ProtocolVersion::V2);
    assert_eq!(client.session().session, "s1");
    assert_eq!(client.welcome().node, "stub");
    let joined = client.join("studio").await.unwrap();
    assert_eq!((joined.room.as_str(), joined.last_seq), ("studio", 7));
    client.close().await;
}

#[tokio::test]
async fn server_errors_are_typed() {
    let addr = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "s1", false).await;
        let join = recv_join(&mut ws, "Join").await;
        send(
            &mut ws,
            error(
                ErrorCode::RoomFull,
                join.request_id,
                "room is full (2 members)",
            ),
        )
        .await;
        hold(&mut ws).await;
    })
    .await;
    let client = Client::connect(&url(addr), options()).await.unwrap();
    let err = client.join("studio").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomFull), "{err}");
}

#[tokio::test]
async fn auth_failure_at_hello_fails_connect() {
    let addr = stub(ProtocolVersion::V1, |_, mut ws| async move {
        let _ = recv(&mut ws).await;
        send(
            &mut ws,
            error(ErrorCode::AuthFailed, 0, "bad token signature"),
        )
        .await;
        let _ = ws.close(None).await;
    })
    .await;
    let err = Client::connect(&url(addr), options()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed));
}

#[tokio::test]
async fn refused_upgrade_is_an_http_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let refuse = |_req: &Request, _resp: Response| -> Result<Response, ErrorResponse> {
            let mut resp = ErrorResponse::new(Some("supported: switchboard.v1".into()));
            *resp.status_mut() = http::StatusCode::UPGRADE_REQUIRED;
            Err(resp)
        };
        let _ = tokio_tungstenite::accept_hdr_async(tcp, refuse).await;
    });
    let mut opts = options();
    opts.versions = vec![ProtocolVersion::V2];
    let err = Client::connect(&url(addr), opts).await.unwrap_err();
    match err {
        ClientError::Http { status, body } => {
            assert_eq!(status, 426);
            assert!(body.contains("switchboard.v1"), "{body}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn pings_are_answered_and_not_delivered() {
    let addr = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "s1", false).await;
        send(&mut ws, Message::Ping(Ping { nonce: 42 })).await;
        assert_eq!(
            recv(&mut ws).await,
            Message::Pong(switchboard_protocol::Pong { nonce: 42 })
        );
        send(&mut ws, event("r", 1)).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    assert_eq!(next(&mut client).await, event("r", 1));
}

#[tokio::test(flavor = "current_thread")]
async fn queued_candidates_go_out_as_one_batch_on_v2_only() {
    for version in [ProtocolVersion::V2, ProtocolVersion::V1] {
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(8);
        let addr = stub(version, move |_, mut ws| {
            let seen_tx = seen_tx.clone();
            async move {
                let Message::Hello(_) = recv(&mut ws).await else {
                    panic!("expected Hello");
                };
                send(&mut ws, welcome("s1", version.as_u8(), false)).await;
                send(
                    &mut ws,
                    Message::Invite(Invite {
                        request_id: 0,
                        room: "r".into(),
                        call_id: "c1".into(),
                        from: "alice".into(),
                        to: "bob".into(),
                    }),
                )
                .await;
                loop {
                    let msg = recv(&mut ws).await;
                    let done = matches!(&msg, Message::IceCandidate(c) if c.candidate.is_empty());
                    seen_tx.send(msg).await.unwrap();
                    if done {
                        break;
                    }
                }
                hold(&mut ws).await;
            }
        })
        .await;
        let mut opts = options();
        opts.versions = vec![version];
        let mut client = Client::connect(&url(addr), opts).await.unwrap();
        assert!(matches!(next(&mut client).await, Message::Invite(_)));
        let cand = |n: u16| fake::candidate(n, 1);
        let (a, b, c) = tokio::join!(
            client.ice("c1", cand(0)),
            client.ice("c1", cand(1)),
            client.ice("c1", cand(2))
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        client.end_of_candidates("c1").await.unwrap();
        let mut frames = Vec::new();
        while let Some(msg) = seen_rx.recv().await {
            let done = matches!(&msg, Message::IceCandidate(c) if c.candidate.is_empty());
            frames.push(msg);
            if done {
                break;
            }
        }
        match version {
            ProtocolVersion::V2 => {
                assert_eq!(frames.len(), 2, "{frames:?}");
                let Message::IceBatch(batch) = &frames[0] else {
                    panic!("expected IceBatch, got {frames:?}");
                };
                assert_eq!(batch.candidates.len(), 3);
                assert_eq!((batch.to.as_str(), batch.room.as_str()), ("alice", "r"));
            }
            ProtocolVersion::V1 => {
                assert_eq!(frames.len(), 4, "{frames:?}");
                assert!(frames.iter().all(|m| matches!(m, Message::IceCandidate(_))));
            }
        }
        // Unknown calls are refused locally.
        assert!(matches!(
            client.offer("nope", "v=0").await,
            Err(ClientError::UnknownCall(_))
        ));
    }
}

#[tokio::test]
async fn redirect_at_hello_is_followed() {
    let owner = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "owner-session", false).await;
        joined(&mut ws, 0).await;
        hold(&mut ws).await;
    })
    .await;
    let front = stub_pointing_at(owner, |_, mut ws, owner_url| async move {
        let _ = recv(&mut ws).await;
        send(&mut ws, redirect(0, "studio", owner_url)).await;
        hold(&mut ws).await;
    })
    .await;
    let client = Client::connect(&url(front), options()).await.unwrap();
    assert_eq!(client.session().url, url(owner));
    assert_eq!(client.session().session, "owner-session");
    client.join("studio").await.unwrap();
}

#[tokio::test]
async fn redirect_answering_join_moves_the_connection_and_rejoins() {
    let owner = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "owner-session", false).await;
        assert_eq!(joined(&mut ws, 3).await, "studio");
        hold(&mut ws).await;
    })
    .await;
    let front = stub_pointing_at(owner, |_, mut ws, owner_url| async move {
        greet(&mut ws, "front-session", false).await;
        let join = recv_join(&mut ws, "Join").await;
        send(&mut ws, redirect(join.request_id, &join.room, owner_url)).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(front), options()).await.unwrap();
    let joined = client.join("studio").await.unwrap();
    assert_eq!(joined.last_seq, 3);
    assert_eq!(client.session().url, url(owner));
    assert_eq!(client.session().reconnects, 1);
    // The application hears about the new node.
    let w = next_welcome(&mut client, "the new Welcome").await;
    assert_eq!(w.session, "owner-session");
}

#[tokio::test]
async fn redirect_loops_are_bounded() {
    // A stub that always redirects to itself (told its own URL once it is bound).
    let (url_tx, url_rx) = tokio::sync::watch::channel(String::new());
    let looping = stub(ProtocolVersion::V2, move |_, mut ws| {
        let target = url_rx.borrow().clone();
        async move {
            let _ = recv(&mut ws).await;
            send(&mut ws, redirect(0, "r", target)).await;
            hold(&mut ws).await;
        }
    })
    .await;
    url_tx.send(url(looping)).unwrap();
    let err = Client::connect(&url(looping), options()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooManyRedirects { limit: 3 }),
        "{err}"
    );
}

/// While a room is between owners the nodes bounce a resuming Hello back and forth more often
/// than `max_redirects` allows; the client must back off and resume, not drop the session with
/// TooManyRedirects (docs/reliability.md, finding 1).
#[tokio::test]
async fn a_redirect_storm_while_resuming_backs_off_and_resumes() {
    let (url_tx, url_rx) = tokio::sync::watch::channel(String::new());
    let addr = stub(ProtocolVersion::V2, move |index, mut ws| {
        let target = url_rx.borrow().clone();
        async move {
            match index {
                0 => {
                    join_then_drop(ws, "s1", 1).await;
                }
                // Four redirects in a row: one more than the limit of 3.
                1..=4 => {
                    let _ = recv(&mut ws).await;
                    send(&mut ws, redirect(0, "studio", target)).await;
                    hold(&mut ws).await;
                }
                _ => {
                    let hello = greet(&mut ws, "s1", true).await;
                    assert_eq!(hello.resume.map(|r| r.session), Some("s1".to_string()));
                    hold(&mut ws).await;
                }
            }
        }
    })
    .await;
    url_tx.send(url(addr)).unwrap();
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let w = next_welcome(&mut client, "the resumed Welcome").await;
    assert!(w.resumed, "the session survived the redirect storm");
}

#[tokio::test]
async fn dropped_connection_resumes_and_replays_without_duplicates() {
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        match index {
            0 => {
                greet(&mut ws, "s1", false).await;
                let room = joined(&mut ws, 5).await;
                send(&mut ws, event(&room, 6)).await;
                // Drop the TCP connection without a close handshake.
                drop(ws);
            }
            _ => {
                let hello = greet(&mut ws, "s1", true).await;
                let resume = hello.resume.expect("the client resumes");
                assert_eq!(resume.session, "s1");
                assert_eq!(resume.last_seq, 6);
                // Replay overlaps what the client saw: 6 must not be delivered twice.
                send(&mut ws, event("studio", 6)).await;
                send(&mut ws, event("studio", 7)).await;
                hold(&mut ws).await;
            }
        }
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    assert_eq!(next(&mut client).await, event("studio", 6));
    let w = next_welcome(&mut client, "the resumed Welcome").await;
    assert!(w.resumed);
    assert_eq!(next(&mut client).await, event("studio", 7));
    assert_eq!(client.session().reconnects, 1);
}

#[tokio::test]
async fn a_forgotten_session_rejoins_its_rooms() {
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        match index {
            0 => {
                join_then_drop(ws, "s1", 2).await;
            }
            _ => {
                let hello = greet(&mut ws, "s2", false).await;
                assert!(hello.resume.is_some());
                assert_eq!(joined(&mut ws, 9).await, "studio");
                hold(&mut ws).await;
            }
        }
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let w = next_welcome(&mut client, "Welcome").await;
    assert!(!w.resumed);
    let Message::Joined(j) = next(&mut client).await else {
        panic!("expected the automatic re-join");
    };
    assert_eq!((j.room.as_str(), j.last_seq), ("studio", 9));
    assert_eq!(client.session().session, "s2");
}

#[tokio::test]
async fn a_resume_welcomed_by_a_node_without_the_room_is_resumed_at_the_owner() {
    // A `"*"` token is not routed by its room: after a crash the resume may reach a node that
    // does not own the room (`resumed: false`); the re-join's Redirect names the owner, and
    // the session (still suspended there) is resumed there instead of being replaced.
    let owner = stub(ProtocolVersion::V2, |_, mut ws| async move {
        let hello = greet(&mut ws, "s1", true).await;
        let resume = hello
            .resume
            .expect("the old session is resumed at the owner");
        assert_eq!((resume.session.as_str(), resume.last_seq), ("s1", 3));
        send(&mut ws, event("studio", 4)).await;
        assert_eq!(joined(&mut ws, 4).await, "studio");
        hold(&mut ws).await;
    })
    .await;
    let entry = stub_pointing_at(owner, |index, mut ws, owner_url| async move {
        match index {
            0 => {
                join_then_drop(ws, "s1", 3).await;
            }
            _ => {
                let hello = greet(&mut ws, "s-elsewhere", false).await;
                assert!(hello.resume.is_some());
                let join = recv_join(&mut ws, "the automatic re-join").await;
                send(&mut ws, redirect(join.request_id, &join.room, owner_url)).await;
                hold(&mut ws).await;
            }
        }
    })
    .await;
    let mut client = Client::connect(&url(entry), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let w = next_welcome(&mut client, "the Welcome of the node without the room").await;
    assert!(!w.resumed);
    let w = next_welcome(&mut client, "the owner's Welcome").await;
    assert!(w.resumed);
    assert_eq!(next(&mut client).await, event("studio", 4));
    let info = client.session();
    assert_eq!((info.session.as_str(), info.resumed), ("s1", true));
    assert_eq!(info.url, url(owner));
}

#[tokio::test]
async fn a_refused_automatic_rejoin_is_retried_after_a_reconnect() {
    // A server that lost the session (resumed: false) may refuse the library's own re-join
    // with 1006 while the room is between owners; dropping it would leave the application in
    // a room the server no longer counts it in (docs/reliability.md, finding 7).
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        match index {
            0 => {
                join_then_drop(ws, "s1", 2).await;
            }
            1 => {
                greet(&mut ws, "s2", false).await;
                let join = recv_join(&mut ws, "the automatic re-join").await;
                send(
                    &mut ws,
                    error(
                        ErrorCode::NotOwner,
                        join.request_id,
                        "this node no longer owns the room",
                    ),
                )
                .await;
                hold(&mut ws).await;
            }
            _ => {
                greet(&mut ws, "s2", true).await;
                assert_eq!(joined(&mut ws, 9).await, "studio", "the re-join again");
                hold(&mut ws).await;
            }
        }
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let w = next_welcome(&mut client, "Welcome").await;
    assert!(!w.resumed);
    let w = next_welcome(
        &mut client,
        "the Welcome of the reconnect that retries the re-join",
    )
    .await;
    assert!(w.resumed);
    let Message::Joined(j) = next(&mut client).await else {
        panic!("expected the re-join's answer");
    };
    assert_eq!((j.room.as_str(), j.last_seq), ("studio", 9));
}

/// An Error frame from a stub, refusing `request_id`.
fn refusal(code: ErrorCode, request_id: u32) -> Message {
    error(code, request_id, "refused")
}

/// Messages the client hands the application within `quiet` of silence.
async fn drain_app(client: &mut Client, quiet: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    while let Ok(Ok(msg)) = tokio::time::timeout(quiet, client.recv()).await {
        out.push(msg);
    }
    out
}

#[tokio::test]
async fn a_resume_refused_while_its_room_moves_surfaces_nothing_and_follows_the_migrate() {
    // Scenario d (issue 15): the owner restarted in place and took the client's resume just
    // before the shard moved; an older node answered the fenced resume with `1006` and no
    // request id, and the library handed it to the application.
    let target = stub(ProtocolVersion::V2, |_, mut ws| async move {
        let hello = greet(&mut ws, "s1", true).await;
        assert_eq!(hello.resume.expect("resumes").session, "s1");
        send(&mut ws, event("studio", 3)).await;
        hold(&mut ws).await;
    })
    .await;
    let addr = stub_pointing_at(target, |index, mut ws, target_url| async move {
        if index == 0 {
            join_then_drop(ws, "s1", 2).await;
            return;
        }
        greet(&mut ws, "s1", true).await;
        send(&mut ws, refusal(ErrorCode::NotOwner, 0)).await;
        send(&mut ws, migrate(target_url, "s1")).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let seen = drain_app(&mut client, Duration::from_millis(500)).await;
    assert!(
        !seen.iter().any(|m| matches!(m, Message::Error(_))),
        "no retryable error reaches the application: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&event("studio", 3)), "{seen:?}");
    assert_eq!(client.session().url, url(target));
}

#[tokio::test]
async fn a_request_refused_while_its_room_moves_is_sent_again_after_the_move() {
    let target = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "s1", true).await;
        let Message::Invite(invite) = recv(&mut ws).await else {
            panic!("expected the invite again on the new node");
        };
        assert_eq!(invite.to, "bob");
        send(&mut ws, event("studio", 3)).await;
        hold(&mut ws).await;
    })
    .await;
    let old = stub_pointing_at(target, |_, mut ws, target_url| async move {
        greet(&mut ws, "s1", false).await;
        joined(&mut ws, 2).await;
        let Message::Invite(invite) = recv(&mut ws).await else {
            panic!("expected Invite");
        };
        send(&mut ws, refusal(ErrorCode::NotOwner, invite.request_id)).await;
        send(&mut ws, migrate(target_url, "s1")).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(old), options()).await.unwrap();
    client.join("studio").await.unwrap();
    client.invite("studio", "bob").await.unwrap();
    let seen = drain_app(&mut client, Duration::from_millis(500)).await;
    assert!(
        !seen.iter().any(|m| matches!(m, Message::Error(_))),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&event("studio", 3)), "{seen:?}");
}

#[tokio::test]
async fn a_request_refused_with_1010_is_retried_after_a_backoff_and_then_reported() {
    let addr = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "s1", false).await;
        joined(&mut ws, 2).await;
        // The first hangup is refused once and then taken; the second is refused every time.
        let Message::Hangup(first) = recv(&mut ws).await else {
            panic!("expected Hangup");
        };
        send(&mut ws, refusal(ErrorCode::Draining, first.request_id)).await;
        let Message::Hangup(again) = recv(&mut ws).await else {
            panic!("expected the retried Hangup");
        };
        assert_eq!(again.call_id, first.call_id);
        send(&mut ws, event("studio", 3)).await;
        loop {
            let Message::Hangup(h) = recv(&mut ws).await else {
                panic!("expected Hangup");
            };
            send(&mut ws, refusal(ErrorCode::Draining, h.request_id)).await;
        }
    })
    .await;
    let mut opts = options();
    opts.reconnect.max_attempts = 2;
    let mut client = Client::connect(&url(addr), opts).await.unwrap();
    client.join("studio").await.unwrap();
    let hangup = |call: &str| {
        Message::Hangup(switchboard_protocol::Hangup {
            request_id: 41,
            room: "studio".into(),
            call_id: call.into(),
            from: String::new(),
            reason: String::new(),
        })
    };
    client.send_raw(hangup("c1")).await.unwrap();
    assert_eq!(next(&mut client).await, event("studio", 3));
    let mut second = hangup("c2");
    if let Message::Hangup(h) = &mut second {
        h.request_id = 42;
    }
    client.send_raw(second).await.unwrap();
    let Message::Error(e) = next(&mut client).await else {
        panic!("a refusal that outlasts the retries reaches the application");
    };
    assert_eq!((e.code, e.request_id), (ErrorCode::Draining.code(), 42));
}

#[tokio::test]
async fn a_join_refused_while_its_room_has_no_owner_is_retried() {
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        if index == 0 {
            greet(&mut ws, "s1", false).await;
            let join = recv_join(&mut ws, "Join").await;
            send(&mut ws, refusal(ErrorCode::Draining, join.request_id)).await;
            hold(&mut ws).await;
            return;
        }
        greet(&mut ws, "s1", true).await;
        joined(&mut ws, 5).await;
        hold(&mut ws).await;
    })
    .await;
    let client = Client::connect(&url(addr), options()).await.unwrap();
    let joined = client.join("studio").await.expect("the join is retried");
    assert_eq!(joined.last_seq, 5);
}

#[tokio::test]
async fn a_node_that_falls_silent_is_left_for_the_entry_node_at_once() {
    // A stopped or cut-off owner accepts nothing in time: retrying it first costs a connect
    // timeout and a backoff before the entry node redirects the resume to the new owner.
    let owner_connections = Arc::new(AtomicUsize::new(0));
    let seen = owner_connections.clone();
    let owner = stub(ProtocolVersion::V2, move |_, mut ws| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            greet(&mut ws, "s1", false).await;
            joined(&mut ws, 2).await;
            // Silent from here on, socket open (SIGSTOP).
            hold(&mut ws).await;
        }
    })
    .await;
    let entry = stub_pointing_at(owner, |index, mut ws, owner_url| async move {
        if index == 0 {
            let _ = recv(&mut ws).await;
            send(&mut ws, redirect(0, "studio", owner_url)).await;
            return;
        }
        let hello = greet(&mut ws, "s1", true).await;
        assert_eq!(hello.resume.expect("resumes").session, "s1");
        send(&mut ws, event("studio", 3)).await;
        hold(&mut ws).await;
    })
    .await;
    let mut opts = options();
    opts.timeouts.silence = Some(Duration::from_millis(200));
    // A backoff longer than the whole test: only an immediate attempt can make it.
    opts.reconnect.initial_backoff = Duration::from_secs(30);
    let mut client = Client::connect(&url(entry), opts).await.unwrap();
    client.join("studio").await.unwrap();
    let w = next_welcome(
        &mut client,
        "the Welcome of the resume through the entry node",
    )
    .await;
    assert!(w.resumed);
    assert_eq!(next(&mut client).await, event("studio", 3));
    assert_eq!(client.session().url, url(entry));
    assert_eq!(owner_connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn migrate_reconnects_to_the_new_node_with_the_resume_token() {
    let target = stub(ProtocolVersion::V2, |_, mut ws| async move {
        let hello = greet(&mut ws, "s-new", true).await;
        let resume = hello.resume.expect("migration resumes");
        assert_eq!(resume.session, "handoff-token");
        assert_eq!(resume.last_seq, 4);
        send(&mut ws, event("studio", 5)).await;
        hold(&mut ws).await;
    })
    .await;
    let old = stub_pointing_at(target, |_, mut ws, target_url| async move {
        greet(&mut ws, "s-old", false).await;
        joined(&mut ws, 4).await;
        send(&mut ws, migrate(target_url, "handoff-token")).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(old), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let w = next_welcome(&mut client, "Welcome from the new node").await;
    assert_eq!(w.session, "s-new");
    assert_eq!(next(&mut client).await, event("studio", 5));
    assert_eq!(client.session().url, url(target));
}

#[tokio::test]
async fn giving_up_reconnecting_ends_the_stream_with_the_reason() {
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        if index == 0 {
            greet(&mut ws, "s1", false).await;
            drop(ws);
        }
        // Later connections are dropped before the handshake.
    })
    .await;
    let mut opts = options();
    opts.reconnect.max_attempts = 2;
    let mut client = Client::connect(&url(addr), opts).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ReconnectFailed { attempts: 2, .. }),
        "{err}"
    );
    assert!(matches!(client.recv().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn a_silent_server_is_detected() {
    let addr = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "s1", false).await;
        // Say nothing at all, but keep the socket open.
        hold(&mut ws).await;
    })
    .await;
    let mut opts = options();
    opts.reconnect.max_attempts = 0;
    opts.timeouts.silence = Some(Duration::from_millis(200));
    let mut client = Client::connect(&url(addr), opts).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn bad_frames_from_the_server_are_reported_not_fatal() {
    let addr = stub(ProtocolVersion::V2, |_, mut ws| async move {
        greet(&mut ws, "s1", false).await;
        ws.send(WsMessage::Binary(Bytes::from_static(&[0, 0, 0, 1, 9])))
            .await
            .unwrap();
        send(&mut ws, event("r", 1)).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    let err = client.recv().await.unwrap_err();
    assert!(matches!(err, ClientError::Frame(_)), "{err}");
    assert_eq!(next(&mut client).await, event("r", 1));
}

#[tokio::test]
async fn migrate_without_a_url_resumes_where_it_was() {
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        if index == 0 {
            greet(&mut ws, "s1", false).await;
            joined(&mut ws, 1).await;
            send(&mut ws, migrate(String::new(), "tok")).await;
            hold(&mut ws).await;
        } else {
            let hello = greet(&mut ws, "s1", true).await;
            assert_eq!(hello.resume.map(|r| r.session).as_deref(), Some("tok"));
            send(&mut ws, event("studio", 2)).await;
            hold(&mut ws).await;
        }
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    assert!(matches!(next(&mut client).await, Message::Welcome(w) if w.resumed));
    assert_eq!(next(&mut client).await, event("studio", 2));
    assert_eq!(client.session().url, url(addr));
}

#[tokio::test]
async fn a_dead_owner_sends_the_client_back_to_the_entry_url_and_it_resumes_at_the_new_owner() {
    // C: the room's new owner after failover; resumes the session B gave out.
    let new_owner = stub(ProtocolVersion::V2, |_, mut ws| async move {
        let hello = greet(&mut ws, "s-b", true).await;
        let resume = hello.resume.expect("the client resumes at the new owner");
        assert_eq!(resume.session, "s-b");
        assert_eq!(resume.last_seq, 8);
        send(&mut ws, event("studio", 9)).await;
        hold(&mut ws).await;
    })
    .await;
    // B: the first owner. It serves one connection, then dies: its listener closes (new
    // connections are refused) and the open connection drops.
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_owner = b_listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = b_listener.accept().await.unwrap();
        drop(b_listener);
        let mut ws = accept(tcp, ProtocolVersion::V2).await.unwrap();
        greet(&mut ws, "s-b", false).await;
        assert_eq!(joined(&mut ws, 7).await, "studio");
        send(&mut ws, event("studio", 8)).await;
        drop(ws);
    });
    // A: the entry node. First it redirects the join to B; after B dies it has no owner yet
    // (1010), then it redirects the resuming Hello to C.
    let (b_url, c_url) = (url(old_owner), url(new_owner));
    let entry = stub(ProtocolVersion::V2, move |index, mut ws| {
        let (b_url, c_url) = (b_url.clone(), c_url.clone());
        async move {
            let Message::Hello(hello) = recv(&mut ws).await else {
                panic!("expected Hello");
            };
            match index {
                0 => {
                    assert!(hello.resume.is_none());
                    send(&mut ws, welcome("s-a", 2, false)).await;
                    let join = recv_join(&mut ws, "Join").await;
                    send(&mut ws, redirect(join.request_id, "studio", b_url)).await;
                }
                1 => {
                    assert_eq!(hello.resume.expect("resuming").session, "s-b");
                    send(&mut ws, error(ErrorCode::Draining, 0, "room handing off")).await;
                }
                _ => {
                    let resume = hello.resume.expect("resuming");
                    assert_eq!((resume.session.as_str(), resume.last_seq), ("s-b", 8));
                    send(&mut ws, redirect(0, "studio", c_url)).await;
                }
            }
            hold(&mut ws).await;
        }
    })
    .await;
    let mut client = Client::connect(&url(entry), options()).await.unwrap();
    assert_eq!(client.join("studio").await.unwrap().last_seq, 7);
    assert_eq!(client.session().url, url(old_owner));
    let w = next_welcome(&mut client, "B's Welcome").await;
    assert_eq!(w.session, "s-b");
    assert_eq!(next(&mut client).await, event("studio", 8));
    let w = next_welcome(&mut client, "C's Welcome").await;
    assert!(w.resumed);
    assert_eq!(next(&mut client).await, event("studio", 9));
    assert_eq!(client.session().url, url(new_owner));
    assert_eq!(client.session().session, "s-b");
}

#[tokio::test]
async fn a_node_url_the_proxy_no_longer_routes_sends_the_client_back_to_the_entry_url() {
    // B: the room's owner behind a proxy. After one connection its route is gone: the proxy
    // answers every upgrade 404 (the node's pod was deleted).
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = b_listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = b_listener.accept().await.unwrap();
        let mut ws = accept(tcp, ProtocolVersion::V2).await.unwrap();
        greet(&mut ws, "s-b", false).await;
        assert_eq!(joined(&mut ws, 2).await, "studio");
        drop(ws);
        while let Ok((tcp, _)) = b_listener.accept().await {
            let refuse = |_req: &Request, _resp: Response| -> Result<Response, ErrorResponse> {
                let mut resp = ErrorResponse::new(Some("404 page not found".into()));
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
                Err(resp)
            };
            let _ = tokio_tungstenite::accept_hdr_async(tcp, refuse).await;
        }
    });
    // C: the new owner, where the entry URL sends the resuming client.
    let new_owner = stub(ProtocolVersion::V2, |_, mut ws| async move {
        let hello = greet(&mut ws, "s-b", true).await;
        assert_eq!(hello.resume.expect("resuming").session, "s-b");
        hold(&mut ws).await;
    })
    .await;
    // A: the entry URL: redirects the first join to B and the resuming Hello to C.
    let (b_url, c_url) = (url(gone), url(new_owner));
    let entry = stub(ProtocolVersion::V2, move |index, mut ws| {
        let (b_url, c_url) = (b_url.clone(), c_url.clone());
        async move {
            let Message::Hello(hello) = recv(&mut ws).await else {
                panic!("expected Hello");
            };
            if index == 0 {
                send(&mut ws, welcome("s-a", 2, false)).await;
                let join = recv_join(&mut ws, "Join").await;
                send(&mut ws, redirect(join.request_id, "studio", b_url)).await;
            } else {
                assert!(
                    hello.resume.is_some(),
                    "the client resumes through the entry URL"
                );
                send(&mut ws, redirect(0, "studio", c_url)).await;
            }
            hold(&mut ws).await;
        }
    })
    .await;
    let mut client = Client::connect(&url(entry), options()).await.unwrap();
    assert_eq!(client.join("studio").await.unwrap().last_seq, 2);
    assert_eq!(client.session().url, url(gone));
    let w = next_welcome(&mut client, "B's Welcome").await;
    assert!(!w.resumed);
    let w = next_welcome(&mut client, "C's Welcome").await;
    assert!(w.resumed);
    assert_eq!(client.session().url, url(new_owner));
}

#[tokio::test]
async fn a_dead_entry_url_does_not_strand_a_client_whose_node_comes_back() {
    // The pair entered through a pod that is gone and was moved to B; B lost its etcd lease,
    // released its rooms with `Migrate{url: ""}` and answers 1010 until it re-registers. The
    // client must keep trying B, not only its dead entry URL (docs/reliability.md, finding 2).
    // B: the room's node; it migrates the client in place, refuses twice, then resumes it.
    let node = stub(ProtocolVersion::V2, |index, mut ws| async move {
        match index {
            0 => {
                greet(&mut ws, "s-b", false).await;
                assert_eq!(joined(&mut ws, 4).await, "studio");
                send(&mut ws, migrate(String::new(), "s-b")).await;
            }
            1 | 2 => {
                let Message::Hello(hello) = recv(&mut ws).await else {
                    panic!("expected Hello");
                };
                assert!(hello.resume.is_some());
                send(
                    &mut ws,
                    error(
                        ErrorCode::Draining,
                        0,
                        "the room's shard has no owner right now; retry",
                    ),
                )
                .await;
            }
            _ => {
                let hello = greet(&mut ws, "s-b", true).await;
                let resume = hello.resume.expect("the client resumes at its node");
                assert_eq!((resume.session.as_str(), resume.last_seq), ("s-b", 4));
                send(&mut ws, event("studio", 5)).await;
            }
        }
        hold(&mut ws).await;
    })
    .await;
    // A: the entry node. It redirects the join to B, then goes away for good.
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let entry = a_listener.local_addr().unwrap();
    let b_url = url(node);
    tokio::spawn(async move {
        let (tcp, _) = a_listener.accept().await.unwrap();
        drop(a_listener);
        let mut ws = accept(tcp, ProtocolVersion::V2).await.unwrap();
        greet(&mut ws, "s-a", false).await;
        let join = recv_join(&mut ws, "Join").await;
        send(&mut ws, redirect(join.request_id, "studio", b_url)).await;
        hold(&mut ws).await;
    });
    let mut options = options();
    options.reconnect.max_attempts = 8;
    let mut client = Client::connect(&url(entry), options).await.unwrap();
    assert_eq!(client.join("studio").await.unwrap().last_seq, 4);
    assert_eq!(client.session().url, url(node));
    let w = next_welcome(&mut client, "B's first Welcome").await;
    assert!(!w.resumed);
    let w = next_welcome(&mut client, "B's Welcome after the migration").await;
    assert!(w.resumed);
    assert_eq!(next(&mut client).await, event("studio", 5));
    assert_eq!(client.session().url, url(node));
}

/// A `CallState` event of `call` in room "studio".
fn call_state_event(call: &str, state: &str, seq: u64) -> Message {
    Message::Event(Event {
        room: "studio".into(),
        seq,
        kind: EventKind::CallState,
        user: "alice".into(),
        call_id: call.into(),
        state: state.into(),
        at_ms: 0,
    })
}

#[tokio::test]
async fn a_hangup_lost_in_a_reconnect_can_be_sent_again_until_the_call_ends() {
    // Soak seed 20262202: the library forgot the call when it wrote the Hangup, so the
    // application's retry after the connection dropped failed with "unknown call" and the
    // call stayed connected on the server.
    let addr = stub(ProtocolVersion::V2, |index, mut ws| async move {
        if index == 0 {
            greet(&mut ws, "s1", false).await;
            joined(&mut ws, 2).await;
            let Message::Invite(_) = recv(&mut ws).await else {
                panic!("expected Invite");
            };
            let Message::Hangup(_) = recv(&mut ws).await else {
                panic!("expected Hangup");
            };
            // Dropped before the room saw it.
            drop(ws);
            return;
        }
        greet(&mut ws, "s1", true).await;
        let Message::Hangup(again) = recv(&mut ws).await else {
            panic!("expected the hangup sent again");
        };
        send(&mut ws, call_state_event(&again.call_id, "ended", 3)).await;
        hold(&mut ws).await;
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    client.join("studio").await.unwrap();
    let call = client.invite("studio", "bob").await.unwrap();
    client.hangup(&call, "bye").await.unwrap();
    let w = next_welcome(&mut client, "the resumed Welcome").await;
    assert!(w.resumed);
    client
        .hangup(&call, "bye")
        .await
        .expect("the call is still known");
    assert_eq!(next(&mut client).await, call_state_event(&call, "ended", 3));
    assert!(matches!(
        client.hangup(&call, "bye").await,
        Err(ClientError::UnknownCall(_))
    ));
}

#[tokio::test]
async fn connections_closed_right_after_their_welcome_back_off_further_each_time() {
    // Soak fault etcd-quota-full: a node that cannot store resumes closes each one with 1013
    // right after its Welcome; reconnecting at the first backoff step every time loops.
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = accepted.clone();
    let addr = stub(ProtocolVersion::V2, move |index, mut ws| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(tokio::time::Instant::now());
            greet(&mut ws, "s1", index > 0).await;
            if index < 5 {
                let close = CloseFrame {
                    code: CloseCode::Again,
                    reason: "state store unavailable".into(),
                };
                let _ = ws.close(Some(close)).await;
                return;
            }
            hold(&mut ws).await;
        }
    })
    .await;
    let mut client = Client::connect(&url(addr), options()).await.unwrap();
    for _ in 0..5 {
        let w = next_welcome(&mut client, "a resumed Welcome").await;
        assert!(w.resumed);
    }
    let at = accepted.lock().unwrap().clone();
    assert_eq!(at.len(), 6);
    // The fifth reconnect waits the fourth backoff step (80 ms ± 25 %), not the first (10 ms).
    let last_gap = at[5] - at[4];
    assert!(last_gap >= Duration::from_millis(55), "{last_gap:?}");
}
