"""The heal loop's probes and mesh alerts between agents on the test kit's fake datagram net.

The real :class:`~x0tta.heal.liveness.Prober` and :class:`~x0tta.heal.alerts.Alerter` run here,
one per node, on a :class:`~tests.kit.clock.ManualClock`, their endpoints opened through
``tests.kit.datanet.FakeNet``: the losses, delays, forgeries and starved agents that the
integration tests (``tests/integration/test_heal_liveness_net.py``, real sockets over veth pairs
in a namespace) measure in real time are replayed here exactly, in no real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os

import pytest

from tests.kit.clock import ManualClock
from tests.kit.datanet import FakeEndpoint, FakeNet, NodeDatagrams
from x0tta.heal.alerts import Alerter
from x0tta.heal.core.alert import Alert, Board, encode
from x0tta.heal.core.linkkeys import LinkKeys, key_id
from x0tta.heal.core.liveness import Probe, Tracker
from x0tta.heal.core.liveness import encode as encode_probe
from x0tta.heal.datagrams import ALL_NODES
from x0tta.heal.liveness import Prober

PORT, APORT = 4305, 4306
STEP = 0.005  # s of manual time per loop turn: finer than any timer of the prober


@contextlib.asynccontextmanager
async def probing(probers: dict[str, tuple[Prober, list[str]]]):
    tasks = [asyncio.create_task(p.run(lambda names=names: names)) for p, names in probers.values()]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def prober(net: FakeNet, clock: ManualClock, node: str, **tracker) -> Prober:
    return Prober(Tracker(0.1, 20, 60.0, **tracker), PORT, 0.1, datagrams=net.node(node), clock=clock)


async def first_bad(clock: ManualClock, probers: list[Prober], limit: float) -> list[float | None]:
    """Manual seconds until each prober reports a run of 3 lost probes (None: not within ``limit``)."""
    start, out = clock.monotonic(), [None] * len(probers)
    while clock.monotonic() - start < limit and None in out:
        await clock.pass_time(STEP)
        for i, p in enumerate(probers):
            if out[i] is None and any(s.lost_run >= 3 for s in p.stats()):
                out[i] = round(clock.monotonic() - start, 3)
    return out


async def worst_run(clock: ManualClock, p: Prober, seconds: float) -> int:
    worst, end = 0, clock.monotonic() + seconds
    while clock.monotonic() < end:
        await clock.pass_time(STEP)
        worst = max([worst] + [s.lost_run for s in p.stats()])
    return worst


async def test_both_ends_detect_a_silent_link_within_half_a_second_and_recover():
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0")
    for src, dst in (("a/eth0", "b/eth0"), ("b/eth0", "a/eth0")):
        net.fault(src, dst, delay=0.002)  # 2 ms each way
    pa, pb = prober(net, clock, "a"), prober(net, clock, "b")
    async with probing({"a": (pa, ["eth0"]), "b": (pb, ["eth0"])}):
        await clock.pass_time(2.0, STEP)
        healthy = pa.stats() + pb.stats()
        assert len(healthy) == 2
        for s in healthy:  # the RTT: both delays, the reads landing on the test's steps
            assert s.lost_run == 0 and s.loss == 0.0 and s.rtt_ms is not None, s
            assert 4.0 <= s.rtt_ms <= 4.0 + 2000 * STEP, s
        assert {s.peer for s in pa.stats()} == {net.mac("b/eth0")}
        net.cut("a/eth0", "b/eth0")  # silent: the carrier stays up
        detect_a, detect_b = await first_bad(clock, [pa, pb], 2.0)
        assert detect_a is not None and detect_a <= 0.5, detect_a
        assert detect_b is not None and detect_b <= 0.5, detect_b
        net.restore("a/eth0", "b/eth0")
        await clock.pass_time(3.0, STEP)
        for s in pa.stats() + pb.stats():
            assert s.lost_run < 3, s
    assert net.ifaces["a/eth0"].endpoints == []  # the probers closed their endpoints on the way out


async def test_duplicated_and_delayed_probes_are_no_loss_and_corrupted_ones_are_refused():
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0")
    key = os.urandom(32)
    pa, pb = prober(net, clock, "a", key=key), prober(net, clock, "b", key=key)
    async with probing({"a": (pa, ["eth0"]), "b": (pb, ["eth0"])}):
        net.fault("b/eth0", "a/eth0", duplicate=2, delay=0.03)
        assert await worst_run(clock, pa, 2.0) == 0
        (s,) = pa.stats()
        assert s.loss == 0.0 and pa.received > 2 * s.received  # every probe came three times, counted once
        net.fault("b/eth0", "a/eth0", corrupt=True)  # every tag broken: nothing of b's is taken
        sent_before = pb.sent
        await clock.pass_time(1.0, STEP)
        (s,) = pa.stats()
        # every probe B sent since is refused and counted as lost (the broken frames still arrive,
        # so the link is not taken for silent: the interface counter's corroboration at work)
        assert pa.tracker.rejects.get("bad_tag", 0) == pb.sent - sent_before >= 9, pa.tracker.rejects
        assert s.received <= s.window - 9 and s.loss >= 0.4, s


async def test_a_held_peer_agent_is_not_a_dead_link_when_its_kernel_answers_but_a_dead_link_still_is():
    """The peer's agent gets no CPU (its probes stop, mine wait unread): its kernel answers the
    echo, so no loss; then the link dies and the loss is found."""
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0")
    me, peer = prober(net, clock, "a"), prober(net, clock, "b")
    async with probing({"a": (me, ["eth0"]), "b": (peer, ["eth0"])}):
        await clock.pass_time(2.5, STEP)
        assert await worst_run(clock, me, 1.0) == 0
        net.hold("b")
        assert await worst_run(clock, me, 2.0) < 3
        assert me.echo is True and me.tracker.echoes_answered > 0
        net.cut("a/eth0", "b/eth0")
        (dead,) = await first_bad(clock, [me], 5.0)
        assert dead is not None, me.stats()
        net.release("b")
    # without a raw socket the prober says so and works on probes alone
    alone = Prober(Tracker(0.1, 20, 60.0), PORT, 0.1, datagrams=net.node("a", echo=False), clock=clock)
    async with probing({"a": (alone, ["eth0"])}):
        await clock.pass_time(0.2, STEP)
        assert alone.echo is False and "eth0" in (alone.echo_error or "")


async def test_session_keyed_probes_refuse_forged_unkeyed_wrongly_keyed_and_replayed_ones():
    """An attacker on the link (hearing A's side, sending from B's) cannot feed A a probe: every
    kind is refused, counted by its reason, and A's view of B stays what the real probes say."""
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0")
    key, wrong = os.urandom(32), os.urandom(32)  # the session's link key; a key of no session here
    rings = {}
    for node in "ab":
        rings[node] = LinkKeys(required=True)
        rings[node].up("eth0", "fe80::1%eth0", key, clock.monotonic())
    pa, pb = prober(net, clock, "a", link_keys=rings["a"]), prober(net, clock, "b", link_keys=rings["b"])
    tap = net.node("a").link("eth0", PORT)  # the attacker's ends: one on each side of the link
    inject = net.node("b").link("eth0", PORT)
    async with probing({"a": (pa, ["eth0"]), "b": (pb, ["eth0"])}):
        await clock.pass_time(1.5, STEP)
        await clock.pass_time(0.5, STEP)
        captured = []  # what the tap heard of B's probes all along
        with contextlib.suppress(BlockingIOError):
            while True:
                captured.append(tap.recvfrom(4096)[0])
        b_mac = net.mac("b/eth0")
        t = int(clock.monotonic() * 1e9)
        sent = {
            "unkeyed": [encode_probe(Probe(seq=10**6 + i, sender=b_mac, sent=t + i)) for i in range(10)],
            "wrong_key": [encode_probe(Probe(seq=10**6 + i, sender=b_mac, sent=t + i),
                                       link_keys=[(key_id(wrong), wrong)]) for i in range(10)],
            "forged_tag": [c[:-1] + bytes([c[-1] ^ 0x55]) for c in captured[-10:]],
            "replayed": captured[-10:],
            "fake_peer": [encode_probe(Probe(seq=1 + i, sender="02:66:66:66:66:66", sent=t + i)) for i in range(10)],
        }
        before = dict(pa.tracker.rejects)
        for datagrams in sent.values():
            for d in datagrams:
                inject.sendto(d, (ALL_NODES, PORT, 0, inject.index))
                await clock.pass_time(0.01, STEP)
        await clock.pass_time(1.0, STEP)
        refused = {k: v - before.get(k, 0) for k, v in pa.tracker.rejects.items()}
        assert len(captured) >= 10
        assert refused.get("unauthenticated", 0) == 20  # the unkeyed ones and the fake peer's
        assert refused.get("not_for_us", 0) == 10  # tagged with a key of no session of A's
        assert refused.get("bad_tag", 0) == 10
        assert refused.get("replayed", 0) == 10
        assert sum(refused.values()) == sum(len(v) for v in sent.values())  # nothing got through
        peers_a = [p for (_h, p) in pa.tracker.peers]
        assert len(peers_a) == 1 and "02:66:66:66:66:66" not in peers_a  # no fake peer learnt
        for s in pa.stats() + pb.stats():
            assert s.lost_run < 3 and s.loss <= 0.1, s  # and no loss was faked or hidden
    tap.close()
    inject.close()


async def test_a_flooded_alert_reaches_the_mesh_and_its_second_copy_covers_a_lost_first():
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/bat0", "b/bat0", "c/bat0")
    key = os.urandom(32)
    wakes = {n: 0 for n in "abc"}

    def alerter(node: str) -> Alerter:
        def wake() -> None:
            wakes[node] += 1
        return Alerter(Board(5.0), "bat0", APORT, 3.0, key=key, wake=wake, datagrams=net.node(node), clock=clock)

    alerters = {n: alerter(n) for n in "abc"}
    for a in alerters.values():
        assert await a.ensure(clock.monotonic())
    assert alerters["a"].origin == net.mac("a/bat0")
    net.fault("a/bat0", "c/bat0", drop=1.0)  # the first copy does not reach C
    alert = alerters["a"].raise_alert("silent_loss", clock.monotonic())
    assert alert is not None
    await clock.pass_time(0.01, STEP)
    assert [h.origin for h in alerters["b"].board.active(clock.monotonic())] == [alert.origin]
    assert not alerters["c"].board.active(clock.monotonic())
    net.restore("a/bat0", "c/bat0")
    await clock.pass_time(0.2, STEP)  # the second copy, 200 ms later, same sequence number
    assert [h.origin for h in alerters["c"].board.active(clock.monotonic())] == [alert.origin]
    assert wakes == {"a": 0, "b": 1, "c": 1}  # B took the second copy as the same alert
    assert alerters["a"].sent == 2 and alerters["b"].received == 2
    # a corrupted alert is refused with its reason and wakes nobody
    net.fault("a/bat0", "b/bat0", corrupt=True)
    alerters["a"].raise_alert("link_down", clock.monotonic())
    await clock.pass_time(0.3, STEP)
    assert alerters["b"].rejects.get("bad_tag", 0) == 2 and wakes["b"] == 1, alerters["b"].rejects
    for a in alerters.values():
        a.close()


async def test_an_unkeyed_alert_in_this_nodes_own_name_is_not_taken():
    """Without keys anyone on the flood can send an alert; one that claims this node's own origin
    (its MAC is in every alert it sends) would count as this node's own, and its sequence number
    would shadow this node's next real alert. The node takes its own alerts when it raises them."""
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/bat0", "x/bat0")
    wakes = [0]
    a = Alerter(Board(5.0), "bat0", APORT, 3.0, wake=lambda: wakes.__setitem__(0, wakes[0] + 1),
                datagrams=net.node("a"), clock=clock)
    assert await a.ensure(clock.monotonic()) and not a.keyed
    flood = net.node("x").link("bat0", APORT)
    flood.sendto(encode(Alert(a.origin, (a.seq + (1 << 30)) & 0xFFFFFFFF, "link_down", 3000)),
                 (ALL_NODES, APORT, 0, flood.index))
    await clock.pass_time(0.1, STEP)
    assert not a.board.active(clock.monotonic()) and wakes == [0]
    mine = a.raise_alert("silent_loss", clock.monotonic())  # its own next alert still goes out and holds
    assert mine is not None and [h.origin for h in a.board.active(clock.monotonic())] == [a.origin]
    flood.close()
    a.close()


class _NoFilter(NodeDatagrams):
    """A kernel that refuses socket filters: alerts come with the probes, read at the round."""

    def link(self, ifname: str, port: int, prefix: bytes | None = None, match: bool = True,
             stamps: bool = False) -> FakeEndpoint:
        if prefix is not None:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        return super().link(ifname, port)


@pytest.mark.parametrize("filtered", [True, False], ids=["alert-socket", "no-socket-filter"])
async def test_alerts_cross_the_mesh_hop_by_hop_and_forged_ones_do_not(filtered: bool):
    """A line A - B - C keyed by sessions: A's alert reaches C through B, re-tagged on each link;
    forged, unkeyed, wrongly keyed, flooded and replayed alerts wake nobody. Alerts have a socket
    of their own and cross at once; without the socket filter they wait for each hop's next
    probe round."""
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0")
    net.connect("b/eth1", "c/eth0")
    net.connect("a/bat0", "b/bat0", "c/bat0", "x/bat0")  # x: an outsider on batman-adv's flood
    k_ab, k_bc = os.urandom(32), os.urandom(32)
    now = clock.monotonic()
    nodes = {"a": [("eth0", k_ab)], "b": [("eth0", k_ab), ("eth1", k_bc)], "c": [("eth0", k_bc)]}
    agents, wakes = {}, {n: 0 for n in nodes}
    for name, keys in nodes.items():
        ring = LinkKeys(required=True)
        for dev, k in keys:
            ring.up(dev, "fe80::1%" + dev, k, now)
        datagrams = net.node(name) if filtered else _NoFilter(net, name)
        p = Prober(Tracker(0.1, 20, 60.0, link_keys=ring), PORT, 0.1, datagrams=datagrams, clock=clock)

        def wake(name=name):
            wakes[name] += 1
        a = Alerter(Board(5.0), "bat0", APORT, 3.0, wake=wake, link_keys=ring, hops=p, datagrams=net.node(name),
                    clock=clock)
        p.on_alert = a.hop_receive
        assert await a.ensure(now)
        agents[name] = (p, a, [dev for dev, _ in keys])
    async with probing({n: (p, devs) for n, (p, _a, devs) in agents.items()}):
        await clock.pass_time(1.0, STEP)
        _pa, aa, _ = agents["a"]
        t0 = clock.monotonic()
        assert aa.raise_alert("silent_loss", t0) is not None
        reached = {}
        while clock.monotonic() - t0 < 3.0 and len(reached) < 2:
            await clock.pass_time(STEP)
            for n in ("b", "c"):
                if n not in reached and agents[n][1].board.active(clock.monotonic()):
                    reached[n] = clock.monotonic() - t0
        assert set(reached) == {"b", "c"}, reached  # B heard it from A, C from B
        # at once (the steps of this test), or within a probe round per hop
        assert reached["c"] <= (2 * STEP if filtered else 2 * 0.1 + 2 * STEP), reached
        assert agents["b"][1].relayed == 1
        # forgeries arrive at C over its link: unkeyed, wrongly keyed, forged, over bat0's flood, replayed
        await clock.pass_time(0.5, STEP)
        ac = agents["c"][1]
        before = (dict(ac.rejects), wakes["c"])
        inject = net.node("b").link("eth1", PORT)
        flood = net.node("x").link("bat0", APORT)
        wrong = os.urandom(32)
        fake = Alert("02:66:66:66:66:66", 1, "link_down", 3000)
        real = encode(Alert(aa.origin, aa.seq, "silent_loss", 3000), link_keys=[(key_id(k_bc), k_bc)])
        sends = [(inject, PORT, encode(fake)),
                 (inject, PORT, encode(fake, link_keys=[(key_id(wrong), wrong)])),
                 (inject, PORT, real[:-1] + bytes([real[-1] ^ 1])),
                 (flood, APORT, encode(fake))]
        sends += [(inject, PORT, real)] * 5  # A's alert again, as B sent it: a replay
        for ep, port, data in sends:
            ep.sendto(data, (ALL_NODES, port, 0, ep.index))
            await clock.pass_time(0.01, STEP)
        await clock.pass_time(0.5, STEP)
        refused = {k: v - before[0].get(k, 0) for k, v in ac.rejects.items()}
        assert refused == {"unauthenticated": 2, "not_for_us": 1, "bad_tag": 1}, refused
        assert wakes["c"] == before[1]  # the replay: nothing new
        assert sorted(h.origin for h in ac.board.active(clock.monotonic())) == [aa.origin]
        inject.close()
        flood.close()
    for _p, a, _ in agents.values():
        a.close()


async def test_the_hosts_endpoint_reads_through_the_loop_and_closes_its_reader():
    """The real side of the seam on loopback sockets: ``watch`` calls back from the event loop while
    a datagram waits, ``close`` takes the reader off the loop and closes the socket."""
    import socket

    from x0tta.heal.datagrams import SocketEndpoint

    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::1", 0))
    rx.setblocking(False)
    ep = SocketEndpoint(rx, 1)
    got: list[bytes] = []
    arrived = asyncio.Event()

    def readable() -> None:
        got.append(ep.recvfrom(64)[0])
        arrived.set()

    ep.watch(readable)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"probe", rx.getsockname())
        await asyncio.wait_for(arrived.wait(), 10)
    assert got == [b"probe"]
    ep.close()
    assert rx.fileno() == -1
    ep.close()  # twice: nothing left to do


def test_the_socket_filter_takes_alerts_only_or_everything_else():
    """On the host's kernel (loopback): a socket taking only the datagrams that begin with the alert
    magic, and one taking everything else but datagrams shorter than the magic, which neither
    takes (no probe or alert is that short). (Two such
    sockets share the probe port's multicast on veths: tests/integration/test_heal_liveness_net.py.)"""
    import socket

    from x0tta.heal.datagrams import prefix_filter
    from x0tta.heal.liveness import ALERT_MAGIC

    sent = [b"X0PRa probe", ALERT_MAGIC + b"an alert", b"X0"]
    got = {}
    for match in (True, False):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
            prefix_filter(rx, ALERT_MAGIC, match)
            rx.bind(("::1", 0))
            for data in sent:
                tx.sendto(data, rx.getsockname())
            tx.sendto(ALERT_MAGIC + b"end" if match else b"the end", rx.getsockname())
            rx.settimeout(5.0)
            got[match] = []
            while not got[match] or not got[match][-1].endswith(b"end"):
                got[match].append(rx.recv(64))
    assert got[True] == [ALERT_MAGIC + b"an alert", ALERT_MAGIC + b"end"]
    assert got[False] == [b"X0PRa probe", b"the end"]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s, pytest.raises(ValueError):
        prefix_filter(s, b"X0", True)


async def test_probes_a_flood_pushes_out_of_a_full_socket_are_not_loss_on_the_link():
    """An outsider on the link floods the probe port. Datagrams without the probe magic never reach
    the probe socket (its filter); forged probes fill it, and the kernel drops what does not fit,
    real probes included. Those drops are seen (the socket's drop count) and held, not counted as
    loss on a healthy link."""
    clock = ManualClock()
    net = FakeNet(clock)
    net.connect("a/eth0", "b/eth0", "x/eth0")
    pa, pb = prober(net, clock, "a"), prober(net, clock, "b")
    async with probing({"a": (pa, ["eth0"])}):
        await clock.pass_time(0.05, STEP)  # b's rounds half an interval after a's
        async with probing({"b": (pb, ["eth0"])}):
            await clock.pass_time(1.0, STEP)
            sock = pa.ifaces["eth0"].sock
            sock.capacity = 8  # a small receive buffer: the flood overruns it between two rounds
            # b sends no batman-adv frames here (the eBPF figure): the flood's frames on the
            # interface must not be what keeps b's silence from counting
            pa.neighbour_rx = lambda _index, _mac: 0.0
            flood = net.node("x").link("eth0", PORT)
            junk, forged = b"junk" * 10, b"X0LP" + os.urandom(40)
            worst = 0
            for step in range(400):  # 2 s
                flood.sendto(junk, (ALL_NODES, PORT, 0, flood.index))
                flood.sendto(forged, (ALL_NODES, PORT, 0, flood.index))
                await clock.pass_time(STEP)
                if step % 20 == 19:  # the loop's look, once a round, between rounds
                    worst = max([worst] + [s.lost_run for s in pa.stats()])
            received = sum(s.received for s in pa.stats())
            assert 0 < pa.overruns <= sock.drops and pa.tracker.holds > 0  # the last drops: after the last read
            assert received < 20 and worst == 0, (received, worst)  # b's probes were dropped too: held
            assert pa.tracker.rejects["malformed"] > 0 and not any(d == junk for d, *_ in sock.queue)
            flood.close()
