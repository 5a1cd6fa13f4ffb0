"""The `threat` symptom and its remedy, `quarantine`: planned from the guard's findings, refused when
in force, verified by the guard's quarantine list, executed through the handed-over hook."""

from __future__ import annotations

from dataclasses import replace

from tests.kit.clock import ManualClock
from x0tta.heal.breakers import Breakers
from x0tta.heal.core import loop
from x0tta.heal.core.loop import State
from x0tta.heal.core.model import Action, ActionKind, Decision, Op, ThreatSeen, evidence
from x0tta.heal.executor import Executor, MeshActuator
from x0tta.heal.service import threats_seen

ID = "spiffe://mesh/node/a"


def flood(mac: str, severity: int = 1) -> ThreatSeen:
    """A threat about what the neighbour itself does (a MAC with two identities), which the loop
    answers by default; see the last tests for what a neighbour only forwards."""
    return ThreatSeen(mac, "mac_two_identities", severity, ID)


def test_a_high_threat_about_a_neighbour_quarantines_it_once_and_the_incident_closes(settings, ring):
    k = loop.initial(settings, "t")
    obs = ring.obs(0.0)
    k, d, ev = ring.run(k, replace(obs, threats=(flood(ring.A, severity=2),)), 0.0)
    assert not d and not k.incidents  # medium: recorded by the guard, not quarantined
    k, d, ev = ring.run(k, replace(ring.obs(1.0), threats=(flood(ring.A),)), 1.0)
    [q] = d
    assert q.action.kind == ActionKind.QUARANTINE and q.action.target == f"peer:{ring.A}"
    assert (q.action.param("mac"), q.action.param("ttl"), q.action.param("reason")) == (
        ring.A, settings.quarantine_ttl, "mac_two_identities")
    assert any("threat on peer:" in r for r in q.reasons)
    # the guard holds it now: verified, and never planned again while the threat lasts
    quarantined = frozenset({ring.A})
    for t in (1.5, 2.5, 3.5):
        k, d, ev = ring.run(k, replace(ring.obs(t), threats=(flood(ring.A),), quarantined=quarantined), t)
        assert not d
    [rec] = k.records.values()
    assert rec.state == State.EFFECTIVE
    # the threat is over (its frames are dropped): the incident closes at once - the guard's look
    # and detection window are the threat's hysteresis - and the quarantine stays the guard's
    k, d, ev = ring.run(k, replace(ring.obs(4.0), quarantined=quarantined), 4.0)
    assert not d and "incident_closed" in [e.name for e in ev] and not k.incidents


def test_a_neighbour_an_operator_released_is_not_quarantined_again_by_the_incident(settings, ring):
    """The operator's release takes the MAC out of the guard's quarantine and out of its active
    threats (for one detection window): the open incident must not take the missing quarantine
    for a failed one and quarantine again (the attack lab saw it 1.5 s after a release)."""
    k = loop.initial(settings, "t")
    k, d, _ = ring.run(k, replace(ring.obs(0.0), threats=(flood(ring.A),)), 0.0)
    assert [x.action.kind for x in d] == [ActionKind.QUARANTINE]
    quarantined = frozenset({ring.A})
    t = settings.verify_after + 0.1
    k, d, _ = ring.run(k, replace(ring.obs(t), threats=(flood(ring.A),), quarantined=quarantined), t)
    assert not d
    end = t + settings.retry_after + settings.clear_after + 2.0
    while t < end:  # released: neither quarantined nor a threat now, every cycle past a retry
        t += 0.5
        k, d, _ = ring.run(k, ring.obs(t), t)
        assert not d, d
    assert not k.incidents


def test_a_quarantine_the_guard_did_not_take_is_not_effective(settings, ring):
    k = loop.initial(settings, "t")
    k, d, _ = ring.run(k, replace(ring.obs(0.0), threats=(flood(ring.A),)), 0.0)
    assert [x.action.kind for x in d] == [ActionKind.QUARANTINE]
    t = settings.verify_after + 0.1
    k, d, ev = ring.run(k, replace(ring.obs(t), threats=(flood(ring.A),)), t)
    verified = [e for e in ev if e.name == "verified"]
    assert verified and verified[0].data["ok"] is False and "not quarantined" in verified[0].data["reason"]


def test_a_quarantine_already_in_force_or_disabled_is_not_taken(settings, ring):
    k = loop.initial(settings, "t")
    obs = replace(ring.obs(0.0), threats=(flood(ring.A),), quarantined=frozenset({ring.A}))
    k, d, _ = ring.run(k, obs, 0.0)
    assert not d and any("quarantined already" in n for inc in k.incidents.values() for n in inc.notes)
    k = loop.initial(ring.with_(settings, disabled_actions=("quarantine",)), "t")
    k, d, _ = ring.run(k, replace(ring.obs(0.0), threats=(flood(ring.A),)), 0.0)
    assert not d
    k = loop.initial(ring.with_(settings, disabled_detectors=("threat",)), "t")
    k, d, _ = ring.run(k, replace(ring.obs(0.0), threats=(flood(ring.A),)), 0.0)
    assert not d and not k.incidents


def test_threat_records_become_threats_about_neighbours_only():
    def rec(macs, severity=1, detector="gateway_bandwidth"):
        return {"alert": {"severity": severity}, "batman": {"detector": detector, "macs": macs, "spiffe_id": None}}

    neighbours = {"02:00:00:00:00:0a"}
    got = threats_seen([rec(["02:00:00:00:00:0A", "02:00:00:00:00:99"]), rec([]), {"alert": {}}, {"batman": 5},
                        rec(["02:00:00:00:00:0a"], severity="x")], neighbours)
    assert got == (ThreatSeen("02:00:00:00:00:0a", "gateway_bandwidth", 1, None),)


def executor(hook, clock: ManualClock) -> Executor:
    return Executor(MeshActuator(None, None, "bat0", quarantine=hook), dry_run=False,
                    breakers=Breakers(3, 60.0, clock.monotonic), rate_burst=3, rate_per_minute=6.0,
                    clock=clock.monotonic)


def quarantine_of(i: int, mac: str) -> Decision:
    a = Action(ActionKind.QUARANTINE, f"peer:{mac}", evidence(mac=mac, ttl=600.0, reason="originator_flood"),
               disruptive=True)
    return Decision(f"q{i}", "i1", Op.APPLY, a, ("threat", f"peer:{mac}"))


async def test_the_executor_quarantines_through_the_hook_behind_breakers():
    asked = []

    def guard(mac, ttl, reason):
        asked.append((mac, ttl, reason))
        return "" if len(asked) == 1 else "2 of 2 neighbours quarantined would be more than the share allowed (0.5)"

    clock = ManualClock()
    ex = executor(guard, clock)
    assert (await ex.execute(quarantine_of(1, "02:00:00:00:00:0a"))).ok
    r = await ex.execute(quarantine_of(2, "02:00:00:00:00:0b"))
    assert r.outcome == "error" and "share" in r.detail
    assert asked[0] == ("02:00:00:00:00:0a", 600.0, "originator_flood")
    r = await executor(None, clock).execute(quarantine_of(3, "02:00:00:00:00:0c"))
    assert r.outcome == "error" and "no guard" in r.detail


def test_what_a_neighbour_only_forwards_is_not_answered_by_quarantine_unless_asked_for(settings, ring):
    """A flood, a takeover, a gateway or an inflated TQ seen through a neighbour reads the same from
    the attacker's neighbour and from the next node, whose neighbour only forwarded it."""
    from x0tta.heal.core.detect import FORWARDED

    for detector in FORWARDED:
        k = loop.initial(settings, "t")
        k, d, _ = ring.run(k, replace(ring.obs(1.0), threats=(ThreatSeen(ring.A, detector, 1, ID),)), 1.0)
        assert not d and not k.incidents, detector
        k = loop.initial(replace(settings, quarantine_forwarded=True), "t")
        k, d, _ = ring.run(k, replace(ring.obs(1.0), threats=(ThreatSeen(ring.A, detector, 1, ID),)), 1.0)
        assert [x.action.kind for x in d] == [ActionKind.QUARANTINE], detector


def test_a_neighbours_own_frames_claiming_a_far_originator_are_answered_by_quarantine(settings, ring):
    """ogm_full_claim reads the OGMs in the frames the neighbour itself sent, at a quality no
    forward keeps: first-hop evidence, quarantined without quarantine_forwarded."""
    from x0tta.heal.core.detect import FORWARDED

    assert "ogm_full_claim" not in FORWARDED and not settings.quarantine_forwarded
    k = loop.initial(settings, "t")
    k, d, _ = ring.run(k, replace(ring.obs(1.0), threats=(ThreatSeen(ring.A, "ogm_full_claim", 1, ID),)), 1.0)
    assert [x.action.kind for x in d] == [ActionKind.QUARANTINE]

