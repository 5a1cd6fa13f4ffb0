"""Guest-side checks of the attack suite (tests/bench/bench_attacks.py): an attacker on a mesh link.

The attacker sits on the link between ``node`` (a compromised node: its batman-adv runs, its agent
authenticated on the link, so its MAC is admitted and its link to the victim bidirectional, which
BATMAN_IV needs before it takes OGMs of other originators through it) and ``victim``. It sends
from ``node``'s end of that link, as a device spliced into the cable would (x0tta/lab/attacks.py),
the frames of one attack kind of x0tta/lab/core/attacks.py, seeded; or, for the handshake burst,
the peer transport's refused clients against the victim's peer port.

Each check returns what went out and when the first frame did (wall clock, which the bench puts on
the run's timeline), and what a detection must name to count (``about``).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from x0tta.guard.core import link_local_from_mac
from x0tta.lab.attacks import Injector, handshake_burst
from x0tta.lab.core import attacks as atk
from x0tta.lab.core.net import PRIMARY_IF
from x0tta.lab.core.topology import veth_mac

PEER_PORT = 7443  # [peer] port, the same on every node (x0tta/config/peer.py)


def originator_of(lab: Any, node: str) -> str:
    """``node``'s originator address: the MAC of its primary hard interface."""
    topo = lab.topology
    first = topo.hard_interfaces(node)[0]
    n = topo.node(node)
    if first == PRIMARY_IF:
        return n.primary_mac
    return veth_mac(n, next(link for link in topo.links_of(node) if link.ifname(node) == first))


def neighbours_bound(lab: Any, node: str, timeout: float = 120.0) -> float:
    """Seconds until ``node``'s guard has every neighbour's MAC bound to the SPIFFE ID its
    handshake verified (``guard.list`` bindings): admitted by their sessions, as after a release
    once they authenticated again."""
    topo = lab.topology
    want = {veth_mac(topo.node(link.peer(node)), link) for link in topo.links_of(node)}
    start = time.monotonic()
    while True:
        try:
            bound = {b["mac"] for b in lab.agent_call(node, "guard.list").get("bindings", [])}
        except Exception:  # the agent is still starting
            bound = set()
        if want <= bound:
            return round(time.monotonic() - start, 2)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{node}: neighbours not bound after {timeout} s: {sorted(want - bound)}")
        time.sleep(0.5)


def guard_mode(lab: Any, node: str, want: str = "enforce", timeout: float = 120.0) -> float:
    """Seconds until ``node``'s guard runs in mode ``want`` in the kernel (``auto`` enforces once
    the node has its identity and ``enforce_grace`` has passed)."""
    start = time.monotonic()
    while True:
        try:
            listing = lab.agent_call(node, "guard.list")
        except Exception:  # the agent is still starting
            listing = {}
        if listing.get("mode") == want and listing.get("enforced_in_kernel"):
            return round(time.monotonic() - start, 2)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{node}: guard not in {want} after {timeout} s: {listing}")
        time.sleep(0.5)


def release_all(lab: Any, node: str) -> list[str]:
    """End every quarantine on ``node`` (between two attacks: each kind is measured on its own)."""
    listing = lab.agent_call(node, "guard.list")
    released = []
    for q in listing.get("quarantined", []):
        mac = q.get("mac") if isinstance(q, dict) else q
        released += lab.agent_call(node, "guard.release", {"who": mac}).get("released", [])
    return released


def attack(lab: Any, node: str, kind: str, victim: str, seed: int, target: str | None = None,
           hear_timeout: float = 15.0, pace: float = 1.0) -> dict[str, Any]:
    """Run one attack of ``kind`` from ``node``'s end of its link to ``victim``, to its end; returns
    ``kind``, ``seed``, ``sender``, ``about``, ``first_wall`` (time.time() of the first frame or
    handshake), ``sent``, ``failed`` and the attack's ``details``. ``target``: the node whose
    originator the takeover and the inflated TQ claim (one the victim does not reach through
    ``node``). ``pace``: a factor on the attack's rate (the host test runs them faster)."""
    rng = random.Random(f"{kind}/{seed}")
    topo = lab.topology
    link = topo.link(f"{node}-{victim}")
    ifname = link.ifname(node)
    me = veth_mac(topo.node(node), link)
    if kind == "handshake_burst":
        host = link_local_from_mac(veth_mac(topo.node(victim), link), ifname)
        counts = handshake_burst(host, PEER_PORT, attempts=30, netns=node)
        first_wall = counts.pop("first_wall", None)
        me_ll = link_local_from_mac(me, ifname).split("%")[0]
        return {"kind": kind, "seed": seed, "sender": me, "about": [me_ll, me], "first_wall": first_wall,
                "sent": counts["refused"] + counts["not_refused"], "failed": counts["error"], "details": counts}
    with Injector(ifname, netns=node) as inj:
        if kind == "rogue_node":
            plan = atk.rogue_node(rng)
        elif kind == "originator_flood":
            plan = atk.originator_flood(rng, me)
        elif kind == "gateway_hijack":
            plan = atk.gateway_hijack(rng, me)
        elif kind in ("seqno_takeover", "inflated_tq"):
            if target is None:
                raise ValueError(f"{kind} needs a target node")
            orig = originator_of(lab, target)
            heard = inj.hear(lambda src, ogm: ogm.orig == orig and src != me, hear_timeout)
            if heard is None:
                raise AssertionError(f"no OGM of {target} ({orig}) heard on {ifname} within {hear_timeout} s")
            honest = heard[1].seqno
            plan = (atk.seqno_takeover(rng, me, orig, honest) if kind == "seqno_takeover"
                    else atk.inflated_tq(rng, me, orig, honest))
        else:
            raise ValueError(f"unknown attack kind {kind!r}")
        plan = dataclasses.replace(plan, rate=plan.rate * pace)
        job = inj.wait(inj.start(plan), plan.seconds + 30.0)
    return {"kind": kind, "seed": seed, "sender": plan.sender, "about": list(plan.about), "first_wall": job.first_wall,
            "sent": job.sent, "failed": job.failed, "details": dict(plan.details)}
