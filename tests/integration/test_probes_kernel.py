"""The probes on the host kernel: real tc hooks on a veth pair, real traffic, counters compared.

Topology per test: one veth end in the root namespace (probed, so the loader runs in this process)
and the other in a fresh network namespace; maps are pinned on a private bpffs mounted in tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import ROOT, require_root
from tests.kit.netns import sh
from tests.kit.wait import until, until_sync
from x0tta.agent.wiring import guard_maps, guard_observer
from x0tta.common.errors import CapabilityMissing
from x0tta.config.guard import DetectSettings, GuardSettings
from x0tta.config.probes import ProbeSettings
from x0tta.guard.core import ogm
from x0tta.guard.enforce import Guard
from x0tta.guard.service import GuardService
from x0tta.probes import core
from x0tta.probes.service import Probes, ProbesService, load

pytestmark = pytest.mark.integration

ETH_P_BATMAN = 0x4305
PEER_MAC = "02:00:00:00:77:02"
OTHER_MAC = "02:00:00:00:77:03"


@pytest.fixture(scope="module", autouse=True)
def built_objects():
    require_root()
    subprocess.run(["make", "-s", "-C", str(ROOT / "ebpf")], check=True)


class Net:
    def __init__(self, tag: str, n: int) -> None:
        self.host, self.peer, self.ns = f"xp{tag}h", f"xp{tag}p", f"xp{tag}ns"
        self.host_ip, self.peer_ip = f"10.213.{n}.1", f"10.213.{n}.2"

    def up(self) -> None:
        sh(f"ip netns add {self.ns}")
        sh(f"ip link add {self.host} type veth peer name {self.peer} netns {self.ns}")
        sh(f"ip addr add {self.host_ip}/24 dev {self.host} && ip link set {self.host} up")
        sh(
            f"ip -n {self.ns} link set {self.peer} address {PEER_MAC} && "
            f"ip -n {self.ns} addr add {self.peer_ip}/24 dev {self.peer} && "
            f"ip -n {self.ns} link set {self.peer} up && ip -n {self.ns} link set lo up"
        )
        deadline = time.monotonic() + 5
        while "NO-CARRIER" in sh(f"ip link show {self.host}").stdout and time.monotonic() < deadline:
            time.sleep(0.05)

    def down(self) -> None:
        sh(f"ip link del {self.host}", check=False)
        sh(f"ip netns del {self.ns}", check=False)

    @property
    def ifindex(self) -> int:
        return socket.if_nametoindex(self.host)

    def send_batman(self, count: int, src: str = PEER_MAC, size: int = 60) -> None:
        """Raw ethertype-0x4305 frames of ``size`` bytes (zeros after the header) from the namespace."""
        self.send_frames([(src, bytes(size - 14))] * count, gap=0)

    def send_frames(self, frames: list[tuple[str, bytes]], gap: float = 0.02) -> None:
        """Ethertype-0x4305 frames from the namespace through a packet socket, in order, ``gap``
        seconds apart: (source MAC, payload), broadcast, padded to Ethernet's 60 bytes."""
        hexed = [(src.replace(":", ""), payload.hex()) for src, payload in frames]
        code = (
            "import socket,time;"
            f"s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(({self.peer!r},0));"
            f"[(s.send(bytes.fromhex('ffffffffffff'+m+'4305'+p).ljust(60,bytes(1))),{gap} and time.sleep({gap}))"
            f" for m,p in {hexed!r}]"
        )
        subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code], check=True)


BATADV_COMPAT_VERSION = 15


def ogm_iv(orig: str, seqno: int, tvlv: bytes = b"", tq: int = 255, ttl: int = 50) -> bytes:
    """A BATMAN_IV OGM (struct batadv_ogm_packet, 24 bytes, big-endian fields) and its TVLVs."""
    mac = bytes.fromhex(orig.replace(":", ""))
    return struct.pack("!BBBBI6s6sBBH", 0x00, BATADV_COMPAT_VERSION, ttl, 0, seqno, mac, mac, 0, tq,
                       len(tvlv)) + tvlv


def ogm2(orig: str, seqno: int, tvlv: bytes = b"") -> bytes:
    """A BATMAN_V OGM2 (struct batadv_ogm2_packet, 20 bytes) and its TVLVs."""
    mac = bytes.fromhex(orig.replace(":", ""))
    return struct.pack("!BBBBI6sHI", 0x04, BATADV_COMPAT_VERSION, 50, 0, seqno, mac, len(tvlv), 10_000) + tvlv


_counter = [0]


@pytest.fixture
def net():
    _counter[0] += 1
    n = Net(f"{os.getpid() % 10000}{_counter[0]}", (os.getpid() + _counter[0]) % 250 + 1)
    n.down()
    n.up()
    yield n
    n.down()


@pytest.fixture
def pin(tmp_path: Path):
    mnt = tmp_path / "bpffs"
    mnt.mkdir()
    sh(f"mount -t bpf bpf {mnt}")
    yield mnt / "x0tta"
    sh(f"umount {mnt}", check=False)


def settings(net: Net, pin: Path, **kw) -> ProbeSettings:
    return ProbeSettings(interfaces=(net.host,), pin_path=str(pin), **kw)


def start(s: ProbeSettings) -> Probes:
    probes = Probes(load(s), s)
    attached, missing, failed = probes.reconcile()
    assert attached and not missing and not failed
    return probes


def flow(snap: core.Snapshot, net: Net, direction: str, src: str, dst: str, proto: int = 1) -> core.FlowStats:
    key = core.FlowKey(net.ifindex, direction, 4, proto, src, dst, 0, 0)
    return snap.flows[key]


def filters(dev: str, hook: str) -> list[str]:
    return [line for line in sh(f"tc filter show dev {dev} {hook}").stdout.splitlines() if "handle" in line]


def test_ping_counts_exactly_per_flow_and_direction(net, pin):
    probes = start(settings(net, pin))
    try:
        sh(f"ping -q -c 7 -i 0.05 -W 1 -I {net.host} {net.peer_ip}")
        snap = probes.snapshot()
        out = flow(snap, net, "egress", net.host_ip, net.peer_ip)
        back = flow(snap, net, "ingress", net.peer_ip, net.host_ip)
        # 56 bytes of ICMP data + 8 ICMP + 20 IPv4 + 14 Ethernet = 98 bytes per frame
        assert (out.packets, out.bytes, out.payload_bytes) == (7, 7 * 98, 7 * 64)
        assert (back.packets, back.bytes) == (7, 7 * 98)
        assert out.first_seen_ns <= out.last_seen_ns <= time.monotonic_ns()
    finally:
        probes.close()
    assert filters(net.host, "ingress") == [] and filters(net.host, "egress") == []


def test_batman_frames_counted_per_neighbour_and_guard_observes(net, pin):
    probes = start(settings(net, pin))
    try:
        net.send_batman(11)
        net.send_batman(4, src=OTHER_MAC, size=100)
        snap = probes.snapshot()
        peer = snap.neighbors[core.NeighborKey(net.ifindex, PEER_MAC)]
        other = snap.neighbors[core.NeighborKey(net.ifindex, OTHER_MAC)]
        assert (peer.rx_packets, peer.rx_bytes, peer.denied_packets) == (11, 11 * 60, 11)
        assert (other.rx_packets, other.rx_bytes) == (4, 400)
        assert snap.stats[core.Stat.GUARD_WOULD_DROP] == 15 and snap.stats[core.Stat.GUARD_DROPPED] == 0
        seen = {n.mac: n for n in core.neighbors_seen(snap)}
        assert 0 <= seen[PEER_MAC].age < 5 and abs(seen[PEER_MAC].last_rx - time.monotonic()) < 5
    finally:
        probes.close()


def _receiver(dev: str) -> socket.socket:
    """A packet socket for ethertype 0x4305 only: it sits after tc ingress, like batman-adv."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_BATMAN))
    s.bind((dev, ETH_P_BATMAN))
    s.settimeout(0.3)
    return s


def _drain(s: socket.socket) -> dict[str, int]:
    got: dict[str, int] = {}
    try:
        while True:
            frame = s.recv(2048)
            mac = frame[6:12].hex(":")
            got[mac] = got.get(mac, 0) + 1
    except TimeoutError:
        return got


def test_guard_enforce_drops_non_admitted_sources(net, pin):
    guard = Guard("enforce", (PEER_MAC,))
    probes = start(settings(net, pin))
    guard_maps(guard.attach)(probes.obj.maps)  # the agent's handover of the shared maps
    rx = _receiver(net.host)
    try:
        net.send_batman(5)
        net.send_batman(6, src=OTHER_MAC)
        assert _drain(rx) == {PEER_MAC: 5}
        snap = probes.snapshot()
        assert snap.stats[core.Stat.GUARD_DROPPED] == 6
        assert snap.neighbors[core.NeighborKey(net.ifindex, OTHER_MAC)].denied_packets == 6

        guard.admit(OTHER_MAC, "test")  # admission takes effect at once
        net.send_batman(3, src=OTHER_MAC)
        assert _drain(rx) == {OTHER_MAC: 3}
        guard.revoke(OTHER_MAC)
        guard.set_mode("observe")  # observe: passes, counted as would-be drops
        net.send_batman(2, src=OTHER_MAC)
        assert _drain(rx) == {OTHER_MAC: 2}
        snap = probes.snapshot()
        assert snap.stats[core.Stat.GUARD_DROPPED] == 6 and snap.stats[core.Stat.GUARD_WOULD_DROP] == 2
    finally:
        rx.close()
        probes.close()


ORIG_IV, ORIG_V, ORIG_FAR, ORIG_WIDE = (f"02:00:00:00:0c:0{n}" for n in range(1, 5))


def received(probes: Probes, net: Net, mac: str) -> int:
    """batman-adv frames the program saw arrive from ``mac``: a frame the kernel may still hold in
    its backlog after the sender exits is waited for, not missed."""
    seen = probes.snapshot().neighbors.get(core.NeighborKey(net.ifindex, mac))
    return seen.rx_packets if seen else 0


def ogm_entries(guard: Guard) -> dict[str, ogm.OgmEntry]:
    entries, bad = ogm.decode_ogm_entries(guard.ogm_entries())
    assert bad == 0
    return {e.orig: e for e in entries}


def test_ogm_sequence_numbers_are_recorded_per_originator_in_two_streams(net, pin):
    """Crafted OGMs through the real program: aggregates read to their end, a jump out of the
    window starts a second stream, the guard's drops are not recorded, other frames are not OGMs;
    the window is the one the guard writes."""
    guard = Guard("enforce", (PEER_MAC,))
    probes = start(settings(net, pin))
    guard_maps(guard.attach)(probes.obj.maps)
    try:
        before = time.monotonic_ns()
        net.send_frames([
            # an IV aggregate: two OGMs, the first with 6 bytes of TVLV between them
            (PEER_MAC, ogm_iv(ORIG_IV, 1000, tvlv=bytes(6)) + ogm_iv(ORIG_FAR, 70)),
            (PEER_MAC, ogm_iv(ORIG_IV, 1001)),
            (PEER_MAC, ogm2(ORIG_V, 0xFFFF_FFFE)),  # BATMAN_V, about to wrap
            (PEER_MAC, ogm2(ORIG_V, 1)),  # 3 later, across the wrap: the same stream
            (PEER_MAC, ogm_iv(ORIG_IV, 999)),  # a late copy: same stream, the newest stays 1001
            (PEER_MAC, ogm_iv(ORIG_IV, 900_000)),  # a jump: a second stream
            (PEER_MAC, ogm_iv(ORIG_IV, 1002)),  # the first goes on
            (OTHER_MAC, ogm_iv(ORIG_IV, 5_000_000)),  # dropped by the guard: batman-adv never sees it
            (PEER_MAC, bytes([0x40, BATADV_COMPAT_VERSION]) + bytes(30)),  # unicast: not an OGM
            (PEER_MAC, ogm_iv(ORIG_FAR, 71)[:1] + bytes([14]) + ogm_iv(ORIG_FAR, 71)[2:]),  # another version
        ])
        until_sync(lambda: (received(probes, net, PEER_MAC), received(probes, net, OTHER_MAC)) == (9, 1), 10)
        after = time.monotonic_ns()
        seen = ogm_entries(guard)
        assert sorted(seen) == [ORIG_IV, ORIG_V, ORIG_FAR]
        iv = seen[ORIG_IV]
        assert (iv.protocol, iv.jumps, len(iv.streams)) == ("BATMAN_IV", 1, 2)
        first, second = iv.streams
        assert (first.first_seqno, first.seqno, first.frames) == (1000, 1002, 4)
        assert (second.first_seqno, second.seqno, second.frames) == (900_000, 900_000, 1)
        assert first.neigh == second.neigh == PEER_MAC and first.ifindex == net.ifindex
        assert before <= first.first_ns < second.first_ns < first.last_ns <= after
        v = seen[ORIG_V]
        assert (v.protocol, v.jumps, [(s.first_seqno, s.seqno, s.frames) for s in v.streams]) == (
            "BATMAN_V", 0, [(0xFFFF_FFFE, 1, 2)])
        assert [(s.seqno, s.frames) for s in seen[ORIG_FAR].streams] == [(70, 1)]
        assert probes.snapshot().stats[core.Stat.OGM_UPDATE_ERR] == 0

        # the window is the guard's (seqno_margin, seqno_rate), written into the config map
        guard.set_ogm_window(1000, 4.0)
        net.send_frames([(PEER_MAC, ogm2(ORIG_WIDE, 10)), (PEER_MAC, ogm2(ORIG_WIDE, 510))])
        until_sync(lambda: received(probes, net, PEER_MAC) == 11, 10)
        assert [(s.first_seqno, s.seqno) for s in ogm_entries(guard)[ORIG_WIDE].streams] == [(10, 510)]
        guard.set_ogm_window(64, 4.0)
        net.send_frames([(PEER_MAC, ogm2(ORIG_WIDE, 1010))])
        until_sync(lambda: received(probes, net, PEER_MAC) == 12, 10)
        wide = ogm_entries(guard)[ORIG_WIDE]
        assert wide.jumps == 1 and [(s.first_seqno, s.seqno) for s in wide.streams] == [(10, 510), (1010, 1010)]
    finally:
        probes.close()


async def test_a_neighbour_sending_another_originators_ogms_at_full_quality_is_reported(net, pin):
    """The program keeps each originator's last OGM at TQ 248 or more (neighbour, TTL, TQ), not a
    forwarded one's, nor an OGM2's. The neighbour's own OGMs (its primary: TTL 50) at TQ 255 are
    no threat; a far originator's at 255 from it is ogm_full_claim about the neighbour, in one
    look."""
    s = settings(net, pin)
    gsvc = GuardService(settings=GuardSettings(mode="observe"))
    gctx = Ctx(s, gsvc.settings)
    probes = start(s)
    guard_maps(gsvc.kernel_maps)(probes.obj.maps)
    tables = guard_observer({})
    gsvc.observe = lambda now: replace(tables(now), hop_penalty=15)  # as the mesh subsystem hands it over
    gsvc._register(gctx)
    try:
        net.send_frames([(PEER_MAC, ogm_iv(PEER_MAC, 10 + i) + ogm_iv(ORIG_FAR, 300 + i, tq=240, ttl=49))
                         for i in range(3)] + [(PEER_MAC, ogm2(ORIG_V, 7))], gap=0.05)
        await until(lambda: received(probes, net, PEER_MAC) == 4)
        assert gsvc.look(gctx, time.monotonic()) == []
        [own] = gsvc.ogm_claims
        assert (own.orig, own.mac, own.interface, own.tq, own.ttl) == (PEER_MAC, PEER_MAC, net.host, 255, 50)
        before = time.monotonic()
        net.send_frames([(PEER_MAC, ogm_iv(ORIG_FAR, 303, tq=255, ttl=49))])
        await until(lambda: received(probes, net, PEER_MAC) == 5)
        [threat] = gsvc.look(gctx, time.monotonic())
        b = threat["batman"]
        assert (b["detector"], b["subject"], b["originator"], threat["in_iface"]) == (
            "ogm_full_claim", PEER_MAC, ORIG_FAR, net.host)
        assert threat["alert"]["signature_id"] == 1430511 and threat["alert"]["severity"] == 1
        [far] = b["evidence"]["claims"]
        assert (far["orig"], far["tq"], far["ttl"], b["evidence"]["own_ttl"]) == (ORIG_FAR, 255, 49, 50)
        assert before <= {c.orig: c for c in gsvc.ogm_claims}[ORIG_FAR].at <= time.monotonic()
    finally:
        probes.close()


async def test_the_guard_reports_a_seqno_takeover_from_the_kernels_ogm_map(net, pin):
    """An honest originator's OGMs, then a neighbour's OGMs for it with its seqno jumped ahead
    while the honest ones go on: one look of the guard, reading the map as the agent does, reports
    seqno_takeover with its threat record; the honest stream alone reported nothing before."""
    s = settings(net, pin)
    g = GuardSettings(mode="observe")
    gsvc = GuardService(settings=g)
    gctx = Ctx(s, g)
    probes = start(s)
    guard_maps(gsvc.kernel_maps)(probes.obj.maps)
    gsvc.observe = guard_observer({})  # no probes' poll or mesh tables: the OGM map is the guard's own
    gsvc._register(gctx)
    try:
        net.send_frames([(PEER_MAC, ogm_iv(ORIG_IV, 5000 + i)) for i in range(4)], gap=0.05)
        await until(lambda: received(probes, net, PEER_MAC) == 4)
        assert gsvc.look(gctx, time.monotonic()) == []
        assert gsvc.ogm_originators == 1 and gsvc.ogm_jumps == 0
        # a rogue next to us claims the originator, 100,000 seqnos ahead; the originator goes on
        net.send_frames([(OTHER_MAC, ogm_iv(ORIG_IV, 105_000)), (OTHER_MAC, ogm_iv(ORIG_IV, 105_001)),
                         (PEER_MAC, ogm_iv(ORIG_IV, 5004)), (OTHER_MAC, ogm_iv(ORIG_IV, 105_002)),
                         (PEER_MAC, ogm_iv(ORIG_IV, 5005))], gap=0.05)
        await until(lambda: (received(probes, net, PEER_MAC), received(probes, net, OTHER_MAC)) == (6, 3))
        [threat] = gsvc.look(gctx, time.monotonic())
        b = threat["batman"]
        assert (b["detector"], b["originator"], b["macs"], threat["in_iface"]) == (
            "seqno_takeover", ORIG_IV, [OTHER_MAC], net.host)
        assert threat["alert"]["signature_id"] == 1430505 and threat["alert"]["severity"] == 1
        ev = b["evidence"]
        assert (ev["old_seqno"], ev["new_seqno"], ev["new_from"]) == (5005, 105_002, [OTHER_MAC])
        assert gsvc.threats["seqno_takeover"] == 1 and gsvc.ogm_jumps == 1
        assert gsvc.look(gctx, time.monotonic()) == []  # the same threat: once per report_hold
        assert [r["batman"]["detector"] for r in gsvc.active_threats()] == ["seqno_takeover"]
        sample = gctx.registry.get_sample_value
        assert sample("x0tta_guard_threats_total", {"signature": "seqno_takeover"}) == 1
        assert sample("x0tta_guard_ogm_originators") == 1 and sample("x0tta_guard_ogm_undecodable_total") == 0
    finally:
        gsvc.kernel_maps(None)
        probes.close()


def test_restart_keeps_one_filter_per_hook_and_the_counters(net, pin):
    s = settings(net, pin)
    first = start(s)
    sh(f"ping -q -c 3 -i 0.05 -I {net.host} {net.peer_ip}")
    first.obj.close()  # the agent dies without detaching: its filters stay in the kernel
    assert len(filters(net.host, "ingress")) == 1
    second = start(s)
    try:
        second.reconcile()  # and again: still one
        for hook in ("ingress", "egress"):
            assert len(filters(net.host, hook)) == 1, sh(f"tc filter show dev {net.host} {hook}").stdout
        sh(f"ping -q -c 4 -i 0.05 -I {net.host} {net.peer_ip}")
        snap = second.snapshot()
        assert flow(snap, net, "egress", net.host_ip, net.peer_ip).packets == 7
        assert second.obj.reset_maps == []
    finally:
        second.close()
    # a resized flow map cannot be reused: it starts empty, and the loader says so
    third = start(settings(net, pin, flow_map_size=128))
    try:
        assert third.obj.reset_maps == [core.MAP_FLOWS]
        assert third.snapshot().flows == {}
    finally:
        third.close()


def _iperf3(net: Net, args: str) -> dict:
    server = subprocess.Popen(["ip", "netns", "exec", net.ns, "iperf3", "-s", "-1", "-B", net.peer_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(50):
            time.sleep(0.05)
            if "5201" in sh(f"ip netns exec {net.ns} ss -ltn").stdout:
                break
        result = json.loads(sh(f"iperf3 -c {net.peer_ip} -B {net.host_ip} -J {args}").stdout)
        server.wait(5)
        return result
    finally:
        server.kill()
        server.wait()


def _to_server(snap: core.Snapshot, proto: int) -> int:
    return sum(
        v.payload_bytes
        for k, v in snap.flows.items()
        if k.direction == "egress" and k.proto == proto and k.dport == 5201
    )


def test_iperf3_bytes_within_one_percent(net, pin):
    """UDP: every datagram iperf3 sends passes the egress hook, so its byte count is the reference.
    TCP: iperf3 counts what it wrote (sent) and what the server read before the test ended
    (received); the bytes on the wire lie between the two, and the count must too."""
    probes = start(settings(net, pin))
    try:
        udp = _iperf3(net, "-u -b 400M -l 1400 -n 20M")["end"]["sum"]
        counted = _to_server(probes.snapshot(), 17)
        assert abs(counted - udp["bytes"]) / udp["bytes"] < 0.01, (counted, udp)

        tcp = _iperf3(net, "-n 40M")["end"]
        time.sleep(0.2)  # let the last segments leave the send buffer
        counted = _to_server(probes.snapshot(), 6)
        sent, received = tcp["sum_sent"]["bytes"], tcp["sum_received"]["bytes"]
        assert received * 0.99 <= counted <= sent * 1.01, (counted, sent, received)
    finally:
        probes.close()


class Ctx:
    """The parts of the agent's context the service uses, real where it matters (registry)."""

    def __init__(self, s: ProbeSettings, g: GuardSettings | None = None, registry=None) -> None:
        from x0tta.config.schema import AgentSettings

        self._settings = AgentSettings(probes=s, guard=g or GuardSettings())
        self.registry = registry or CollectorRegistry()
        self.commands: dict = {}
        self.conditions: tuple = ()
        self.health = self
        self.admin = self
        self.log = self
        self.node_id = "n1"

    @property
    def settings(self):
        return self._settings

    def set(self, *conditions):
        self.conditions = conditions

    def ok(self):
        self.set()

    def register(self, command, handler):
        self.commands[command] = handler

    def info(self, *a, **k):
        pass

    warning = error = info


async def test_services_export_metrics_and_admin_commands(net, pin):
    """The probes and the guard as the agent wires them: the guard enforces through the maps the
    probes load and hand over; each subsystem registers its own admin commands and metrics."""
    from dataclasses import replace

    from x0tta.config.schema import AgentSettings

    s = settings(net, pin, poll_interval=0.1)
    # detection by hand (look) below, not by the guard's own loop
    g = GuardSettings(mode="enforce", detect=DetectSettings(enabled=False, unadmitted_grace=0, unadmitted_min_frames=2))
    registry = CollectorRegistry()
    ctx, gctx = Ctx(s, g, registry), Ctx(s, g, registry)
    gsvc = GuardService(settings=g)
    svc = ProbesService(settings=s)
    svc.share_maps(guard_maps(gsvc.kernel_maps))
    gtask = asyncio.create_task(gsvc.run(gctx))
    task = asyncio.create_task(svc.run(ctx))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if svc.last is not None:
                break
        assert sorted(gctx.commands) == ["guard.admit", "guard.list", "guard.mode", "guard.release", "guard.revoke",
                                         "guard.threats"]
        assert sorted(ctx.commands) == ["probes.flows", "probes.neighbors"]
        assert await gctx.commands["guard.admit"]({"mac": PEER_MAC}) == {"mac": PEER_MAC, "changed": True}
        await asyncio.to_thread(net.send_batman, 3)
        await asyncio.to_thread(net.send_batman, 2, OTHER_MAC)
        await asyncio.to_thread(sh, f"ping -q -c 2 -i 0.05 -I {net.host} {net.peer_ip}")
        await svc.refresh()
        value = registry.get_sample_value
        assert value("x0tta_probes_up") == 1.0
        assert value("x0tta_probes_neighbor_rx_packets_total", {"interface": net.host, "mac": PEER_MAC}) == 3
        assert value("x0tta_probes_neighbor_denied_packets_total", {"interface": net.host, "mac": OTHER_MAC}) == 2
        assert value("x0tta_probes_guard_dropped_total") == 2
        assert value("x0tta_probes_attached", {"interface": net.host}) == 1
        assert value("x0tta_guard_enforcing") == 1 and value("x0tta_guard_in_kernel") == 1
        assert value("x0tta_guard_admitted", {"origin": "dynamic"}) == 1
        assert svc.last_heard(PEER_MAC) is not None and svc.last_heard("02:00:00:00:00:99") is None
        flows = await ctx.commands["probes.flows"]({"limit": 5})
        assert any(f["proto"] == "icmp" and f["packets"] == 2 and f["dst"] == net.peer_ip for f in flows)
        neigh = await ctx.commands["probes.neighbors"]({})
        assert {n["mac"] for n in neigh} == {PEER_MAC, OTHER_MAC}
        listing = await gctx.commands["guard.list"]({})
        assert listing["mode"] == "enforce" and listing["enforced_in_kernel"]
        assert ctx.conditions == () and gctx.conditions == ()
        # the guard's detectors, fed as the agent wires them, see the frames the kernel dropped
        gsvc.observe = guard_observer({"probes": svc})
        [threat] = gsvc.look(gctx, time.monotonic())
        assert threat["batman"]["macs"] == [OTHER_MAC] and threat["in_iface"] == net.host
        assert threat["alert"]["action"] == "blocked" and threat["batman"]["evidence"]["frames"] == 2
        assert value("x0tta_guard_threats_total", {"signature": "unadmitted_frames"}) == 1

        # reload: guard mode and static MACs apply in place; map sizes need a restart of the probes
        new = AgentSettings(probes=s, guard=replace(g, mode="observe", admitted_macs=(OTHER_MAC,)))
        assert await gsvc.reload(gctx, new) is True and await svc.reload(ctx, new) is True
        assert gsvc.guard.mode == "observe" and gsvc.guard.is_admitted(OTHER_MAC) and gsvc.guard.is_admitted(PEER_MAC)
        assert svc._probes.obj.maps[core.MAP_CONFIG].lookup(b"\0\0\0\0")[:4] == b"\0\0\0\0"
        assert await svc.reload(ctx, replace(new, probes=replace(s, flow_map_size=128))) is False
        assert await svc.reload(ctx, replace(new, guard=replace(new.guard, admitted_map_size=64))) is False
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):  # a stop that hangs fails the test instead
                await task
    assert filters(net.host, "ingress") == []
    assert registry.get_sample_value("x0tta_probes_up") == 0.0
    # the maps went with the probes: the guard keeps its admissions and says it enforces nothing
    await asyncio.sleep(0.01)
    assert [c.code for c in gctx.conditions] == ["guard_not_enforced"]
    assert registry.get_sample_value("x0tta_guard_in_kernel") == 0.0 and gsvc.guard.is_admitted(PEER_MAC)
    gtask.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gtask


async def test_admission_holds_by_default_once_the_node_has_an_identity(net, pin):
    """The default ``[guard] mode = "auto"`` on the real eBPF guard, the guard subsystem running its
    own loop: nothing dropped before this node has an identity nor during ``enforce_grace``; then an
    unbound MAC's frames are dropped and a MAC bound by an authenticated session (the peer
    subsystem's change, as the wiring hands it over) passes; quarantined, its frames are dropped and
    its sessions refused until the TTL releases it, and it is admitted again when it re-authenticates."""
    from x0tta.guard.core import link_local_from_mac
    from x0tta.guard.enforce import PeerAdmission
    from x0tta.peer.service import PeerChange

    s = settings(net, pin)
    g = GuardSettings(enforce_grace=3.0, quarantine_share=1.0, detect=DetectSettings(enabled=False))
    assert g.mode == "auto"  # the default under test
    gctx = Ctx(s, g)
    gsvc, probes = GuardService(settings=g), ProbesService(settings=s)
    ready = [False]
    gsvc.identity_ready = lambda: ready[0]  # the wiring's: the identity subsystem has an SVID
    probes.share_maps(guard_maps(gsvc.kernel_maps))
    admission = PeerAdmission(gsvc.guard)
    host = link_local_from_mac(PEER_MAC, net.host)  # the session's address: the MAC on that link
    tasks = [asyncio.create_task(gsvc.run(gctx)), asyncio.create_task(probes.run(Ctx(s, g)))]
    rx = _receiver(net.host)

    async def heard(src: str, count: int = 3) -> int:
        await asyncio.to_thread(net.send_batman, count, src)
        return (await asyncio.to_thread(_drain, rx)).get(src, 0)

    def mode_in_kernel() -> bytes:
        return probes._probes.obj.maps[core.MAP_CONFIG].lookup(b"\0\0\0\0")[:4]

    try:
        await until(lambda: gsvc.guard.bound)
        assert await heard(OTHER_MAC) == 3 and gsvc.guard.mode == "observe"  # no identity: nothing dropped
        ready[0] = True
        await asyncio.sleep(0.2)
        assert gsvc.guard.mode == "observe" and await heard(OTHER_MAC) == 3  # the grace: still observing
        await until(lambda: gsvc.guard.mode == "enforce", timeout=15)
        assert mode_in_kernel() == (1).to_bytes(4, "little")
        assert await heard(OTHER_MAC) == 0  # unbound: dropped
        admission(PeerChange(True, host, "spiffe://mesh.test/node/p", "out"))
        assert await heard(PEER_MAC) == 3  # bound: passes
        listing = await gctx.commands["guard.list"]({})
        assert [(b["mac"], b["spiffe_id"], b["interface"]) for b in listing["bindings"]] == [
            (PEER_MAC, "spiffe://mesh.test/node/p", net.host)]
        assert listing["configured_mode"] == "auto" and listing["mode"] == "enforce"

        assert gsvc.quarantine(PEER_MAC, 1.0, "test") == ""
        assert await heard(PEER_MAC) == 0  # quarantined: dropped
        assert admission.refusal(host, "spiffe://mesh.test/node/p")  # its sessions refused
        await until(lambda: not gsvc.guard.bindings.quarantined, timeout=5)  # the TTL released it
        admission(PeerChange(True, host, "spiffe://mesh.test/node/p", "out"))  # it re-authenticates
        assert await heard(PEER_MAC) == 3
        stats = probes._probes.snapshot().stats  # the kernel's own count of what the guard did
        assert stats[core.Stat.GUARD_WOULD_DROP] == 6 and stats[core.Stat.GUARD_DROPPED] == 6
    finally:
        rx.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(10):
                    await task


def test_degrades_without_objects_or_privileges(tmp_path, pin):
    with pytest.raises(CapabilityMissing) as info:
        load(ProbeSettings(object_path=str(tmp_path / "none.o"), pin_path=str(pin)))
    assert info.value.code == "bpf_objects_missing"
    code = (
        "from x0tta.probes.service import load; from x0tta.config.probes import ProbeSettings\n"
        "from x0tta.common.errors import CapabilityMissing\n"
        f"try: load(ProbeSettings(pin_path={str(tmp_path / 'bpf2' / 'x0tta')!r}))\n"
        "except CapabilityMissing as e: print(e.code)\n"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "bpf_permission_denied", out.stderr


def test_cap_bpf_and_cap_net_admin_are_enough(net):
    """As an unprivileged user with only CAP_BPF and CAP_NET_ADMIN (no CAP_SYS_ADMIN, no
    CAP_PERFMON): load, attach, read. The bpffs is mounted for it, as systemd would."""
    mnt = Path(tempfile.mkdtemp(prefix="x0tta-caps-"))  # tmp_path is not reachable for nobody
    mnt.chmod(0o755)
    sh(f"mount -t bpf -o mode=0777 bpf {mnt}")
    code = (
        "from x0tta.probes.service import Probes, load; from x0tta.config.probes import ProbeSettings\n"
        f"s = ProbeSettings(interfaces=({net.host!r},), pin_path={str(mnt / 'x0tta')!r})\n"
        "p = Probes(load(s), s); print(p.reconcile()[0]); p.snapshot(); p.close()\n"
    )
    caps = "-all,+bpf,+net_admin"
    try:
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
             f"--ambient-caps={caps}", sys.executable, "-c", code],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
    finally:
        sh(f"umount {mnt}", check=False)
        mnt.rmdir()
    assert out.stdout.strip() == f"[{net.host!r}]", out.stderr[-3000:]


# The neighbour over the veth: a heal prober whose probes stop on "quiet" (no bye: a starved agent
# says nothing), and batman-adv frames every 40 ms from its MAC (stopped by "nobatman") and from
# another neighbour's (never stopped), as batman-adv on a radio with two neighbours would send them.
NEIGHBOUR = """
import asyncio, socket, sys, threading, time
from x0tta.heal.core.liveness import Tracker
from x0tta.heal.liveness import Prober
dev, port, peer, other = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
state = {"probes": True, "peer_frames": True, "end": False}

def frame(mac):
    return bytes.fromhex("ffffffffffff" + mac.replace(":", "") + "4305") + bytes(46)

def frames():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((dev, 0))
    while not state["end"]:
        if state["peer_frames"]:
            s.send(frame(peer))
        s.send(frame(other))
        time.sleep(0.04)

def commands():
    for line in sys.stdin:
        if line.strip() == "quiet":
            state["probes"] = False
        elif line.strip() == "nobatman":
            state["peer_frames"] = False
    state["end"] = True

async def main():
    p = Prober(Tracker(0.1, 20, 60.0), port, 0.1)
    send_all = p.send_all
    p.send_all = lambda now=None: send_all(now) if state["probes"] else None
    p.send_bye = lambda: None
    threading.Thread(target=frames, daemon=True).start()
    threading.Thread(target=commands, daemon=True).start()
    task = asyncio.create_task(p.run(lambda: [dev]))
    while not state["end"]:
        await asyncio.sleep(0.05)
    task.cancel()

asyncio.run(main())
"""


async def test_heal_corroborates_a_late_neighbour_with_its_own_batman_frames(net, pin):
    """The heal prober, handed ``ProbesService.last_rx`` as the wiring does: while batman-adv
    frames keep coming from a neighbour whose probes stopped, its silence is not loss; once they
    stop it is, although another neighbour's frames still arrive on the same interface (which the
    interface counter would have taken for the link being alive)."""
    from x0tta.heal.core.liveness import TRAFFIC_HOLD, Tracker
    from x0tta.heal.liveness import BY_NEIGHBOUR, Prober, read_rx_packets

    sh(f"ip netns exec {net.ns} sysctl -q -w net.ipv6.icmp.echo_ignore_all=1")  # no kernel echo over there
    s = settings(net, pin, poll_interval=0.5)
    svc = ProbesService(settings=s)
    task = asyncio.create_task(svc.run(Ctx(s)))
    me = Prober(Tracker(0.1, 20, 60.0), 4319, 0.1, neighbour_rx=svc.last_rx)
    mine = asyncio.create_task(me.run(lambda: [net.host]))
    neighbour = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", net.ns, sys.executable, "-c", NEIGHBOUR, net.peer, "4319", PEER_MAC, OTHER_MAC,
        stdin=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    key, index = (net.host, PEER_MAC), net.ifindex

    def run_of_peer() -> int:
        return max((s.lost_run for s in me.stats() if s.peer == PEER_MAC), default=-1)

    async def watch(seconds: float) -> list[int]:
        runs, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            runs.append(run_of_peer())
            await asyncio.sleep(0.01)
        return runs

    async def tell(command: str) -> None:
        assert neighbour.stdin is not None
        neighbour.stdin.write(command.encode() + b"\n")
        await neighbour.stdin.drain()

    try:
        for _ in range(200):  # the fe80:: addresses leave DAD, the object loads
            if key in me.tracker.peers and svc.last_rx(index, PEER_MAC) is not None:
                break
            await asyncio.sleep(0.05)
        assert key in me.tracker.peers, "no probe from the neighbour"
        await asyncio.sleep(1.0)
        healthy = await watch(0.5)
        before = svc.last_rx(index, PEER_MAC)

        await tell("quiet")  # its agent stops sending probes; its batman-adv frames go on
        settling = await watch(0.6)
        quiet = await watch(1.5)
        during = svc.last_rx(index, PEER_MAC)
        assert before is not None and during is not None and during > before + 1.5, (before, during)
        assert me.corroboration == BY_NEIGHBOUR

        await tell("nobatman")  # now its frames stop too; the other neighbour's do not
        t0, counted = time.monotonic(), read_rx_packets(net.host) or 0
        found = None
        while found is None and time.monotonic() - t0 < TRAFFIC_HOLD + 3.0:
            if run_of_peer() >= 3:
                found = time.monotonic() - t0
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        last = svc.last_rx(index, PEER_MAC)
        await asyncio.sleep(0.5)
        still = svc.last_rx(index, PEER_MAC)
        others = (read_rx_packets(net.host) or 0) - counted
        print("neighbour rx figures:", {"healthy_worst": max(healthy), "settling_worst": max(settling),
                                        "quiet_worst": max(quiet), "detected_after": found, "other_frames": others})
        assert max(healthy) == 0 and max(quiet) == 0, (healthy, quiet)
        # counted once its frames have paused for TRAFFIC_HOLD, then like probes (3 lost: 0.35 s)
        assert found is not None and TRAFFIC_HOLD < found < TRAFFIC_HOLD + 1.0, found
        assert last == still and last is not None and last < t0 + 0.1  # the figure stopped moving
        assert others >= 10  # the interface kept receiving: its counter would have hidden the loss
        assert run_of_peer() >= 5
    finally:
        if neighbour.stdin is not None:
            neighbour.stdin.close()  # the end of its commands: it stops
        async with asyncio.timeout(10):
            await neighbour.wait()
        mine.cancel()
        task.cancel()
        for t in (mine, task):
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(10):
                    await t


def test_agent_process_with_probes_admin_and_metrics(net, pin, agent_config):
    """The real agent (wiring, supervisor, admin socket, /metrics) with the probes on a veth and the
    guard enforcing through their maps; restarted on a config with the guard's deprecated keys."""
    from tests.integration.test_agent_process import start_agent
    from x0tta.admin.client import call
    from x0tta.config.loader import load_settings

    cfg = agent_config(
        f'[probes]\ninterfaces = ["{net.host}"]\npin_path = "{pin}"\npoll_interval = 0.2\n[guard]\nmode = "enforce"\n'
    )
    settings = load_settings(cfg, {})

    def loaded() -> dict:
        deadline = time.monotonic() + 20
        listing: dict = {}
        while time.monotonic() < deadline and not listing.get("enforced_in_kernel"):
            time.sleep(0.2)
            try:
                listing = call(settings.admin_socket, "guard.list", {}, timeout=2)
            except Exception:  # not up yet
                listing = {}
        assert listing.get("enforced_in_kernel"), listing
        return listing

    proc = start_agent(cfg)
    try:
        loaded()
        assert call(settings.admin_socket, "guard.admit", {"mac": PEER_MAC})["changed"] is True
        net.send_batman(4)
        net.send_batman(3, src=OTHER_MAC)
        time.sleep(0.6)
        neigh = {n["mac"]: n for n in call(settings.admin_socket, "probes.neighbors", {})}
        assert neigh[PEER_MAC]["rx_packets"] == 4 and neigh[OTHER_MAC]["denied_packets"] == 3
        body = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics.port}/metrics", timeout=5).read()
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert check.returncode == 0, check
        assert b"x0tta_probes_guard_dropped_total 3.0" in body
        assert b"x0tta_guard_enforcing 1.0" in body and b"x0tta_guard_in_kernel 1.0" in body
        by = {h["subsystem"]: h for h in call(settings.admin_socket, "status", {})["subsystems"]}
        assert by["guard"]["state"] == "ok" and by["probes"]["state"] == "ok", by
        assert len(filters(net.host, "ingress")) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert "probes_detached" in out + err
    assert filters(net.host, "ingress") == [] and filters(net.host, "egress") == []

    # restart: the pinned maps bring back the counters and the dynamic admission. The config now
    # sets the mode under its old name, [probes] guard_mode: taken as [guard] mode, and logged.
    old = agent_config(
        f'[probes]\ninterfaces = ["{net.host}"]\npin_path = "{pin}"\npoll_interval = 0.2\nguard_mode = "enforce"\n',
        name="old.toml",
    )
    proc = start_agent(old)
    try:
        listing = loaded()
        assert listing["mode"] == "enforce"
        assert {"mac": PEER_MAC, "origin": "dynamic"}.items() <= listing["admitted"][0].items()
        net.send_batman(1)
        time.sleep(0.6)
        neigh = {n["mac"]: n for n in call(settings.admin_socket, "probes.neighbors", {})}
        assert neigh[PEER_MAC]["rx_packets"] == 5 and neigh[OTHER_MAC]["denied_packets"] == 3
        for hook in ("ingress", "egress"):
            assert len(filters(net.host, hook)) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    warned = [json.loads(line) for line in out.splitlines() if '"config_key_deprecated"' in line]
    assert [(w["old"], w["new"]) for w in warned] == [("probes.guard_mode", "guard.mode")], out[-2000:]
