"""Rooms and calls on a standalone node: join/leave, invite/accept, offer/answer/ICE, hangup."""

from conftest import mint

from sbclient import wire
from sbclient.conn import Connection
from sbclient.flows import call, hangup, invite_and_accept
from sbclient.client import Client

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"


def test_join_events_and_leave(node, clients):
    alice = clients(node.url, "alice")
    joined = alice.join("studio")
    # The joiner's own MemberJoined is already counted in Joined.last_seq.
    assert (joined.members, joined.last_seq) == (["alice"], 1)
    bob = clients(node.url, "bob")
    joined_b = bob.join("studio")
    assert joined_b.members == ["alice", "bob"] and joined_b.last_seq == 2
    ev = alice.expect("Event", kind=wire.MEMBER_JOINED, user="bob")
    assert ev.seq == 2
    # Leave has no answer of its own: the MemberLeft event is it.
    bob.leave("studio")
    for c in (alice, bob):
        ev = c.expect("Event", kind=wire.MEMBER_LEFT, user="bob")
        assert ev.seq == 3
    assert alice.gaps == [] and bob.gaps == []


def test_joining_twice_answers_joined_again(node, clients):
    alice = clients(node.url, "alice")
    first = alice.join("studio")
    again = alice.join("studio")
    assert again.last_seq == first.last_seq


def test_cohost_call_v2_and_v1_peer(node, clients):
    alice = clients(node.url, "alice")
    bob = clients(node.url, "bob", versions=(1,))
    assert (alice.version, bob.version) == (2, 1)
    for c in (alice, bob):
        c.join("studio")
    alice.expect("Event", kind=wire.MEMBER_JOINED, user="bob")
    seqs = call(alice, bob, "studio", "call-1", SDP, batch=True)
    # Every CallState of the call, in order, on both sides; `user` is the inviter.
    for c in (alice, bob):
        states = [(e.state, e.user) for e in seqs[c.name]]
        assert states == [("inviting", "alice"), ("ringing", "alice"), ("negotiating", "alice"), ("connected", "alice")]
    hangup(bob, alice, "studio", "call-1")
    assert alice.gaps == [] and bob.gaps == []


def test_relays_carry_the_authenticated_sender(node, clients):
    alice = clients(node.url, "alice")
    bob = clients(node.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="c1", to="bob", **{"from": "mallory"})
    inv = bob.expect("Invite", call_id="c1")
    # `from` is overwritten with the sender; relayed requests carry request_id 0.
    assert (inv.fields["from"], inv.request_id) == ("alice", 0)


def test_rejected_invite_ends_the_call(node, clients):
    alice = clients(node.url, "alice")
    bob = clients(node.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="c2", to="bob")
    bob.expect("Invite", call_id="c2")
    bob.send("InviteResult", request_id=bob.request_id(), room="studio", call_id="c2", to="alice",
             accepted=False, reason="busy")
    res = alice.expect("InviteResult", call_id="c2")
    assert (res.accepted, res.reason, res.fields["from"]) == (False, "busy", "bob")
    alice.expect_state("c2", "ended")
    bob.expect_state("c2", "ended")


def test_hangup_while_ringing(node, clients):
    alice = clients(node.url, "alice")
    bob = clients(node.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="c3", to="bob")
    bob.expect_state("c3", "ringing")
    alice.send("Hangup", request_id=alice.request_id(), room="studio", call_id="c3", reason="changed my mind")
    h = bob.expect("Hangup", call_id="c3")
    assert (h.fields["from"], h.reason) == ("alice", "changed my mind")
    bob.expect_state("c3", "ended")


def error_for(c, rid):
    return c.wait_for(lambda f: f.name == "Error" and f.request_id == rid, what=f"Error for {rid}")


def test_refusals_carry_their_codes(node, clients):
    alice = clients(node.url, "alice")
    bob = clients(node.url, "bob", versions=(1,))
    for c in (alice, bob):
        c.join("studio")
    invite_and_accept(alice, bob, "studio", "c4")
    cases = [
        (alice, "Offer", {"call_id": "c4", "to": "bob", "sdp": "hello"}, 1001),
        (alice, "Offer", {"call_id": "nope", "to": "bob", "sdp": SDP}, 1004),
        (alice, "Invite", {"call_id": "c5", "to": "carol"}, 1004),
        (alice, "Invite", {"call_id": "c6", "to": "alice"}, 1004),
        (alice, "Invite", {"call_id": "c4", "to": "bob"}, 1004),
        (alice, "Hangup", {"call_id": "nope"}, 1004),
        (alice, "Leave", {"room": "elsewhere"}, 1004),
        (alice, "Invite", {"room": "elsewhere", "call_id": "c7", "to": "bob"}, 1004),
        # A field out of its bounds is a bad frame (1008), though its layout is fine.
        (alice, "Invite", {"to": "bob"}, 1008),
        (alice, "Invite", {"call_id": "x" * 129, "to": "bob"}, 1008),
    ]
    for c, name, fields, code in cases:
        rid = c.request_id()
        c.send(name, request_id=rid, **{"room": "studio", **fields})
        err = error_for(c, rid)
        assert err.code == code, (name, fields, err)
    # IceBatch on a v1 connection: 1009 (it has no request_id).
    bob.send("IceBatch", room="studio", call_id="c4", to="alice", candidates=[{"candidate": "x"}])
    assert bob.expect("Error", code=1009).request_id == 0


def test_room_full_is_1005(start_node, clients):
    n = start_node("--max-room-members", "2")
    for user in ("a", "b"):
        clients(n.url, user).join("studio")
    joined = clients(n.url, "c").join("studio")
    assert (joined.name, joined.code) == ("Error", 1005)


def test_deadlines_fail_the_call_without_an_error(start_node, clients):
    n = start_node("--invite-timeout", "1s", "--negotiation-timeout", "1s")
    alice = clients(n.url, "alice")
    bob = clients(n.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="t1", to="bob")
    alice.expect_state("t1", "failed", timeout=5)
    invite_and_accept(alice, bob, "studio", "t2")
    alice.expect_state("t2", "failed", timeout=5)
    bob.expect_state("t2", "failed", timeout=5)
    # The deadline is reported as the CallState `failed` only, never as an Error 1002.
    assert not [f for f in alice.drain() + bob.drain() if f.name == "Error"]


def test_a_newer_session_takes_the_seat(node):
    old = Client(node.url, mint("alice"), name="old").start()
    try:
        old.join("studio")
        new = Client(node.url, mint("alice"), name="new").start()
        try:
            new.join("studio")
            err = old.expect("Error")
            assert (err.code, err.request_id) == (1003, 0)
        finally:
            new.close()
    finally:
        old.close()


def test_raw_connection_sees_relays_without_request_ids(node):
    # The same check without the client library, to keep the library honest.
    a, b = (Connection.open(node.url) for _ in range(2))
    for c, user in ((a, "alice"), (b, "bob")):
        c.send("Hello", token=mint(user, rooms=["raw"]), versions=[2, 1])
        c.expect("Welcome")
        c.send("Join", request_id=1, room="raw")
        c.expect("Joined", request_id=1)
    a.send("Invite", request_id=41, room="raw", call_id="r1", to="bob")
    assert b.expect("Invite").request_id == 0
    b.send("InviteResult", request_id=42, room="raw", call_id="r1", to="alice", accepted=True)
    assert a.expect("InviteResult").request_id == 0
    a.close()
    b.close()


def test_rooms_per_session_and_calls_per_room_are_1005(start_node, clients):
    n = start_node("--max-rooms-per-session", "1", "--max-room-calls", "1")
    alice = clients(n.url, "alice", rooms=("studio", "other"))
    alice.join("studio")
    refused = alice.join("other")
    assert (refused.name, refused.code) == ("Error", 1005)
    bob = clients(n.url, "bob")
    carol = clients(n.url, "carol")
    for c in (bob, carol):
        c.join("studio")
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="k1", to="bob")
    rid = alice.request_id()
    alice.send("Invite", request_id=rid, room="studio", call_id="k2", to="carol")
    assert error_for(alice, rid).code == 1005


def test_leaving_ends_the_members_calls(node, clients):
    alice = clients(node.url, "alice")
    bob = clients(node.url, "bob")
    for c in (alice, bob):
        c.join("studio")
    alice.send("Invite", request_id=alice.request_id(), room="studio", call_id="l1", to="bob")
    bob.expect_state("l1", "ringing")
    alice.leave("studio")
    ended = bob.expect_state("l1", "ended")
    left = bob.expect("Event", kind=wire.MEMBER_LEFT, user="alice")
    assert left.seq == ended.seq + 1
