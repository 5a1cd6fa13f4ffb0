"""Builders of observations for the heal tests: a node with two hard interfaces in a ring."""

from __future__ import annotations

from dataclasses import replace

import pytest

from x0tta.config.heal import HealSettings
from x0tta.heal.core.model import HardIf, Neighbour, Observation, Originator, ProbeStats

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
BEHIND_A = "02:00:00:00:02:00"


def ring_obs(
    at: float,
    *,
    lost_run: int = 0,
    loss: float = 0.0,
    eth0_attached: bool = True,
    eth0_up: bool = True,
    others: int = 3,
    interval: int = 100,
    alt_route: bool = True,
    scattered: int = 0,
) -> Observation:
    """This node has eth0 (neighbour A) and eth1 (neighbour B); originators reachable via both
    (``alt_route=False``: the node behind A has no other way, as on a line)."""
    hardifs = (HardIf("eth0", oper_up=eth0_up, attached=eth0_attached), HardIf("eth1", oper_up=True))
    neighbours = [Neighbour(B, "eth1", tq=250)]
    if eth0_attached and eth0_up:
        neighbours.append(Neighbour(A, "eth0", tq=250))
    origs = [Originator(B, B, "eth1", tq=250)]
    via_a = eth0_attached and eth0_up
    origs.append(Originator(A, A if via_a else B, "eth0" if via_a else "eth1", tq=200))
    # a node behind A: what a route through eth0 means (A's own entry is one hop, routed at once)
    origs.append(Originator(BEHIND_A, A if via_a else B, "eth0" if via_a else "eth1", tq=150))
    for i in range(others):
        origs.append(Originator(f"02:00:00:00:01:{i:02x}", B, "eth1", tq=180))
    # a ring: the node behind A is heard the other way round too (not the best entry)
    other_routes = (Originator(BEHIND_A, B, "eth1", tq=90),) if via_a and alt_route else ()
    probes = (
        ProbeStats(
            "eth0", A, window=20, received=20 - lost_run, loss=loss, lost_run=lost_run, last_rx=at - 0.1 * lost_run,
            scattered=scattered,
        ),
        ProbeStats("eth1", B, window=20, received=20, loss=0.0, lost_run=0, last_rx=at),
    )
    return Observation(
        at=at,
        originators=tuple(origs),
        other_routes=other_routes,
        neighbours=tuple(neighbours),
        hardifs=hardifs,
        probes=probes,
        orig_interval_ms=interval,
        gw_mode="off",
    )


def flapping(obs: Observation, i: int) -> Observation:
    """``obs`` with the node behind A routed through A (eth0, TQ 150) on odd ``i``, the long way
    round through B (eth1, TQ 90) on even ones: called with successive ``i``, route flapping (a
    route that swings in quality, not an alternation between equal paths)."""
    router, hardif, tq = (A, "eth0", 150) if i % 2 else (B, "eth1", 90)
    origs = tuple(replace(o, router=router, hardif=hardif, tq=tq) if o.orig == BEHIND_A else o
                  for o in obs.originators)
    return replace(obs, originators=origs)


@pytest.fixture
def settings() -> HealSettings:
    """Defaults, without the ``link_suspect`` stage and confirming silent loss in the cycle that
    sees it (no ``silent_loss_raise_after``): these tests follow one symptom at a time
    (test_heal_suspect.py has the two stages together, test_heal_detect.py the raise time); their
    observations say 100 ms for "the faster interval is in effect"."""
    return HealSettings(suspect_run=0, unstable_orig_interval=100, silent_loss_raise_after=0.0)


def with_(s: HealSettings, **kw) -> HealSettings:
    return replace(s, **kw)


def run_step(k, obs, now, outcome: str = "applied"):
    """One cycle: ``step``, then ``settle`` with every decision's ``outcome``; returns the knowledge,
    the decisions and the events of both."""
    from x0tta.heal.core.loop import Result, settle, step

    k, decisions = step(k, obs, now)
    events = list(k.events)
    if decisions:
        k = settle(k, [Result(d.id, outcome) for d in decisions], now)
        events += k.events
    return k, decisions, events


class Ring:
    """The builders, as a fixture (test modules here are not a package)."""

    A = A
    BEHIND_A = BEHIND_A
    B = B
    obs = staticmethod(ring_obs)
    flapping = staticmethod(flapping)
    with_ = staticmethod(with_)
    run = staticmethod(run_step)


@pytest.fixture
def ring() -> type[Ring]:
    return Ring
