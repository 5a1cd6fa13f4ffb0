"""The two stages of a silent link failure: ``link_suspect`` (faster OGMs at the first missing
probe of a clean link) and ``silent_loss`` (steer off once the loss is confirmed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from x0tta.config.heal import HealSettings
from x0tta.heal.core import loop
from x0tta.heal.core.loop import Result, settle, step
from x0tta.heal.core.model import ActionKind


@pytest.fixture
def s() -> HealSettings:
    return HealSettings()  # suspect_run = 1: the stage is on by default


def run(k, obs, now):
    k, decisions = step(k, obs, now)
    events = list(k.events)
    if decisions:
        k = settle(k, [Result(d.id, "applied") for d in decisions], now)
        events += k.events
    return k, decisions, events


def kinds(decisions):
    return [d.action.kind for d in decisions]


def with_probe(obs, **kw):
    """``obs`` with eth0's probe statistics changed."""
    probes = tuple(replace(p, **kw) if p.hardif == "eth0" else p for p in obs.probes)
    return replace(obs, probes=probes)


def test_one_missing_probe_on_a_clean_link_speeds_up_ogms_and_nothing_else(s, ring):
    k = loop.initial(s, "t")
    k, d, _ = run(k, ring.obs(0.0, interval=1000), 0.0)
    assert not d
    k, d, ev = run(k, ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), 0.15)
    assert kinds(d) == [ActionKind.TUNE_ORIG_INTERVAL]
    assert d[0].action.param("interval_ms") == s.unstable_orig_interval
    opened = [e.data for e in ev if e.name == "incident_opened"]
    assert [(o["kind"], o["target"]) for o in opened] == [("link_suspect", f"link:eth0/{ring.A}")]
    # the probes come back: after the clear time the OGMs slow down again and the incident closes
    tuned = s.unstable_orig_interval
    t = 0.3
    k, d, _ = run(k, ring.obs(t, interval=tuned), t)
    assert not d
    t += s.silent_loss_clear_after + 0.01
    k, d, _ = run(k, ring.obs(t, interval=tuned), t)
    assert kinds(d) == [ActionKind.RESTORE_ORIG_INTERVAL] and d[0].action.param("previous_ms") == 1000
    t += s.restore_verify_after + 0.1
    k, d, ev = run(k, ring.obs(t, interval=1000), t)
    assert not k.incidents and "incident_closed" in [e.name for e in ev]


def test_a_late_probe_on_every_link_at_once_is_this_node_late_not_a_link(s, ring):
    """A 20-node lab guest had agents suspect all their links in one cycle: one late moment of
    the node itself. A confirmed silent loss on them is still found."""
    k = loop.initial(replace(s, silent_loss_raise_after=0.0), "t")
    k, d, _ = run(k, ring.obs(0.0, interval=1000), 0.0)
    both = ring.obs(0.15, lost_run=1, loss=0.05, interval=1000)
    both = replace(both, probes=tuple(replace(p, lost_run=1, received=19, loss=0.05) for p in both.probes))
    k, d, ev = run(k, both, 0.15)
    assert not d and not [e for e in ev if e.name == "incident_opened"]
    dead = replace(both, at=0.45, probes=tuple(replace(p, lost_run=s.silent_loss_run, received=17, loss=0.15)
                                               for p in both.probes))
    k, d, ev = run(k, dead, 0.45)
    opened = {e.data["kind"] for e in ev if e.name == "incident_opened"}
    assert opened == {"silent_loss"}


def test_a_link_that_already_lost_probes_in_its_window_is_not_suspect_on_one_more(s, ring):
    k = loop.initial(s, "t")
    # 2 of the last 20 lost, the latest of them just now: lossy, not suddenly quiet
    k, d, _ = run(k, ring.obs(0.15, lost_run=1, loss=0.10, interval=1000), 0.15)
    assert not d and not k.incidents
    # a peer heard for less than half a window is not judged either
    young = with_probe(ring.obs(0.25, lost_run=1, loss=0.05, interval=1000), received=5)
    k, d, _ = run(k, young, 0.25)
    assert not d and not k.incidents


def test_suspect_then_confirmed_steers_off_without_a_second_tune_and_keeps_fast_ogms_till_the_route_returns(s, ring):
    tuned = s.unstable_orig_interval
    k = loop.initial(s, "t")
    k, d, _ = run(k, ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), 0.15)
    assert kinds(d) == [ActionKind.TUNE_ORIG_INTERVAL]
    # three lost in a row: not yet - a link whose delay jumped is late, not dead
    k, d, _ = run(k, ring.obs(0.35, lost_run=3, loss=0.15, interval=tuned), 0.35)
    assert kinds(d) == []
    # confirmed silent_loss_raise_after later: the steer-off comes alone, the faster OGMs are there
    k, d, _ = run(k, ring.obs(0.45, lost_run=4, loss=0.2, interval=tuned), 0.45)
    assert kinds(d) == [ActionKind.STEER_OFF]
    incidents = {i.key[0]: i.id for i in k.incidents.values()}
    assert set(incidents) == {"link_suspect", "silent_loss"}
    for t in (1.5, 4.4):
        k, d, _ = run(k, ring.obs(t, lost_run=int(t * 10), loss=1.0, eth0_attached=False, interval=tuned), t)
        assert not [x for x in d if x.action.kind == ActionKind.RESTORE_ORIG_INTERVAL]
    # the link recovers: both symptoms clear; the interface is restored, the OGMs stay fast until
    # a route goes through it again (the tune belongs to the suspect incident, the steer-off not)
    t = 4.5
    k, d, _ = run(k, ring.obs(t, eth0_attached=False, interval=tuned), t)
    t += s.silent_loss_clear_after + 0.01
    k, d, _ = run(k, ring.obs(t, eth0_attached=False, interval=tuned), t)
    assert kinds(d) == [ActionKind.RESTORE_HARDIF]
    t += s.restore_verify_after + 0.1
    k, d, _ = run(k, _no_route_via_eth0(ring.obs(t, interval=tuned)), t)
    assert not d
    # A's own interface, which BATMAN_IV lists as a one-hop originator routed through the link as
    # soon as it is back, is not a route the mesh uses yet
    t += 0.5
    k, d, _ = run(k, _only_the_neighbour_via_eth0(ring.obs(t, interval=tuned), ring.A), t)
    assert not d
    # the restore held, but no route goes through eth0 yet: the link is not over
    assert {i.key[0] for i in k.incidents.values()} == {"link_suspect", "silent_loss"}
    t += 1.0
    k, d, _ = run(k, ring.obs(t, interval=tuned), t)  # routed through eth0 again
    assert kinds(d) == [ActionKind.RESTORE_ORIG_INTERVAL]
    assert {i.key[0] for i in k.incidents.values()} == {"link_suspect"}  # silent_loss closed
    t += s.restore_verify_after + 0.1
    k, d, _ = run(k, ring.obs(t, interval=1000), t)
    assert not k.incidents


def test_suspect_run_zero_turns_the_stage_off(ring):
    k = loop.initial(HealSettings(suspect_run=0), "t")
    k, d, _ = run(k, ring.obs(0.15, lost_run=2, loss=0.10, interval=1000), 0.15)
    assert not d and not k.incidents


def test_a_carrier_loss_clears_a_suspect_like_a_silent_loss(s, ring):
    k = loop.initial(s, "t")
    k, d, _ = run(k, ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), 0.15)
    k, d, ev = run(k, ring.obs(0.3, lost_run=2, loss=0.1, eth0_up=False, interval=s.unstable_orig_interval), 0.3)
    cleared = [e.data["symptom"]["kind"] for e in ev if e.name == "symptom_cleared"]
    assert cleared == ["link_suspect"]
    assert ("link_down", "hardif:eth0") in k.active
    # link_down keeps the faster OGMs the suspect took: no restore while it lasts
    k, d, _ = run(k, ring.obs(3.0, eth0_up=False, interval=s.unstable_orig_interval), 3.0)
    assert ActionKind.RESTORE_ORIG_INTERVAL not in kinds(d)


def _only_the_neighbour_via_eth0(obs, neighbour):
    return replace(obs, originators=tuple(o if o.orig == neighbour else replace(o, hardif="eth1")
                                          for o in obs.originators))


def _no_route_via_eth0(obs):
    return replace(obs, originators=tuple(replace(o, hardif="eth1") for o in obs.originators))



def test_no_faster_ogms_for_a_suspect_link_that_is_the_only_way_to_what_it_carries(s, ring):
    """On a line (the node behind A has no other way) nobody can route around a failing link, and
    faster OGMs only empty its TQ window sooner: the suspect stage takes no action there and says
    why. The ring's link (behind A heard the other way round too) is sped up as before."""
    k = loop.initial(s, "t")
    k, _, _ = run(k, ring.obs(0.0, interval=1000, alt_route=False), 0.0)
    k, d, _ = run(k, ring.obs(0.15, lost_run=1, loss=0.05, interval=1000, alt_route=False), 0.15)
    assert not d, d
    (inc,) = k.incidents.values()
    assert inc.key[0] == "link_suspect"
    assert any("faster OGMs would help no one route around the link" in n and ring.BEHIND_A in n
               for n in inc.notes), inc.notes


def test_a_radio_neighbour_with_others_on_the_same_interface_is_not_the_only_way(s, ring):
    """The judgement is per neighbour, not per interface: on a radio, one interface holds every
    neighbour, and the node behind A heard through another neighbour on that same interface is a
    way round - faster OGMs help the mesh find it."""
    from x0tta.heal.core.model import Neighbour, Originator

    other = "02:00:00:00:0c:01"

    def radio(obs):
        return replace(obs, neighbours=(*obs.neighbours, Neighbour(other, "eth0", tq=240)),
                       other_routes=(Originator(ring.BEHIND_A, other, "eth0", tq=120),))

    k = loop.initial(s, "t")
    k, _, _ = run(k, radio(ring.obs(0.0, interval=1000, alt_route=False)), 0.0)
    k, d, _ = run(k, radio(ring.obs(0.15, lost_run=1, loss=0.05, interval=1000, alt_route=False)), 0.15)
    assert kinds(d) == [ActionKind.TUNE_ORIG_INTERVAL], d


def test_a_confirmed_silent_loss_on_a_radio_still_gets_faster_ogms_through_the_other_neighbours(s, ring):
    """The silent link's own interface holds the other neighbours too: the steer-off is refused
    (it would take them all), but they are ways round, so the faster OGMs are taken. Only the
    silent neighbour itself is left out of the ways round, not its whole interface."""
    from x0tta.heal.core.model import Neighbour, Originator

    other = "02:00:00:00:0c:01"

    def radio(obs):
        hardifs = tuple(h for h in obs.hardifs if h.name == "eth0")
        neighbours = (*(n for n in obs.neighbours if n.hardif == "eth0"), Neighbour(other, "eth0", tq=240))
        return replace(obs, hardifs=hardifs, neighbours=neighbours,
                       originators=tuple(o for o in obs.originators if o.hardif == "eth0"),
                       other_routes=(Originator(ring.BEHIND_A, other, "eth0", tq=120),))

    k = loop.initial(replace(s, suspect_run=0, silent_loss_raise_after=0.0), "t")
    k, _, _ = run(k, radio(ring.obs(0.0, interval=1000, alt_route=False)), 0.0)
    k, d, _ = run(k, radio(ring.obs(0.3, lost_run=3, loss=0.2, interval=1000, alt_route=False)), 0.3)
    assert kinds(d) == [ActionKind.TUNE_ORIG_INTERVAL], [i.notes for i in k.incidents.values()]
