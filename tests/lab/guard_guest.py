"""The guard lab's check (a ``check`` step of the lab, ``x0tta.lab``, in the namespaces of its nodes
a, b, c - see tests/lab/test_guard_lab.py): three batman-adv nodes in a triangle; a and b run the
probes with the admission guard, c is not admitted. Writes the observations to ``OUT/guard.json``
and returns them.

Per mode (enforce, then observe) the mesh is built from scratch, and the guard is attached to the
hard interfaces of a and b *before* batman-adv is enabled on them, so that no OGM of c can slip
through before the guard is in place. The originator tables of a and b are then read with batctl
every 100 ms for the phase's duration: the report lists every time c's originators showed up.

One process drives every node: it enters a node's network namespace (the lab's ``netns``: setns,
this thread only) to load and attach that node's probes, so tc attaches to that namespace's
interfaces.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from x0tta.agent.wiring import guard_maps
from x0tta.config.probes import ProbeSettings
from x0tta.guard.enforce import Guard
from x0tta.lab.netns import netns, run
from x0tta.probes import core
from x0tta.probes.service import Probes, load

NODES = ("a", "b", "c")
LINKS = (("a", "b"), ("b", "c"), ("a", "c"))
GUARDED = ("a", "b")
PHASE_S = 6.0
ENFORCE_S = 120.0  # a node without an SVID next to an enforcing mesh for 2 minutes (issue 12's acceptance)
OGM_MS = 250


def mac(node: str, peer: str) -> str:
    return f"02:00:00:00:{NODES.index(node) + 1:02x}:{NODES.index(peer) + 1:02x}"


def ifname(node: str, peer: str) -> str:
    return f"{node}-{peer}"


def build_links() -> None:
    """The triangle's veth pairs, in the nodes' namespaces (the lab's, or new ones after a teardown);
    the lab's own bat0, which has no hard interface here, makes way for the one enable_batman builds."""
    for n in NODES:
        if Path("/run/netns", n).exists():
            run(n, "ip", "link", "del", "bat0", check=False)
        else:
            run(None, "ip", "netns", "add", n)
    for x, y in LINKS:
        run(None, "ip", "link", "add", ifname(x, y), "address", mac(x, y), "netns", x, "mtu", "1560", "type", "veth",
            "peer", "name", ifname(y, x), "address", mac(y, x), "netns", y, "mtu", "1560")  # fmt: skip


def enable_batman() -> None:
    for n in NODES:
        ifs = [ifname(n, p) for p in NODES if p != n]
        cmds = ["link set lo up", f"link add bat0 address 02:00:00:00:{NODES.index(n) + 1:02x}:00 type batadv"]
        cmds += [f"link set {i} master bat0" for i in ifs] + [f"link set {i} up" for i in ifs] + ["link set bat0 up"]
        subprocess.run(["ip", "-n", n, "-batch", "-"], input="\n".join(cmds) + "\n", text=True, check=True)
        run(n, "batctl", "meshif", "bat0", "orig_interval", str(OGM_MS))
        run(n, "ip", "addr", "add", f"10.99.0.{NODES.index(n) + 1}/24", "dev", "bat0")
        # Static ARP entries: in this 6.1 UML guest bat0 drops the broadcast ARP requests (its TX
        # dropped counter rises, 2026-11), while unicast flows; the probes count unicast IP here.
        for p in NODES:
            if p != n:
                i = NODES.index(p) + 1
                run(n, "ip", "neigh", "add", f"10.99.0.{i}", "lladdr", f"02:00:00:00:{i:02x}:00", "dev", "bat0")


def teardown() -> None:
    for n in NODES:
        run(None, "ip", "netns", "del", n, check=False)


def originators(node: str) -> set[str]:
    out = run(node, "batctl", "meshif", "bat0", "oj", check=False).stdout
    try:
        return {row["orig_address"] for row in json.loads(out or "[]")}
    except ValueError:
        return set()


def neighbors(node: str) -> set[str]:
    out = run(node, "batctl", "meshif", "bat0", "nj", check=False).stdout
    try:
        return {row["neigh_address"] for row in json.loads(out or "[]")}
    except ValueError:
        return set()


def traffic(probes: Probes) -> dict:
    """Ping and iperf3 (UDP) from a to b over bat0; what a's bat0 egress hook counted for them."""
    with netns("a"):
        bat0 = socket.if_nametoindex("bat0")
    ping = subprocess.run(["ip", "netns", "exec", "a", "ping", "-q", "-c", "5", "-i", "0.2", "-W", "2", "10.99.0.2"],
                          capture_output=True, text=True, check=False).stdout  # fmt: skip
    server = subprocess.Popen(["ip", "netns", "exec", "b", "iperf3", "-s", "-1", "-B", "10.99.0.2"],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)
    client = subprocess.run(
        ["ip", "netns", "exec", "a", "iperf3", "-c", "10.99.0.2", "-u", "-b", "20M", "-l", "1200", "-n", "3M", "-J"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    out = client.stdout
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    snap = probes.snapshot()
    icmp = core.FlowKey(bat0, "egress", 4, 1, "10.99.0.1", "10.99.0.2", 0, 0)
    udp = [v.payload_bytes for k, v in snap.flows.items() if k.ifindex == bat0 and k.dport == 5201 and k.proto == 17]
    return {
        "ping": ping.strip().splitlines()[-2:],
        "icmp_packets": snap.flows[icmp].packets if icmp in snap.flows else None,
        "icmp_bytes": snap.flows[icmp].bytes if icmp in snap.flows else None,
        "flows": [f"{k} {v.packets}" for k, v in snap.flows.items()][:20],
        "iperf3_bytes": json.loads(out)["end"].get("sum", {}).get("bytes") if out else None,
        "iperf3_error": None if client.returncode == 0 else (out[-800:] + client.stderr[-800:]),
        "udp_payload_counted": sum(udp),
    }


def phase(mode: str, phase_s: float = PHASE_S) -> dict:
    build_links()
    c_macs = {mac("c", p) for p in NODES if p != "c"} | {"02:00:00:00:03:00"}
    admitted = tuple(mac(x, y) for x, y in LINKS for x, y in ((x, y), (y, x)) if x != "c")
    probes: dict[str, Probes] = {}
    for n in GUARDED:
        ifs = tuple(ifname(n, p) for p in NODES if p != n)
        s = ProbeSettings(interfaces=(*ifs, "bat0"), pin_path=f"/run/bpf-{mode}-{n}/x0tta")
        with netns(n):
            p = Probes(load(s), s)
            attached, missing, failed = p.reconcile()
            assert attached == sorted(ifs) and missing == ["bat0"] and not failed, (attached, missing, failed)
            guard = Guard(mode, admitted)
            guard_maps(guard.attach)(p.obj.maps)  # the agent's handover of the shared maps
        probes[n] = p
    enable_batman()
    for n, p in probes.items():
        with netns(n):
            assert "bat0" in p.reconcile()[0]  # attached as soon as it appears
    t0 = time.monotonic()
    seen_c: list[dict] = []
    final: dict[str, list[str]] = {}
    while time.monotonic() - t0 < phase_s:
        for n in GUARDED:
            origs = originators(n)
            final[n] = sorted(origs)
            if origs & c_macs:
                seen_c.append({"t": round(time.monotonic() - t0, 2), "node": n, "c": sorted(origs & c_macs)})
        time.sleep(0.1)
    result = {"mode": mode, "seconds": round(time.monotonic() - t0, 1), "originators": final, "c_seen": seen_c,
              "c_hears": sorted(neighbors("c"))}
    if mode == "enforce":
        result["traffic"] = traffic(probes["a"])
    for n, p in probes.items():
        snap = p.snapshot()
        result[f"{n}_dropped"] = snap.stats[core.Stat.GUARD_DROPPED]
        result[f"{n}_would_drop"] = snap.stats[core.Stat.GUARD_WOULD_DROP]
        result[f"{n}_denied_by_mac"] = {
            k.mac: v.denied_packets for k, v in snap.neighbors.items() if v.denied_packets
        }
        with netns(n):
            p.close()
    teardown()
    return result


def guard(lab: Any, enforce_s: float = ENFORCE_S, observe_s: float = PHASE_S) -> list[dict]:
    """Both modes, one after the other, each on a mesh built from scratch (the lab loaded cls_bpf
    and sch_ingress): enforce for ``enforce_s`` (c's OGMs every 250 ms all that time), observe for
    ``observe_s`` (c is in the tables within a few OGMs)."""
    if tuple(n.name for n in lab.topology.nodes) != NODES:
        raise ValueError(f"the guard lab needs the nodes {NODES}, got {lab.topology.nodes}")
    results = [phase("enforce", enforce_s), phase("observe", observe_s)]
    (Path(lab.out) / "guard.json").write_text(json.dumps(results, indent=1))
    return results
