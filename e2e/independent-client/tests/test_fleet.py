"""The client against the real-node fleet (e2e/README.md): Redirect through a non-owner, the
owner's container killed and both co-hosts resuming, a drain followed through Migrate, and the
bad inputs answered by a fleet node as by a standalone one.

Runs when SBCLIENT_FLEET=1 (e2e/scripts/independent-client sets it), as root.
"""

import os
import time

import pytest
from fleet import Fleet

from sbclient import token, wire, ws
from sbclient.client import Client
from sbclient.conn import Connection
from sbclient.flows import call, hangup, invite_and_accept, negotiate, states

pytestmark = pytest.mark.fleet
SDP = "v=0\r\no=- 3 3 IN IP4 10.0.0.1\r\ns=-\r\n"
# Rooms outlive a run (members stay suspended for the resume window): a fresh name per run keeps
# a reused fleet's leftovers out of the way.
RUN = format(int(time.time()) % 0x100000, "05x")


@pytest.fixture(scope="module")
def fleet():
    if os.environ.get("SBCLIENT_FLEET") != "1":
        pytest.skip("the real-node fleet runs with SBCLIENT_FLEET=1 (e2e/scripts/independent-client)")
    if os.geteuid() != 0:
        pytest.skip("the real node needs root")
    f = Fleet(os.environ.get("SBCLIENT_RUN_DIR"))
    if os.environ.get("SBCLIENT_FLEET_REUSE") == "1" and f.attach():
        f.key = f.secret()
        yield f
        return
    try:
        f.up()
        f.key = f.secret()
        yield f
    finally:
        if os.environ.get("SBCLIENT_FLEET_KEEP") != "1":
            f.down()


def mint(f, user, rooms):
    now = int(time.time())
    rooms = rooms if rooms == "*" else list(rooms)
    return token.mint(f.key, {"sub": user, "rooms": rooms, "exp": now + 3600, "iat": now})


def probe(f, room):
    """(owner URL, the other URLs): one Join from a throwaway user, then Leave."""
    urls = f.urls()
    first = sorted(urls.values())[0]
    c = Connection.open(first)
    # An any-room token: the Hello is welcomed everywhere, the Join tells who owns the room.
    c.send("Hello", token=mint(f, "probe", "*"), versions=[2, 1])
    c.expect("Welcome")
    c.send("Join", request_id=1, room=room)
    answer = c.wait_for(lambda x: getattr(x, "name", None) in ("Joined", "Redirect", "Error"), 10)
    if answer.name == "Joined":
        c.send("Leave", request_id=2, room=room)
        c.expect("Event", kind=wire.MEMBER_LEFT, user="probe")
        owner = first
    else:
        assert answer.name == "Redirect", answer
        assert (answer.request_id, answer.room) == (1, room)
        owner = answer.url
    c.close()
    assert owner in urls.values(), f"the owner URL {owner} is no ready pod's ({urls})"
    return owner, sorted(u for u in urls.values() if u != owner)


@pytest.fixture
def clients(fleet):
    made = []

    def make(user, room, seeds, any_room=False, **kw):
        t = mint(fleet, user, "*") if any_room else mint(fleet, user, [room])
        c = Client(seeds, t, name=user, log=print, **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.close()


def test_cohost_call_through_a_non_owner_follows_redirect(fleet, clients):
    room = f"indie-redirect-{RUN}"
    owner, others = probe(fleet, room)
    owner_pod = fleet.pod_of(owner)
    # Alice's token names the room: the non-owner redirects her Hello (then closes 1000).
    alice = clients("alice", room, [others[0]])
    assert [(r.url, r.room, r.request_id) for r in alice.redirects] == [(owner, room, 0)]
    # Bob's token allows any room: his Hello is welcomed and his Join redirected.
    bob = clients("bob", room, [others[-1]], any_room=True, versions=(1,))
    assert bob.redirects == [] and bob.welcome.node == fleet.pod_of(others[-1])
    for c in (alice, bob):
        joined = c.join(room)
        assert joined.name == "Joined", joined
        assert c.welcome.node == owner_pod
    assert [(r.url, r.room) for r in bob.redirects] == [(owner, room)] and bob.redirects[0].request_id > 0
    call(alice, bob, room, "redirected-call", SDP, batch=True)
    hangup(alice, bob, room, "redirected-call")
    assert alice.gaps == [] and bob.gaps == []


def resumed(c, welcomes_before, session, timeout=60):
    """Waits for the Welcome after a reconnect; it must resume `session`."""
    deadline = time.monotonic() + timeout
    while not (len(c.welcomes) > welcomes_before and c.connected.is_set()):
        assert time.monotonic() < deadline, f"{c.name} did not reconnect within {timeout} s"
        time.sleep(0.05)
    w = c.welcomes[welcomes_before]
    assert w.resumed and w.session == session, (c.name, c.welcomes)
    return w


def test_owner_killed_both_cohosts_resume_gapless(fleet, clients):
    room = f"indie-kill-{RUN}"
    owner, others = probe(fleet, room)
    owner_pod = fleet.pod_of(owner)
    seeds = others + [owner]
    alice = clients("alice", room, seeds)
    bob = clients("bob", room, list(reversed(seeds)))
    for c in (alice, bob):
        assert c.join(room).name == "Joined"
        assert c.welcome.node == owner_pod
    call(alice, bob, room, "before-kill", SDP)
    invite_and_accept(alice, bob, room, "mid-negotiation")
    before = {c.name: (c.session, c.last_seq[room], len(c.welcomes)) for c in (alice, bob)}
    restarts = fleet.restarts(owner_pod)
    t0 = time.monotonic()
    fleet.fault("kill", owner_pod)
    nodes = [resumed(c, before[c.name][2], before[c.name][0]).node for c in (alice, bob)]
    print(f"both resumed {time.monotonic() - t0:.1f} s after the kill, on {nodes}")
    assert nodes[0] == nodes[1]
    # The negotiation restarts: a `negotiating` above the last seq seen before the kill.
    for c in (alice, bob):
        states(c, "mid-negotiation", ["negotiating"], timeout=30, after_seq=before[c.name][1])
    after = {c.name: c.last_seq[room] for c in (alice, bob)}
    negotiate(alice, bob, room, "mid-negotiation", SDP, after=after)
    # The call connected before the kill stayed connected: it can be hung up.
    hangup(bob, alice, room, "before-kill")
    hangup(alice, bob, room, "mid-negotiation")
    for c in (alice, bob):
        assert c.gaps == [], (c.name, c.gaps, c.seqs[room])
        assert c.drops, "the connection never dropped"
    # The kubelet restarts the container (after its crash back-off when a reused fleet saw earlier
    # kills); later tests want the whole fleet back.
    fleet.wait_for(lambda: fleet.restarts(owner_pod) > restarts, 300, f"{owner_pod} restarted")
    fleet.wait_ready()


def room_in_a_shared_pool(fleet, prefix):
    """A room whose owner's version pool has another node to hand the room off to (a drain
    of a single-node pool cannot finish, docs/operations.md)."""
    fleet.wait_ready()
    pods = fleet.pods()
    for i in range(64):
        room = f"{prefix}-{i}"
        owner, others = probe(fleet, room)
        owner_pod = fleet.pod_of(owner)
        version = pods[owner_pod][1]
        if sum(1 for _, v in pods.values() if v == version) > 1:
            return room, owner, others, owner_pod
    pytest.skip("no version pool with two nodes")


def test_drain_is_followed_through_migrate(fleet, clients):
    room, owner, others, owner_pod = room_in_a_shared_pool(fleet, f"indie-drain-{RUN}")
    alice = clients("alice", room, others)
    bob = clients("bob", room, others)
    for c in (alice, bob):
        assert c.join(room).name == "Joined"
    call(alice, bob, room, "across-drain", SDP)
    sessions = {c.name: c.session for c in (alice, bob)}
    welcomes = {c.name: len(c.welcomes) for c in (alice, bob)}
    # A raw member too, to see what the drained node does with the connection after Migrate.
    carol = Connection.open(owner)
    carol.send("Hello", token=mint(fleet, "carol", "*"), versions=[2, 1])
    carol.expect("Welcome")
    carol.send("Join", request_id=1, room=room)
    carol.expect("Joined", request_id=1)
    try:
        fleet.switchboard("drain", owner_pod, "--timeout", "120")
        m = carol.expect("Migrate", timeout=30)
        carol.send("Ping", nonce=11)
        carol.expect("Pong", nonce=11)
        carol.send("Join", request_id=2, room=room)
        assert carol.expect("Redirect", request_id=2).url == m.url
        carol.close()
        for c in (alice, bob):
            fleet.wait_for(lambda c=c: c.migrates, 30, f"{c.name}'s Migrate")
            m = c.migrates[0]
            assert m.room == room and m.url and m.url != owner, m
            assert m.resume_token == sessions[c.name]
            w = resumed(c, welcomes[c.name], sessions[c.name])
            assert w.node != owner_pod and fleet.pod_of(m.url) == w.node
        hangup(alice, bob, room, "across-drain")
        call(bob, alice, room, "after-drain", SDP)
        hangup(bob, alice, room, "after-drain")
        for c in (alice, bob):
            assert c.gaps == [], (c.name, c.gaps, c.seqs[room])
    finally:
        fleet.switchboard("drain", owner_pod, "--undo", "--wait=false")


def test_bad_inputs_on_a_fleet_node(fleet):
    url = sorted(fleet.urls().values())[0]

    def hello():
        c = Connection.open(url)
        c.send("Hello", token=mint(fleet, "alice", "*"), versions=[2, 1])
        c.expect("Welcome")
        return c

    c = hello()
    c.send_bytes(wire.frame_bytes(14, wire.body("Ping", nonce=1), crc=1))
    assert c.expect("Error").code == 1008
    c.send_bytes(wire.frame_bytes(77, wire.body("Ping", nonce=1)))
    assert c.expect("Error").code == 1008
    c.send("Ping", nonce=9)
    c.expect("Pong", nonce=9)
    c.send_bytes(wire.frame_bytes(14, wire.body("Ping", nonce=1) + b"\0" * 70000))
    assert c.expect("Error").code == 1008
    assert c.expect_closed().code == 1009
    bad = Connection.open(url)
    bad.send("Hello", token=token.mint(b"not-the-fleet-key", {"sub": "eve", "rooms": "*", "exp": int(time.time()) + 60}),
             versions=[2, 1])
    assert bad.expect("Error").code == 1003
    assert bad.expect_closed().code == 1008


def test_v1_pool_nodes_refuse_v2_only_clients(fleet):
    v1 = [name for name, (_, version) in fleet.pods().items() if version == "v1"]
    if not v1:
        pytest.skip("no v1 pool node in this fleet")
    url = fleet.urls()[v1[0]]
    with pytest.raises(ws.HandshakeRefused) as info:
        Connection.open(url, subprotocols=("switchboard.v2",))
    assert info.value.status == 426
    assert info.value.headers["x-supported-protocols"] == "switchboard.v1"
