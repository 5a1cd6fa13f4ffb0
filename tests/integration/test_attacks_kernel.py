"""The attack suite's host-side half: its frames, sent by its injector from a network namespace over
a veth pair, through the guard's real eBPF program on the host kernel, into the guard's detectors.

No batman-adv here (the UML lab has it: tests/bench/bench_attacks.py). What the kernel shows is
the program's: the neighbour map (frames per source MAC, those not admitted) and the ``ogms`` map
(sequence-number streams per originator). A takeover and a rogue MAC go the whole way of the
agent: the guard's look reads the maps, builds its observation as the wiring does
(``guard_observer``) and reports the threats. The flood's ``originator_flood`` reads batman-adv's
originator table, which this host has not: the originators the ``ogms`` map recorded stand in for
the routes batman-adv would have learnt from those OGMs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import socket
import time
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT
from tests.integration import test_probes_kernel as kernel
from tests.integration.test_probes_kernel import PEER_MAC, Ctx, received, settings, start
from tests.kit.netns import sh
from tests.kit.wait import until, until_sync
from x0tta.agent.wiring import guard_maps, guard_observer
from x0tta.config.guard import DetectSettings, GuardSettings
from x0tta.config.probes import ProbeSettings
from x0tta.guard.core import ogm
from x0tta.guard.core.detect import Observation, Route, originator_flood
from x0tta.guard.service import GuardService
from x0tta.lab.attacks import Injector
from x0tta.lab.core import attacks as atk
from x0tta.lab.core.topology import topology_from_data, veth_mac
from x0tta.probes import core

pytestmark = pytest.mark.integration

# the probes' kernel tests' fixtures: the eBPF objects built, a veth pair into a namespace, a bpffs
built_objects, net, pin = kernel.built_objects, kernel.net, kernel.pin

HONEST_ORIG = "02:00:00:00:0d:05"  # a far originator whose OGMs the honest neighbour forwards


def honest(orig: str, first: int, count: int, rate: float) -> atk.Attack:
    """The honest neighbour forwarding ``orig``'s OGMs (not an attack: the same pacing)."""
    frames = tuple(atk.ethernet(PEER_MAC, atk.ogm_iv(orig, first + i, tq=200, prev_sender=PEER_MAC))
                   for i in range(count))
    return atk.Attack("honest", frames, rate, PEER_MAC)


def _probes_view(probes, net):
    """The probes' last poll as the wiring reads it (``shared["probes"].last``), polled now."""
    return SimpleNamespace(last=SimpleNamespace(snapshot=probes.snapshot(), names={net.ifindex: net.host}))


async def test_injected_takeover_and_rogue_frames_are_seen_by_the_kernel_and_reported_by_the_guard(net, pin):
    """The honest neighbour (admitted) forwards an originator's OGMs; a rogue MAC no one admitted,
    spliced into the same link, claims that originator with its seqno jumped far ahead while the
    honest OGMs go on. The kernel records both streams and the rogue's frames; one look of the guard
    reports the takeover naming the rogue and, the rogue past its grace, its unadmitted frames."""
    rng = random.Random(1206)
    s = settings(net, pin)
    g = GuardSettings(mode="observe", detect=DetectSettings(window=5.0, unadmitted_grace=1.0, unadmitted_min_frames=3))
    gsvc = GuardService(settings=g)
    gctx = Ctx(s, g)
    probes = start(s)
    guard_maps(gsvc.kernel_maps)(probes.obj.maps)
    gsvc.guard.admit(PEER_MAC, "test")  # the honest neighbour authenticated
    shared: dict = {}
    gsvc.observe = guard_observer(shared)
    gsvc._register(gctx)
    takeover = atk.seqno_takeover(rng, atk.random_mac(rng), HONEST_ORIG, 5000, count=6, interval=0.1)
    rogue = takeover.sender
    try:
        with Injector(net.peer, netns=net.ns) as inj:
            first = inj.start(honest(HONEST_ORIG, 5000, 4, 20.0))
            inj.wait(first, 10)
            shared["probes"] = _probes_view(probes, net)
            assert gsvc.look(gctx, time.monotonic()) == []  # the honest stream alone: nothing
            going_on = inj.start(honest(HONEST_ORIG, 5004, 12, 8.0))  # 1.5 s of honest OGMs
            await until(lambda: going_on.sent >= 2)
            job = inj.start(takeover)  # 0.6 s, inside the honest run
            inj.wait(job, 10)
            inj.wait(going_on, 10)
        assert (job.sent, job.failed, going_on.sent) == (6, 0, 12)
        await until(lambda: (received(probes, net, PEER_MAC), received(probes, net, rogue)) == (16, 6))

        entries, bad = ogm.decode_ogm_entries(gsvc.guard.ogm_entries())
        assert bad == 0
        [entry] = [e for e in entries if e.orig == HONEST_ORIG]
        streams = {st.neigh: st for st in entry.streams}
        assert entry.jumps == 1 and set(streams) == {PEER_MAC, rogue}
        assert (streams[PEER_MAC].first_seqno, streams[PEER_MAC].seqno) == (5000, 5015)
        assert (streams[rogue].first_seqno, streams[rogue].seqno, streams[rogue].frames) == (
            takeover.details["first_seqno"], takeover.details["first_seqno"] + 5, 6)
        seen = probes.snapshot().neighbors
        denied = {k.mac: v.denied_packets for k, v in seen.items()}
        assert denied == {PEER_MAC: 0, rogue: 6}  # observe: passed, counted as not admitted

        first_heard = seen[core.NeighborKey(net.ifindex, rogue)].first_seen_ns / 1e9
        await until(lambda: time.monotonic() - first_heard > g.detect.unadmitted_grace + 0.2)
        shared["probes"] = _probes_view(probes, net)
        threats = gsvc.look(gctx, time.monotonic())
        by = {t["batman"]["detector"]: t for t in threats}
        assert set(by) == {"seqno_takeover", "unadmitted_frames"}, threats
        take = by["seqno_takeover"]["batman"]
        assert (take["originator"], take["macs"]) == (HONEST_ORIG, [rogue])
        assert take["evidence"]["new_from"] == [rogue] and take["evidence"]["old_from"] == [PEER_MAC]
        assert by["unadmitted_frames"]["batman"]["subject"] == rogue
        # the suite's scoring of these records: both attacks detected, by what they are about
        recs = [("host", 1.0, t) for t in threats]
        assert atk.score("seqno_takeover", 1206, 0.0, recs, takeover.about).detected
        assert atk.score("rogue_node", 1206, 0.0, recs, (rogue,)).detected
    finally:
        gsvc.kernel_maps(None)
        probes.close()


def test_an_injected_originator_flood_fills_the_ogm_map_and_the_detector_flags_its_neighbour(net, pin):
    """200 made-up originators through one sender at 2,000 frames a second: every one recorded in
    the kernel's ``ogms`` map with the sender as its neighbour, and ``originator_flood`` over the
    routes they would give (against a view from before the window that knew the honest originator)
    names the sender."""
    rng = random.Random(7)
    s = settings(net, pin)
    g = GuardSettings(mode="observe")
    gsvc = GuardService(settings=g)
    probes = start(s)
    guard_maps(gsvc.kernel_maps)(probes.obj.maps)
    flood = atk.originator_flood(rng, PEER_MAC, originators=200, rounds=1, rate=2000.0)
    try:
        with Injector(net.peer, netns=net.ns) as inj:
            assert inj.send(honest(HONEST_ORIG, 10, 1, 1.0).frames) == 1
            job = inj.wait(inj.start(flood), 30)
        assert job.sent + job.failed == 200 and job.first_at is not None
        until_sync(lambda: received(probes, net, PEER_MAC) == 1 + job.sent, 10)
        entries, bad = ogm.decode_ogm_entries(gsvc.guard.ogm_entries())
        assert bad == 0
        flooded = {e.orig for e in entries if e.orig != HONEST_ORIG}
        assert len(flooded) == job.sent >= 190  # a few may meet a full queue: counted as failed
        assert all(e.streams[0].neigh == PEER_MAC and e.streams[0].ifindex == net.ifindex for e in entries)

        d = g.detect
        now = time.monotonic()
        routes = tuple(Route(e.orig, e.streams[0].neigh, net.host, tq=255) for e in entries)
        before = Observation(now - d.window - 1, routes=(Route(HONEST_ORIG, PEER_MAC, net.host, tq=200),))
        [finding] = originator_flood([before, Observation(now, routes=routes)], d, now)
        assert finding.subject == PEER_MAC and finding.evidence["new_originators"] == job.sent
        assert finding.evidence["known_before"] == 1 and finding.interface == net.host
    finally:
        gsvc.kernel_maps(None)
        probes.close()


def _lab_check_module():
    """tests/lab/attack_checks.py, loaded by path as the lab's check steps load it."""
    spec = importlib.util.spec_from_file_location("attack_checks", ROOT / "tests" / "lab" / "attack_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lab_link():
    """A two-node lab topology on the host: the attacker's end of the link in a namespace named
    after its node (as in the guest), the victim's end here, both with the lab's MACs."""
    tag = os.getpid() % 10000
    att, vic = f"xa{tag}a", f"xa{tag}v"
    topo = topology_from_data({"name": "attack", "nodes": [att, vic], "links": [{"a": att, "b": vic}]})
    link = topo.link(f"{att}-{vic}")
    here, there = link.ifname(vic), link.ifname(att)
    sh(f"ip link del {here}", check=False)
    sh(f"ip netns del {att}", check=False)
    sh(f"ip netns add {att}")
    sh(f"ip link add {here} address {veth_mac(topo.node(vic), link)} type veth peer name {there} "
       f"address {veth_mac(topo.node(att), link)} netns {att}")
    sh(f"ip link set {here} up && ip -n {att} link set {there} up")
    until_sync(lambda: "NO-CARRIER" not in sh(f"ip link show {here}").stdout, 5)
    yield SimpleNamespace(topology=topo, att=att, vic=vic, here=here, there=there,
                          me=veth_mac(topo.node(att), link), victim_mac=veth_mac(topo.node(vic), link))
    sh(f"ip link del {here}", check=False)
    sh(f"ip netns del {att}", check=False)


def test_the_lab_attack_check_hears_the_target_aims_and_sends_from_the_attackers_namespace(lab_link, pin):
    """The guest-side check the bench runs (tests/lab/attack_checks.py ``attack``), here on the
    host: it hears the target's honest OGMs on the attacker's link, jumps their seqno, and sends
    from the attacker's namespace what the kernel on the victim's side records; a gateway hijack and
    a flood go out the same way. Returns what the bench scores by."""
    checks = _lab_check_module()
    lab = lab_link
    s = ProbeSettings(interfaces=(lab.here,), pin_path=str(pin))
    gsvc = GuardService(settings=GuardSettings(mode="observe"))
    probes = start(s)
    guard_maps(gsvc.kernel_maps)(probes.obj.maps)
    orig = checks.originator_of(lab, lab.vic)
    index = socket.if_nametoindex(lab.here)

    def from_attacker() -> int:
        seen = probes.snapshot().neighbors.get(core.NeighborKey(index, lab.me))
        return seen.rx_packets if seen else 0

    try:
        with Injector(lab.here) as inj:  # the target's honest OGMs, as the victim forwards them
            frames = tuple(atk.ethernet(lab.victim_mac, atk.ogm_iv(orig, 4000 + i)) for i in range(100))
            honest_job = inj.start(atk.Attack("honest", frames, 20.0, ""))
            took = checks.attack(lab, lab.att, "seqno_takeover", lab.vic, seed=3, target=lab.vic, pace=10)
            inj.stop(honest_job)
        assert took["sent"] == 10 and took["failed"] == 0 and took["first_wall"] <= time.time()
        assert took["about"] == [orig, lab.me] and 4000 <= took["details"]["honest_seqno"] < 4100
        jump = took["details"]["first_seqno"] - took["details"]["honest_seqno"]
        assert 1000 <= jump < 60_000
        until_sync(lambda: from_attacker() == 10, 10)
        entries, _ = ogm.decode_ogm_entries(gsvc.guard.ogm_entries())
        [entry] = [e for e in entries if e.orig == orig]
        [stream] = entry.streams  # the victim's own OGMs leave here: only the attacker's arrive
        assert (stream.neigh, stream.first_seqno, stream.frames) == (lab.me, took["details"]["first_seqno"], 10)

        gw = checks.attack(lab, lab.att, "gateway_hijack", lab.vic, seed=3, pace=10)
        flood = checks.attack(lab, lab.att, "originator_flood", lab.vic, seed=3, pace=5)
        assert (gw["sent"], flood["sent"] + flood["failed"]) == (20, 400)
        until_sync(lambda: from_attacker() == 30 + flood["sent"], 10)
        entries, _ = ogm.decode_ogm_entries(gsvc.guard.ogm_entries())
        origs = {e.orig for e in entries}
        assert gw["details"]["gateway"] in origs and len(origs) >= 2 + 190
        again = checks.attack(lab, lab.att, "gateway_hijack", lab.vic, seed=3, pace=10)
        assert again["details"] == gw["details"]  # the seed decides the attack
    finally:
        gsvc.kernel_maps(None)
        probes.close()


async def test_the_handshake_burst_reaches_a_link_local_listener_from_the_attackers_namespace(lab_link):
    """``handshake_burst`` from inside a namespace at a neighbour's scoped link-local address (the
    lab's case: the zone names an interface that exists only in the attacker's namespace): every
    attempt reaches the listener and is closed by it."""
    from x0tta.guard.core import link_local_from_mac
    from x0tta.lab.attacks import handshake_burst

    lab = lab_link
    here_ll = link_local_from_mac(lab.victim_mac, lab.here)
    here_addrs = f"ip -6 addr show dev {lab.here}"
    there_addrs = f"ip -n {lab.att} -6 addr show dev {lab.there}"
    await until(lambda: here_ll.split("%")[0] in sh(here_addrs).stdout and "tentative" not in sh(here_addrs).stdout
                and "fe80::" in sh(there_addrs).stdout and "tentative" not in sh(there_addrs).stdout, 10)  # DAD done
    accepted = []

    async def refuse(reader, writer):  # as the peer service does with what is not TLS: read, close
        accepted.append(writer.get_extra_info("peername")[0])
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(refuse, host=here_ll, port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        target = link_local_from_mac(lab.victim_mac, lab.there)  # the zone as the attacker names it
        counts = await asyncio.to_thread(handshake_burst, target, port, 5, "garbage", lab.att)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(counts.pop("first_wall"), float)
    assert counts == {"refused": 5, "not_refused": 0, "error": 0}
    assert len(accepted) == 5 and all(a.startswith("fe80::") for a in accepted)
