"""Probes keyed by the neighbours' sessions: who verifies, what is refused and why, replays, rotation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.heal.core.linkkeys import GRACE, LinkKeys, key_id
from x0tta.heal.core.liveness import Ack, Probe, ProbeDecodeError, Tracker, decode, encode

MA, MB, MC = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
KAB, KAC, KOLD = b"a-b session secret.............." , b"a-c session secret..............", b"o" * 32


def ring(*keys: bytes, required: bool = True) -> LinkKeys:
    r = LinkKeys(required=required)
    for i, k in enumerate(keys):
        r.up("eth0", f"fe80::{i}%eth0", k, 0.0)
    return r


def pair(*, a_keys=(KAB,), b_keys=(KAB,)) -> tuple[Tracker, Tracker]:
    return Tracker(0.1, 20, 60.0, link_keys=ring(*a_keys)), Tracker(0.1, 20, 60.0, link_keys=ring(*b_keys))


def test_a_probe_carries_one_tag_per_session_and_each_neighbour_verifies_its_own():
    a = Tracker(0.1, 20, 60.0, link_keys=ring(KAB, KAC))
    data = a.next_probe("eth0", MA, 1.0, 10**9)
    b, c = Tracker(0.1, 20, 60.0, link_keys=ring(KAB)), Tracker(0.1, 20, 60.0, link_keys=ring(KAC))
    pb = b.receive("eth0", MB, data, 1.0, 10**9)
    pc = c.receive("eth0", MC, data, 1.0, 10**9)
    assert pb is not None and pb.kid == key_id(KAB)
    assert pc is not None and pc.kid == key_id(KAC)
    assert b.rejected == c.rejected == 0


@pytest.mark.parametrize(
    ("sender_keys", "mangle", "reason"),
    [
        ((), None, "unauthenticated"),  # no session on the sender's side: an unkeyed v1 probe
        ((KOLD,), None, "not_for_us"),  # keyed, but for a session this node does not have
        ((KAB,), "flip_tag", "bad_tag"),  # forged: the entry is ours, the tag wrong
        ((KAB,), "flip_body", "bad_tag"),  # changed in flight
        ((KAB,), "drop_entry", "malformed"),  # an entry cut off: the count no longer matches
    ],
)
def test_what_a_session_keyed_receiver_refuses(sender_keys, mangle, reason):
    sender = Tracker(0.1, 20, 60.0, link_keys=ring(*sender_keys))
    receiver = Tracker(0.1, 20, 60.0, link_keys=ring(KAB))
    data = bytearray(sender.next_probe("eth0", MA, 1.0, 10**9))
    if mangle == "flip_tag":
        data[-1] ^= 1
    elif mangle == "flip_body":
        data[9] ^= 1
    elif mangle == "drop_entry":
        del data[-16:]
    assert receiver.receive("eth0", MB, bytes(data), 1.0, 10**9) is None
    assert receiver.rejects == {reason: 1} and not receiver.peers


def test_a_replayed_probe_is_refused_and_counted_once():
    a, b = pair()
    first = a.next_probe("eth0", MA, 1.0, 10**9)
    assert b.receive("eth0", MB, first, 1.0, 10**9) is not None
    assert b.receive("eth0", MB, first, 1.05, 10**9 + 5 * 10**7) is None
    assert b.rejects == {"replayed": 1}
    # a replay older than the window (the peer went on sending) is refused too
    for i in range(1, 25):
        b.receive("eth0", MB, a.next_probe("eth0", MA, 1 + i / 10, 10**9 + i * 10**8), 1 + i / 10, 0)
    assert b.receive("eth0", MB, first, 4.0, 4 * 10**9) is None
    assert b.rejects == {"replayed": 2}
    (s,) = b.stats(3.5)
    assert s.loss == 0.0  # the replays added nothing and hid nothing


def test_a_late_probe_within_the_window_still_counts():
    a, b = pair()
    p1 = a.next_probe("eth0", MA, 1.0, 10**9)
    p2 = a.next_probe("eth0", MA, 1.1, 11 * 10**8)
    assert b.receive("eth0", MB, p2, 1.1, 0) is not None
    assert b.receive("eth0", MB, p1, 1.11, 0) is not None  # reordered, not replayed
    assert b.rejected == 0


def test_a_replayed_bye_does_not_make_the_receiver_forget_a_live_peer():
    a, b = pair()
    b.receive("eth0", MB, a.next_probe("eth0", MA, 1.0, 10**9), 1.0, 0)
    bye = a.bye("eth0", MA, 11 * 10**8)
    b.receive("eth0", MB, a.next_probe("eth0", MA, 1.2, 12 * 10**8), 1.2, 0)  # after the bye's seq
    assert b.receive("eth0", MB, bye, 1.3, 0) is None and b.rejects == {"replayed": 1}
    assert ("eth0", MA) in b.peers


def test_a_key_is_pinned_to_the_first_sender_it_verified():
    """An authenticated neighbour cannot speak for another MAC under its own session key."""
    a, b = pair()
    b.receive("eth0", MB, a.next_probe("eth0", MA, 1.0, 10**9), 1.0, 0)
    liar = a.next_probe("eth0", MC, 1.1, 11 * 10**8)
    assert b.receive("eth0", MB, liar, 1.1, 0) is None and b.rejects == {"wrong_sender": 1}


def test_rotation_new_session_first_old_one_drains_within_grace():
    a, b = pair()
    b.receive("eth0", MB, a.next_probe("eth0", MA, 1.0, 10**9), 1.0, 0)
    new = b"a-b re-authenticated session key"
    for r in (a.link_keys, b.link_keys):
        r.up("eth0", "fe80::9%eth0", new, 2.0)
    a.link_keys.down("eth0", KAB, 2.0)
    p = a.next_probe("eth0", MA, 2.0, 2 * 10**9)
    assert decode(p).kid is None  # decoding without a lookup checks nothing
    got = b.receive("eth0", MB, p, 2.0, 0)
    assert got is not None and got.kid == key_id(new)
    # b still holds the old key for a while: a probe tagged only with it is taken within the grace
    old_only = Tracker(0.1, 20, 60.0, link_keys=ring(KAB))
    old_only.seq["eth0"] = 50
    b.link_keys.down("eth0", KAB, 2.0)
    assert b.receive("eth0", MB, old_only.next_probe("eth0", MA, 2.1, 21 * 10**8), 2.0 + GRACE / 2, 0) is not None
    old_only.seq["eth0"] = 60
    assert b.receive("eth0", MB, old_only.next_probe("eth0", MA, 2.1, 22 * 10**8), 2.0 + GRACE + 0.1, 0) is None
    assert b.rejects == {"not_for_us": 1}


def test_until_required_the_ring_changes_nothing():
    a = Tracker(0.1, 20, 60.0, link_keys=ring(KAB, required=False))
    b = Tracker(0.1, 20, 60.0, link_keys=ring(KAB, required=False))
    data = a.next_probe("eth0", MA, 1.0, 10**9)
    assert data[4] == 1  # version 1, untagged
    assert b.receive("eth0", MB, data, 1.0, 0) is not None


def test_a_shared_key_receiver_refuses_session_tagged_probes():
    a = Tracker(0.1, 20, 60.0, link_keys=ring(KAB))
    b = Tracker(0.1, 20, 60.0, key=b"shared")
    assert b.receive("eth0", MB, a.next_probe("eth0", MA, 1.0, 0), 1.0, 0) is None
    assert b.rejects == {"unauthenticated": 1}


def test_closed_keys_expire_and_short_keys_are_refused():
    r = ring(KAB)
    r.down("eth0", KAB, 5.0)
    assert r.signing("eth0") == [] and r.count(5.0) == 1
    r.expire(5.0 + GRACE)
    assert r.keys == {} and r.count(10.0) == 0
    with pytest.raises(ValueError):
        r.up("eth0", "fe80::1%eth0", b"short", 0.0)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_the_session_decoder_raises_only_its_error(data, known):
    lookup = (lambda kid: KAB) if known else (lambda kid: None)
    for blob in (data, b"X0LP\x02\x04" + data):
        try:
            decode(blob, None, lookup)
        except ProbeDecodeError as exc:
            assert exc.reason in ("malformed", "unauthenticated", "not_for_us", "bad_tag")


@given(st.lists(st.binary(min_size=16, max_size=40), min_size=1, max_size=8, unique=True),
       st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_every_session_tag_verifies_for_its_key(keys, seq, nacks):
    p = Probe(seq=seq, sender=MA, sent=5, acks=tuple(Ack(MB, i, 1, 2, 3) for i in range(nacks)))
    data = encode(p, link_keys=[(key_id(k), k) for k in keys])
    for k in keys:
        got = decode(data, None, lambda kid, k=k: k if kid == key_id(k) else None)
        assert got.kid == key_id(k) and got.seq == p.seq and got.acks == p.acks


def test_the_prober_knows_an_alert_by_the_alerts_magic():
    from x0tta.heal import liveness as adapter
    from x0tta.heal.core import alert

    assert adapter.ALERT_MAGIC == alert.MAGIC != b"X0LP"


def test_a_peer_whose_sessions_all_closed_is_forgotten_not_counted_as_lost():
    """Without a session its probes are refused: that silence is no evidence about the link."""
    a, b = pair()
    for i in range(10):
        t = 1 + i / 10
        b.receive("eth0", MB, a.next_probe("eth0", MA, t, int(t * 1e9)), t, int(t * 1e9))
    assert b.stats(2.0) and b.stats(2.0)[0].lost_run == 0
    b.link_keys.down("eth0", KAB, 2.0)
    (s,) = b.stats(2.0 + GRACE / 2)  # within the grace the peer is still judged (and still heard)
    assert s.peer == MA
    assert b.stats(2.0 + GRACE + 0.5) == () and not b.peers  # forgotten, not silent


def test_switching_to_session_keys_starts_the_accounting_over():
    ring_b = ring(KAB, required=False)
    a, b = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0, link_keys=ring_b)
    b.receive("eth0", MB, a.next_probe("eth0", MA, 1.0, 10**9), 1.0, 0)
    assert b.peers  # learnt from an unauthenticated probe
    ring_b.required = True
    b.start_over()
    assert not b.peers and b.stats(5.0) == ()
