"""The co-host call as two Clients play it: invite, accept, offer/answer, ICE, hangup."""

CANDIDATES = [
    {"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 50000 typ host", "sdp_mid": "0", "sdp_mline_index": 0},
    {"candidate": "candidate:2 1 udp 1686052607 192.0.2.1 50001 typ srflx", "sdp_mid": "0", "sdp_mline_index": 0},
]


def states(client, call_id, names, timeout=15.0, after_seq=0):
    """Waits for the CallState events `names` of the call, in order; returns them."""
    out = []
    for name in names:
        ev = client.expect_state(call_id, name, timeout, after_seq)
        after_seq = ev.seq
        out.append(ev)
    return out


def invite_and_accept(inviter, invitee, room, call_id, timeout=15.0):
    """Invite, the invitee accepts; returns each side's CallState events up to negotiating."""
    inviter.send("Invite", request_id=inviter.request_id(), room=room, call_id=call_id, to=invitee.name)
    inv = invitee.expect("Invite", timeout, call_id=call_id)
    assert inv.fields["from"] == inviter.name and inv.to == invitee.name, inv
    invitee.send("InviteResult", request_id=invitee.request_id(), room=room, call_id=call_id,
                 to=inviter.name, accepted=True)
    res = inviter.expect("InviteResult", timeout, call_id=call_id)
    assert res.accepted and res.fields["from"] == invitee.name, res
    path = ["inviting", "ringing", "negotiating"]
    return {c.name: states(c, call_id, path, timeout) for c in (inviter, invitee)}


def send_candidates(sender, peer, room, call_id, batch):
    """Trickles the candidates (one IceBatch when `batch` and v2), then end-of-candidates."""
    if batch and sender.version == 2:
        sender.send("IceBatch", room=room, call_id=call_id, to=peer.name, candidates=CANDIDATES)
    else:
        for c in CANDIDATES:
            sender.send("IceCandidate", room=room, call_id=call_id, to=peer.name, **c)
    sender.send("IceCandidate", room=room, call_id=call_id, to=peer.name, candidate="")


def receive_candidates(receiver, sender, call_id, timeout=15.0):
    """The sender's candidates as the receiver sees them (a v1 receiver gets them one by one)."""
    got = []
    while True:
        f = receiver.wait_for(
            lambda f: f.name in ("IceCandidate", "IceBatch") and f.call_id == call_id
            and f.fields["from"] == sender.name,
            timeout, f"ICE of {call_id} from {sender.name}",
        )
        if f.name == "IceBatch":
            assert receiver.version == 2, "an IceBatch reached a v1 connection"
            got.extend(c["candidate"] for c in f.candidates)
        elif f.candidate:
            got.append(f.candidate)
        else:
            return got


def negotiate(inviter, invitee, room, call_id, sdp, batch=False, timeout=15.0, after=None):
    """Offer, answer and ICE both ways, until `connected`; returns each side's connected event."""
    inviter.send("Offer", request_id=inviter.request_id(), room=room, call_id=call_id, to=invitee.name, sdp=sdp)
    offer = invitee.expect("Offer", timeout, call_id=call_id)
    assert offer.sdp == sdp and offer.fields["from"] == inviter.name
    invitee.send("Answer", request_id=invitee.request_id(), room=room, call_id=call_id, to=inviter.name, sdp=sdp)
    answer = inviter.expect("Answer", timeout, call_id=call_id)
    assert answer.fields["from"] == invitee.name
    for a, b in ((inviter, invitee), (invitee, inviter)):
        send_candidates(a, b, room, call_id, batch)
    expected = [c["candidate"] for c in CANDIDATES]
    assert receive_candidates(invitee, inviter, call_id, timeout) == expected
    assert receive_candidates(inviter, invitee, call_id, timeout) == expected
    after = after or {}
    return {c.name: states(c, call_id, ["connected"], timeout, after.get(c.name, 0)) for c in (inviter, invitee)}


def call(inviter, invitee, room, call_id, sdp, batch=False, timeout=15.0):
    """The whole call up to `connected`; returns each side's CallState events."""
    seen = invite_and_accept(inviter, invitee, room, call_id, timeout)
    connected = negotiate(inviter, invitee, room, call_id, sdp, batch, timeout)
    return {name: seen[name] + connected[name] for name in seen}


def hangup(by, peer, room, call_id, timeout=15.0):
    """`by` hangs up; the peer gets the relayed Hangup and both see `ended`."""
    by.send("Hangup", request_id=by.request_id(), room=room, call_id=call_id, reason="bye")
    h = peer.expect("Hangup", timeout, call_id=call_id)
    assert h.fields["from"] == by.name
    return {c.name: c.expect_state(call_id, "ended", timeout) for c in (by, peer)}
