"""Liveness probes: codec (round trip, authentication, fuzz) and loss accounting on a simulated link."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.heal.core.liveness import TRAFFIC_HOLD, Ack, Probe, ProbeDecodeError, Tracker, decode, encode

MA, MB = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def test_round_trip_and_authentication():
    p = Probe(seq=7, sender=MA, sent=123456789, acks=(Ack(MB, 5, 99, 1000, 250),))
    assert decode(encode(p)) == p
    key = b"k" * 32
    tagged = encode(p, key)
    assert decode(tagged, key) == p
    with pytest.raises(ProbeDecodeError, match="authentication"):
        decode(tagged[:-1] + bytes([tagged[-1] ^ 1]), key)
    with pytest.raises(ProbeDecodeError, match="unauthenticated"):
        decode(encode(p), key)
    with pytest.raises(ProbeDecodeError):
        decode(tagged, b"other-key")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(min_size=1, max_size=8)))
def test_decoder_raises_only_its_decode_error(data, key):
    for blob in (data, b"X0LP\x01" + data):
        try:
            decode(blob, key)
        except ProbeDecodeError:
            pass


def simulate(duration, loss_ab, loss_ba, interval=0.1, fail_at=1.0):
    """Two agents probing each other; from ``fail_at`` the given directions drop everything."""
    a = Tracker(interval, 20, 60.0)
    b = Tracker(interval, 20, 60.0)
    t = 0.0
    first_bad = {"a": None, "b": None}
    while t < duration:
        t = round(t + interval / 2, 6)
        failed = t >= fail_at
        # a sends on even half-ticks, b on odd ones (phases differ like real agents)
        if round(t / (interval / 2)) % 2 == 0:
            data = a.next_probe("eth0", MA, t, int(t * 1e9))
            if not (failed and loss_ab):
                b.receive("eth0", MB, data, t + 0.0005, int((t + 0.0005) * 1e9))
        else:
            data = b.next_probe("eth0", MB, t, int(t * 1e9))
            if not (failed and loss_ba):
                a.receive("eth0", MA, data, t + 0.0005, int((t + 0.0005) * 1e9))
        for name, tr in (("a", a), ("b", b)):
            stats = tr.stats(t)
            if not stats:
                continue
            (s,) = stats
            if s.lost_run >= 3 and first_bad[name] is None:
                first_bad[name] = t
            if not failed:
                assert s.lost_run <= 1 and s.loss <= 0.1, (name, t, s)
    return a, b, first_bad


def test_healthy_link_has_no_loss_and_measures_rtt():
    a, _, bad = simulate(3.0, False, False)
    assert bad == {"a": None, "b": None}
    (s,) = a.stats(3.0)
    assert s.rtt_ms is not None and 0 <= s.rtt_ms < 100
    assert s.peer == MB and s.received == 20


@pytest.mark.parametrize(("ab", "ba"), [(True, True), (True, False), (False, True)])
def test_both_ends_see_silent_loss_within_half_a_second(ab, ba):
    _, _, bad = simulate(3.0, ab, ba)
    for name in ("a", "b"):
        assert bad[name] is not None, name
        assert bad[name] - 1.0 <= 0.5, (name, bad[name])


def test_peer_restart_and_expiry():
    tr = Tracker(0.1, 20, expiry=5.0)
    other = Tracker(0.1, 20, 60.0)
    for i in range(10):
        tr.receive("eth0", MA, other.next_probe("eth0", MB, i * 0.1, i * 10**8), i * 0.1, 0)
    fresh = Tracker(0.1, 20, 60.0)  # the peer restarted: its seq starts over
    tr.receive("eth0", MA, fresh.next_probe("eth0", MB, 1.0, 10**9), 1.0, 0)
    (s,) = tr.stats(1.05)
    assert s.lost_run == 0
    assert tr.stats(7.0) == ()
    tr.receive("eth0", MA, b"garbage", 7.0, 0)
    assert tr.rejected == 1


def test_own_stall_and_jitter_are_not_loss():
    """A receiver that did not run for 0.6 s, and probes arriving up to 150 ms late, lose nothing."""
    import random

    rnd = random.Random(7)
    a, b = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    inflight: list[tuple[float, Tracker, str, bytes]] = []
    worst = 0
    t = 0.0
    for i in range(200):
        t = round(i * 0.1, 6)
        if 80 <= i < 86:  # a's process is frozen: no ticks, no sends, no reads
            continue
        for tr, mac, peer in ((a, MA, b), (b, MB, a)):
            tr.tick(t)
            data = tr.next_probe("eth0", mac, t, int(t * 1e9))
            inflight.append((t + rnd.uniform(0.0005, 0.15), peer, MB if mac == MA else MA, data))
        due = [x for x in inflight if x[0] <= t]
        inflight = [x for x in inflight if x[0] > t]
        for _at, tr, mac, data in sorted(due, key=lambda x: x[0]):
            tr.receive("eth0", mac, data, t, int(t * 1e9))
        for tr in (a, b):
            for s in tr.stats(t):
                worst = max(worst, s.lost_run) if i > 5 else worst
    assert a.stalls == 1
    assert worst < 3


def test_a_stopped_peer_agent_is_not_a_dead_link():
    """Frames still arriving on the link (OGMs, data) after the probes stopped: the agent over
    there went quiet, not the link. And a stopping agent says goodbye."""
    a, b = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    for i in range(10):
        a.receive("eth0", MA, b.next_probe("eth0", MB, i * 0.1, i * 10**8), i * 0.1, i * 10**8)
    (s,) = a.stats(1.5)
    assert s.lost_run >= 3  # silence...
    (s,) = a.stats(1.5, {"eth0": 1.4})  # ...while frames kept coming: not loss
    assert s.lost_run == 0
    a.receive("eth0", MA, b.bye("eth0", MB, 15 * 10**8), 1.5, 15 * 10**8)
    assert a.stats(2.0) == ()


MC = "02:00:00:00:00:0c"


def test_another_neighbours_frames_no_longer_hide_a_silent_peer():
    """Two neighbours on one radio; B's probes and batman-adv frames stop, C's go on. The
    interface counter still sees frames (C's) and hides B's silence; B's own figure does not."""
    me, b, c = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    _probe_every(b, me, 0.0, 2.0)  # B's last probe at 1.9
    _probe_every(c, me, 0.0, 3.0, mac_from=MC)
    interface = {"eth0": 2.95}  # frames keep arriving on eth0: C's
    by_peer = {s.peer: s.lost_run for s in me.stats(3.0, interface)}
    assert by_peer == {MB: 0, MC: 0}  # hidden: that is the interface counter's blind spot
    own = {**interface, ("eth0", MB): 1.95, ("eth0", MC): 2.95}  # B's last frame came with its last probe
    by_peer = {s.peer: s.lost_run for s in me.stats(3.0, own)}
    assert by_peer[MB] >= 10 and by_peer[MC] == 0
    assert me.worst_run(3.0, own) == by_peer[MB] and me.worst_run(3.0, interface) == 0
    # B's agent stalls but its batman-adv frames go on: its own figure says the link is alive...
    alive = {("eth0", MB): 2.9}
    assert {s.peer: s.lost_run for s in me.stats(3.0, alive)}[MB] == 0 and me.worst_run(3.0, alive) == 0
    # ...until they too stop for TRAFFIC_HOLD: then the silence since the last of them counts
    assert {s.peer: s.lost_run for s in me.stats(2.9 + TRAFFIC_HOLD + 0.1, alive)}[MB] == 0
    assert {s.peer: s.lost_run for s in me.stats(2.9 + TRAFFIC_HOLD + 0.4, alive)}[MB] == 3


def test_a_peer_without_its_own_figure_falls_back_to_its_interface():
    me, b = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    _probe_every(b, me, 0.0, 2.0)
    # figures of another interface's peer and of another peer say nothing about B: its interface's do
    assert me.worst_run(3.0, {("eth1", MB): 2.9, ("eth0", MC): 2.9}) >= 10
    assert me.worst_run(3.0, {("eth1", MB): 2.9, "eth0": 2.9}) == 0
    # frames right after the last probe (already on the wire when the link died) do not count
    assert me.worst_run(3.0, {("eth0", MB): 2.1}) >= 10


def _probe_every(tracker_from, tracker_to, t0, t1, interval=0.1, mac_from=MB, mac_to=MA):
    t = t0
    while t < t1:
        tracker_to.receive("eth0", mac_to, tracker_from.next_probe("eth0", mac_from, t, int(t * 1e9)), t, int(t * 1e9))
        t = round(t + interval, 6)


def _kernel_echo(me, t0, t1, answered, interval=0.1):
    """``me`` ticks every interval from ``t0``: an echo request to each overdue peer, answered
    ``answered(t)`` (the peer's kernel) 1 ms later; returns the largest lost_run seen."""
    worst, t = 0, t0
    while t < t1:
        for hardif, peer in me.overdue(t):
            me.echo_sent(hardif, peer, t)
            if answered(t):
                me.echo_reply(hardif, peer, t + 0.001)
        (s,) = me.stats(t + 0.002)
        worst = max(worst, s.lost_run)
        t = round(t + interval, 6)
    return worst


def test_a_starved_peer_whose_kernel_answers_the_echo_is_not_lost():
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    _probe_every(peer, me, 0.0, 2.0)
    # the peer's agent stalls for 2 s (no probes); its kernel still answers: not one probe
    # counts as lost, so the link is not even suspect (a suspect link speeds up OGMs)
    assert _kernel_echo(me, 2.0, 4.0, lambda t: True) == 0
    (s,) = me.stats(4.0)
    assert s.loss < 0.1 and me.echoes_answered > 0


def test_without_an_echo_reply_the_loss_is_confirmed_at_most_half_an_interval_later():
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    _probe_every(peer, me, 0.0, 2.0)
    last = 1.9
    t, confirmed = 2.0, None
    while confirmed is None and t < 4.0:
        for hardif, p in me.overdue(t):
            me.echo_sent(hardif, p, t)  # the link is dead: no reply ever
        (s,) = me.stats(t)
        if s.lost_run >= 3:
            confirmed = t
        t = round(t + 0.05, 6)
    # probes alone: confirmed 0.35 s after the last one; a request in flight holds it <= 0.05 s
    assert confirmed is not None and confirmed - last <= 0.35 + 0.05 + 1e-9


def test_a_late_probe_is_no_lost_one_while_the_echo_may_still_come_back():
    """One probe 150 ms late (the peer's agent starved for a moment): while the kernel's echo
    reply may be on the way, no run of loss counts, so one late probe never makes the link suspect;
    once the echo had its half interval and no answer, the whole silence counts."""
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    _probe_every(peer, me, 0.0, 2.0)  # last probe at 1.9
    assert me.overdue(2.05) == [("eth0", MB)]
    me.echo_sent("eth0", MB, 2.05)
    (s,) = me.stats(2.09)
    assert s.lost_run == 0 and me.worst_run(2.09) == 0
    (s,) = me.stats(2.101)  # no answer within half an interval: silent since 1.9
    assert s.lost_run == 1


def test_echo_replies_stop_counting_once_they_stop():
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    _probe_every(peer, me, 0.0, 2.0)
    assert _kernel_echo(me, 2.0, 3.0, lambda t: True) == 0
    assert _kernel_echo(me, 3.0, 3.6, lambda t: False) >= 3  # the link died after the agent stalled


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=5, max_size=60), st.floats(0, 2.0),
       st.one_of(st.none(), st.floats(0, 10.0)), st.one_of(st.none(), st.floats(0, 10.0)))
def test_worst_run_is_what_stats_reports(pattern, extra, other_rx, own_rx):
    """The prober asks worst_run after every round instead of building the stats: the same figure,
    with interface-wide and per-peer traffic figures alike."""
    a, b = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    t = 0.0
    for a_gets, b_gets in pattern:
        t = round(t + 0.1, 6)
        da, db = a.next_probe("eth0", MA, t, int(t * 1e9)), b.next_probe("eth0", MB, t, int(t * 1e9))
        if b_gets:
            b.receive("eth0", MB, da, t + 0.001, int((t + 0.001) * 1e9))
        if a_gets:
            a.receive("eth0", MA, db, t + 0.001, int((t + 0.001) * 1e9))
    now = t + extra
    link_rx: dict = {"eth0": other_rx} if other_rx is not None else {}
    if own_rx is not None:
        link_rx.update({("eth0", MA): own_rx, ("eth0", MB): own_rx + 0.3})
    for tr in (a, b):
        stats = tr.stats(now, link_rx)
        assert tr.worst_run(now, link_rx) == max((s.lost_run for s in stats), default=0)


def test_the_prober_asks_only_overdue_peers_for_their_own_figure():
    """One map lookup per overdue peer and round, none for peers on time; a peer without a figure
    (the eBPF object not loaded, no entry) falls back to its interface's counter, and the prober
    says which corroboration it used."""
    from x0tta.heal.liveness import BY_INTERFACE, BY_NEIGHBOUR, Prober, _Iface

    asked: list[tuple[int, str]] = []
    figures = {(7, MB): 2.9}

    def last_rx(ifindex: int, mac: str) -> float | None:
        asked.append((ifindex, mac))
        return figures.get((ifindex, mac))

    p = Prober(Tracker(0.1, 20, 60.0), 0, 0.1, neighbour_rx=last_rx)
    p.ifaces = {"x0nope0": _Iface("x0nope0", 7, MA, None), "x0nope1": _Iface("x0nope1", 8, MA, None)}  # type: ignore[arg-type]
    assert p.corroboration == BY_NEIGHBOUR  # wired, not needed yet
    p._sample_rx(3.0, [])
    assert asked == [] and p.rx_times() == {}
    p._sample_rx(3.0, [("x0nope0", MB), ("gone", MB)])
    assert asked == [(7, MB)] and p.rx_times() == {("x0nope0", MB): 2.9} and p.corroboration == BY_NEIGHBOUR
    p._sample_rx(3.1, [("x0nope0", MB), ("x0nope1", MC)])  # C has no figure: its interface's counter
    assert asked[1:] == [(7, MB), (8, MC)] and p.corroboration == BY_INTERFACE
    p._sample_rx(3.2, [])  # nobody late: nothing asked, no figure kept, the last verdict stands
    assert len(asked) == 3 and p.rx_times() == {} and p.corroboration == BY_INTERFACE
    p._sample_rx(3.3, [("x0nope0", MB)])
    assert p.corroboration == BY_NEIGHBOUR
    assert Prober(Tracker(0.1, 20, 60.0), 0, 0.1).corroboration == BY_INTERFACE  # nothing wired


def _slow_reader(me, peer, t0, t1, lag, answered, interval=0.1):
    """``peer`` probes on time but reads ``me``'s probes ``lag`` late (its agent starved between
    rounds: they wait unread in its socket); ``me`` asks the peer's kernel when its probes go
    unacknowledged, answered ``answered(t)``. Returns the largest lost_run ``me`` sees."""
    worst, t, queue = 0, t0, []
    while t < t1:
        queue.append((t, me.next_probe("eth0", MA, t, int(t * 1e9))))
        while queue and queue[0][0] <= t - lag:  # the peer reads what is old enough
            sent, data = queue.pop(0)
            peer.receive("eth0", MB, data, sent + lag, int((sent + lag) * 1e9))
        p = t + interval / 2
        me.receive("eth0", MA, peer.next_probe("eth0", MB, p, int(p * 1e9)), p, int(p * 1e9))
        for hardif, who in me.overdue(p):
            me.echo_sent(hardif, who, p)
            if answered(p):
                me.echo_reply(hardif, who, p + 0.001)
        (s,) = me.stats(p + 0.002)
        worst = max(worst, s.lost_run)
        t = round(t + interval, 6)
    return worst


def test_a_peer_that_reads_my_probes_late_is_not_a_dead_link_when_its_kernel_answers():
    """My probes unacknowledged because the agent over there reads them late (its process
    starved): the kernel's echo answers after they were sent, so they are late, not lost."""
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    assert _slow_reader(me, peer, 0.0, 1.0, 0.0, lambda t: True) == 0
    assert _slow_reader(me, peer, 1.0, 3.0, 0.45, lambda t: True) == 0
    (s,) = me.stats(3.0)
    assert me.echoes_answered > 0 and s.lost_run == 0


def test_unacknowledged_probes_and_no_echo_reply_are_lost():
    """One-way loss from me to the peer: its probes still arrive, mine are never acknowledged and
    the echo request is lost with them: the send-side run counts."""
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    assert _slow_reader(me, peer, 0.0, 1.0, 0.0, lambda t: True) == 0
    assert _slow_reader(me, peer, 1.0, 2.0, 99.0, lambda t: False) >= 3


def test_an_agent_catching_up_after_a_stall_reports_no_loss_for_its_own_silence():
    """Its own stall is not its peers' loss: the loss it reports in its acks counts gaps between
    the probes it heard, not the time it did not run."""
    a, b = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    t = 0.0
    for _ in range(20):
        a.receive("eth0", MA, b.next_probe("eth0", MB, t, int(t * 1e9)), t, int(t * 1e9))
        a.tick(t)
        t = round(t + 0.1, 6)
    t += 0.6  # a did not run for 0.7 s (b's probes wait unread)
    a.tick(t)
    (ack,) = decode(a.next_probe("eth0", MA, t, int(t * 1e9))).acks
    assert ack.loss_permille == 0


def test_the_prober_drains_its_socket_after_a_late_round():
    """On a real socket (loopback): the host's endpoint the prober reads through. The probes' and
    alerts' exchanges between agents run on the kit's fake net (test_heal_datanet.py)."""
    import socket

    from x0tta.heal.datagrams import SocketEndpoint
    from x0tta.heal.liveness import Prober, _Iface

    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    prober = Prober(me, 0, 0.1)
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.bind(("::1", 0))
        rx.setblocking(False)
        prober.ifaces["eth0"] = _Iface("eth0", 1, MA, SocketEndpoint(rx, 1))
        for i in range(5):
            tx.sendto(peer.next_probe("eth0", MB, i * 0.1, i * 10**8), rx.getsockname())
        assert prober.drain() == 5 and prober.received == 5
        assert me.peers[("eth0", MB)].high_seq == 5
        assert prober.drain() == 0
    finally:
        rx.close()
        tx.close()


def test_a_probe_read_at_the_round_counts_from_when_the_kernel_received_it():
    """The prober reads once per round: a probe that waited in the socket is dated by the kernel's
    receive timestamp (SO_TIMESTAMPNS), not by the read."""
    import socket
    import time

    from x0tta.heal.datagrams import SO_TIMESTAMPNS, SocketEndpoint
    from x0tta.heal.liveness import Prober, _Iface

    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    prober = Prober(me, 0, 0.1)
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        rx.bind(("::1", 0))
        rx.setblocking(False)
        prober.ifaces["eth0"] = _Iface("eth0", 1, MA, SocketEndpoint(rx, 1))
        sent = time.monotonic()
        tx.sendto(peer.next_probe("eth0", MB, 0.0, 0), rx.getsockname())
        time.sleep(0.05)  # the probe waits for the next round
        read = time.monotonic()
        assert prober.drain(read) == 1
        heard = me.peers[("eth0", MB)].last_rx
        assert sent - 0.01 <= heard < read - 0.04, (sent, heard, read)
    finally:
        rx.close()
        tx.close()


class _Stamped:
    """An endpoint handing out datagrams with the receive times a test chose."""

    index = 1
    stamped = True

    def __init__(self, items):
        self.items = list(items)

    def recv_stamped(self, size):
        if not self.items:
            raise BlockingIOError
        data, wall = self.items.pop(0)
        return data, ("fe80::2", 0, 0, 1), wall, None

    def sendto(self, data, addr):
        return len(data)

    def close(self):
        pass


def test_a_receive_time_is_kept_between_the_last_round_and_now():
    """A wall clock stepped between the kernel's stamp and the read cannot date a probe before the
    round that did not see it, or after the read; a datagram without a stamp counts from the read."""
    from tests.kit.clock import ManualClock
    from x0tta.heal.liveness import Prober, _Iface

    clock = ManualClock()
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    prober = Prober(me, 0, 0.1, clock=clock)
    wall_offset = clock.time() - clock.monotonic()
    ep = _Stamped([])
    prober.ifaces["eth0"] = _Iface("eth0", 1, MA, ep)  # type: ignore[arg-type]
    prober.drain()  # the first round
    first = clock.monotonic()
    clock.advance(0.1)
    ep.items = [(peer.next_probe("eth0", MB, 0.0, 0), first + wall_offset - 3600.0)]  # a clock stepped back
    prober.drain()
    assert me.peers[("eth0", MB)].last_rx == first
    clock.advance(0.1)
    ep.items = [(peer.next_probe("eth0", MB, 0.1, 10**8), clock.time() + 3600.0)]  # stepped forward
    prober.drain()
    assert me.peers[("eth0", MB)].last_rx == clock.monotonic()
    clock.advance(0.1)
    ep.items = [(peer.next_probe("eth0", MB, 0.2, 2 * 10**8), clock.time() - 0.05)]  # a true stamp
    prober.drain()
    assert me.peers[("eth0", MB)].last_rx == pytest.approx(clock.monotonic() - 0.05)
    clock.advance(0.1)
    ep.items = [(peer.next_probe("eth0", MB, 0.3, 3 * 10**8), None)]  # none
    prober.drain()
    assert me.peers[("eth0", MB)].last_rx == clock.monotonic()


def test_receive_info_reads_a_timestamp_by_its_length_and_the_drop_count():
    import socket
    import struct
    import sys

    from x0tta.heal.datagrams import SO_RXQ_OVFL, SO_TIMESTAMPNS, receive_info

    sol = socket.SOL_SOCKET
    assert receive_info([]) == (None, None)
    assert receive_info([(sol, SO_TIMESTAMPNS, struct.pack("=qq", 1_800_000_000, 500_000_000))]) == (
        1_800_000_000.5, None)
    assert receive_info([(sol, SO_TIMESTAMPNS, struct.pack("=ii", 1_700_000_000, 250_000_000)),
                         (sol, SO_RXQ_OVFL, (7).to_bytes(4, sys.byteorder))]) == (1_700_000_000.25, 7)
    # another level, a length that is no timespec: not ours to read
    assert receive_info([(socket.IPPROTO_IPV6, SO_TIMESTAMPNS, b"\0" * 16),
                         (sol, SO_TIMESTAMPNS, b"\0" * 12)]) == (None, None)


def test_a_datagram_whose_handling_fails_is_logged_and_the_next_one_read():
    from tests.kit.clock import ManualClock
    from x0tta.heal.liveness import Prober, _Iface

    class Log:
        def __init__(self):
            self.errors = []

        def error(self, event, **kw):
            self.errors.append((event, kw))

        def warning(self, event, **kw):
            pass

    clock, log = ManualClock(), Log()
    me, peer = Tracker(0.1, 20, 60.0), Tracker(0.1, 20, 60.0)
    prober = Prober(me, 0, 0.1, clock=clock, log=log)
    prober.on_alert = lambda *_a: 1 / 0
    prober.ifaces["eth0"] = _Iface("eth0", 1, MA, _Stamped([(b"X0MA an alert", None),  # type: ignore[arg-type]
                                                             (peer.next_probe("eth0", MB, 0.0, 0), None)]))
    assert prober.drain() == 2
    assert prober.take_errors == 1 and log.errors[0][0] == "probe_datagram_failed"
    assert "ZeroDivisionError" in log.errors[0][1]["error"] and ("eth0", MB) in me.peers


def _probe_with_holes(t0, t1, lost, interval=0.1):
    """A tracker hearing a peer's probes from ``t0`` to ``t1``, less those whose index is in ``lost``."""
    me, peer = Tracker(interval, 20, 60.0), Tracker(interval, 20, 60.0)
    t, i = t0, 0
    while t < t1:
        data = peer.next_probe("eth0", MB, t, int(t * 1e9))
        if i not in lost:
            me.receive("eth0", MA, data, t, int(t * 1e9))
        t, i = round(t + interval, 6), i + 1
    return me


def test_losses_scattered_before_a_run_are_counted_apart_from_it():
    """A link that lost probes at random before it went quiet still carries traffic (the plan
    treats it as partial loss); one that was clean, or that was learned only lately, does not."""
    # 30 probes with every third of the last 15 lost, then silence: 4 holes before the run
    (s,) = _probe_with_holes(0.0, 3.0, {16, 19, 22, 25}).stats(3.35)
    assert s.lost_run >= 3 and s.scattered == 4
    # clean, then silence: the run alone
    (s,) = _probe_with_holes(0.0, 3.0, set()).stats(3.35)
    assert s.lost_run >= 3 and s.scattered == 0
    # learned half a second ago, clean, then silence: a short history, not a lossy one
    (s,) = _probe_with_holes(2.5, 3.0, set()).stats(3.35)
    assert s.lost_run >= 3 and s.scattered == 0 and s.loss > 0.3
