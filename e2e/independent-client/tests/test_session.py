"""Heartbeats, limits, resume and drain on standalone nodes."""

import time

import pytest
from conftest import mint

from sbclient import wire
from sbclient.conn import Connection
from sbclient.flows import hangup, invite_and_accept, negotiate, states

SDP = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\n"


def hello(url, user="alice", auto_pong=True):
    c = Connection.open(url, auto_pong=auto_pong)
    c.send("Hello", token=mint(user), versions=[2, 1])
    return c, c.expect("Welcome")


def pings(c, n, timeout):
    return [c.expect("Ping", timeout) for _ in range(n)]


def test_server_pings_every_heartbeat_and_echoes_ours(start_node):
    n = start_node("--heartbeat-interval", "500ms")
    c, welcome = hello(n.url)
    assert welcome.heartbeat_ms == 500
    t0 = time.monotonic()
    got = pings(c, 3, 2)
    assert [p.nonce for p in got] == sorted(p.nonce for p in got)
    assert time.monotonic() - t0 < 2.5
    c.send("Ping", nonce=99)
    c.expect("Pong", nonce=99)
    c.close()


def test_idle_timeout_closes_1000_unless_pings_are_answered(start_node):
    n = start_node("--heartbeat-interval", "500ms", "--idle-timeout", "2s")
    silent, _ = hello(n.url, "a", auto_pong=False)
    answering, _ = hello(n.url, "b", auto_pong=True)
    t0 = time.monotonic()
    closed = silent.expect_closed(timeout=6)
    assert closed.code == 1000
    assert 1.5 < time.monotonic() - t0 < 4
    # Answering the node's Pings with Pongs is activity enough.
    time.sleep(1.5)
    answering.send("Ping", nonce=1)
    answering.expect("Pong", nonce=1)
    answering.close()


def test_flooding_is_1007_then_close_1008(start_node):
    n = start_node("--rate-limit", "5", "--rate-burst", "5", "--flood-close-after", "10")
    c, _ = hello(n.url)
    for i in range(40):
        try:
            c.send("Ping", nonce=i)
        except Exception:
            break
    assert c.expect("Error", code=1007)
    assert c.expect_closed().code == 1008


def test_connections_above_the_limit_close_1013(start_node):
    n = start_node("--max-connections", "2")
    kept = [hello(n.url, u)[0] for u in ("a", "b")]
    # The node closes the extra connection right after the upgrade, before any Hello.
    extra = Connection.open(n.url)
    assert extra.expect_closed().code == 1013
    for c in kept:
        c.close()


def test_resume_replays_gapless_and_reoffers_the_invite(start_node, clients):
    n = start_node("--heartbeat-interval", "1s")
    alice = clients(n.url, "alice")
    bob = clients(n.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    bob_session = bob.session
    bob.crash()
    alice.expect("Event", kind=wire.MEMBER_SUSPENDED, user="bob")
    # The invite reaches nobody while bob is away: the call stays Inviting.
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="r1", to="bob")
    alice.expect_state("r1", "inviting")
    bob.wait_connected()
    assert bob.welcome.resumed and bob.session == bob_session
    # The owner re-sends the Invite to the resumed invitee and the call rings.
    bob.expect("Invite", call_id="r1")
    bob.expect_state("r1", "ringing")
    alice.expect("Event", kind=wire.MEMBER_RESUMED, user="bob")
    bob.send("InviteResult", request_id=bob.request_id(), room="studio", call_id="r1", to="alice", accepted=True)
    alice.expect("InviteResult", call_id="r1")
    negotiate(alice, bob, "studio", "r1", SDP)
    hangup(alice, bob, "studio", "r1")
    assert alice.gaps == [] and bob.gaps == []
    # Bob saw every seq exactly once, across the reconnect.
    seen = [s for s in bob.seqs["studio"] if not isinstance(s, tuple)]
    assert seen == sorted(set(seen))


def test_resume_while_negotiating_restarts_negotiation(start_node, clients):
    n = start_node("--heartbeat-interval", "1s")
    alice = clients(n.url, "alice")
    bob = clients(n.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    seen = invite_and_accept(alice, bob, "studio", "r2")
    started = {name: evs[-1].seq for name, evs in seen.items()}
    bob.crash()
    alice.expect("Event", kind=wire.MEMBER_SUSPENDED, user="bob")
    bob.wait_connected()
    # A new `negotiating` above the one the call started from: offer again from scratch.
    for c in (alice, bob):
        states(c, "r2", ["negotiating"], after_seq=started[c.name])
    after = {c.name: c.last_seq["studio"] for c in (alice, bob)}
    negotiate(alice, bob, "studio", "r2", SDP, after=after)
    assert alice.gaps == [] and bob.gaps == []


def test_resume_after_the_window_is_a_new_session(start_node, clients):
    n = start_node("--resume-window", "1s")
    alice = clients(n.url, "alice")
    alice.join("studio")
    c, welcome = hello(n.url, "bob")
    c.send("Join", request_id=1, room="studio")
    joined = c.expect("Joined")
    c.abort()
    alice.expect("Event", kind=wire.MEMBER_SUSPENDED, user="bob")
    alice.expect("Event", kind=wire.MEMBER_LEFT, user="bob", timeout=5)
    again = Connection.open(n.url)
    again.send("Hello", token=mint("bob"), versions=[2, 1],
               resume={"session": welcome.session, "last_seq": joined.last_seq})
    w = again.expect("Welcome")
    assert not w.resumed and w.session != welcome.session
    again.close()


def test_resume_of_an_unknown_session_is_a_new_session(node):
    c = Connection.open(node.url)
    c.send("Hello", token=mint("alice"), versions=[2, 1], resume={"session": "no-such-session", "last_seq": 3})
    w = c.expect("Welcome")
    assert not w.resumed and w.session != "no-such-session"
    c.close()


def test_one_last_seq_covers_every_room_of_the_session(start_node):
    n = start_node()
    a = Connection.open(n.url)
    a.send("Hello", token=mint("a", rooms=["m1", "m2"]), versions=[2, 1])
    session = a.expect("Welcome").session
    for rid, room in ((1, "m1"), (2, "m2")):
        a.send("Join", request_id=rid, room=room)
        a.expect("Joined", request_id=rid)
    b, _ = hello(n.url, "b")
    b.close()
    b = Connection.open(n.url)
    b.send("Hello", token=mint("b", rooms=["m1"]), versions=[2, 1])
    b.expect("Welcome")
    b.send("Join", request_id=1, room="m1")
    b.expect("Joined")
    a.expect("Event", room="m1", seq=2)
    a.abort()
    a = Connection.open(n.url)
    a.send("Hello", token=mint("a", rooms=["m1", "m2"]), versions=[2, 1], resume={"session": session, "last_seq": 1})
    assert a.expect("Welcome").resumed
    # Both rooms replay from seq 2: m1 its MemberJoined of b, m2 the suspension of a.
    a.expect("Event", room="m1", seq=2, kind=wire.MEMBER_JOINED)
    a.expect("Event", room="m2", seq=2, kind=wire.MEMBER_SUSPENDED)
    a.close()


def test_drain_of_a_standalone_node_migrates_without_url(start_node):
    n = start_node("--drain-timeout", "2s")
    c, welcome = hello(n.url)
    c.send("Join", request_id=1, room="studio")
    c.expect("Joined")
    n.terminate()
    m = c.expect("Migrate")
    # No other node to go to: the Migrate carries no URL; the token is the session.
    assert (m.room, m.url, m.resume_token) == ("studio", None, welcome.session)
    assert c.expect_closed().code == 1001


def test_resume_beyond_the_replay_ring_gets_a_fresh_joined(start_node):
    n = start_node("--event-ring", "4")
    b = Connection.open(n.url)
    b.send("Hello", token=mint("bob"), versions=[2, 1])
    session = b.expect("Welcome").session
    b.send("Join", request_id=1, room="studio")
    last = b.expect("Joined").last_seq
    b.abort()
    a, _ = hello(n.url, "alice")
    for i in range(4):
        a.send("Join", request_id=2 * i + 1, room="studio")
        a.expect("Joined", request_id=2 * i + 1)
        a.send("Leave", request_id=2 * i + 2, room="studio")
        a.expect("Event", kind=wire.MEMBER_LEFT, user="alice")
    b = Connection.open(n.url)
    b.send("Hello", token=mint("bob"), versions=[2, 1], resume={"session": session, "last_seq": last})
    assert b.expect("Welcome").resumed
    joined = b.expect("Joined")
    assert joined.request_id == 0 and joined.members == ["bob"]
    b.send("Ping", nonce=5)
    b.expect("Pong", nonce=5)
    stale = [f.seq for f in b.pending() if getattr(f, "name", None) == "Event" and f.seq <= joined.last_seq]
    # The fresh Joined stands for everything up to its last_seq: nothing older follows it.
    assert stale == [], f"events at or below Joined.last_seq {joined.last_seq} after it: {stale}"
