"""The chaos schedule, its steps and the harm report, on synthetic timelines (no lab booted)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from x0tta.lab.core.chaos import KINDS, Run, report, schedule, steps, summary, table
from x0tta.lab.runner import load_topology

RING = Path(__file__).resolve().parents[3] / "configs" / "lab" / "ring.toml"


@pytest.fixture
def ring():
    return load_topology(RING)


def test_the_same_seed_gives_the_same_schedule_and_every_kind_shows_up(ring):
    a = schedule(ring, 60, random.Random(7))
    assert a == schedule(ring, 60, random.Random(7)) and a != schedule(ring, 60, random.Random(8))
    assert {f.kind for f in a} == set(KINDS)
    for f in a:
        assert f.ping[0] != f.ping[1]
        if f.witness:
            assert not set(f.witness) & {*f.ping, f.node}
        if f.kind == "agent_kill":
            assert f.faulted_links == () and f.node in f.ping
        if f.kind == "node_kill":
            assert len(f.faulted_links) == 2 and set(f.ping) <= set(ring.neighbours(f.node))


def test_steps_are_a_valid_scenario_with_and_without_agents(ring):
    plan = schedule(ring, 20, random.Random(3))
    for agents in (True, False):
        scenario = steps(plan, agents=agents, hold_s=5, settle_s=6, load={"cpu_pct": 30, "spawn_per_s": 5},
                         collect="x0tta.lab.chaos:actions" if agents else None)
        topo = ring.with_changes(steps=scenario, agents=agents)  # validates every step
        kinds = {s.do for s in topo.steps}
        assert ("kill_agent" in kinds) == (agents and any(f.kind == "agent_kill" for f in plan))
        assert "load" in kinds and "load_stop" in kinds
        # every link fault (and agent kill) first waits for its ping's route over the link, a node
        # kill for its ping's route through the node
        for f in plan:
            ready = [s for s in scenario if s["label"] == f"{f.name}-ready"]
            via = f.node if f.kind == "node_kill" else f.ping[1]
            assert [(r["from"], r["to"], r["via"]) for r in ready] == [(f.ping[0], f.ping[1], via)]
            labels = [s["label"] for s in scenario]
            assert labels.index(f"{f.name}-ready") < labels.index(f"{f.name}-ping")


def _timeline(t_fault: float, outages: list[tuple[float, float]], t0_wall: float = 1000.0) -> dict:
    """A ping f0 every 20 ms from t_fault - 2 to t_fault + 10, lost within ``outages`` (relative)."""
    rows, seq, t = [], 0, t_fault - 2.0
    while t < t_fault + 10.0:
        lost = any(a <= t - t_fault < b for a, b in outages)
        rows.append([seq, round(t, 3), None if lost else round(t + 0.001, 3)])
        seq, t = seq + 1, t + 0.02
    return {"t0_wall": t0_wall, "events": [{"label": "f0-fault", "t": t_fault}],
            "measurements": {"pings": {"f0": {"samples": rows}}}}


def test_the_report_finds_an_outage_only_the_agents_have_and_a_steer_off_on_a_healthy_link(ring):
    (f,) = [x for x in schedule(ring, 40, random.Random(1)) if x.kind == "silent_both"][:1]
    f = f.__class__(**{**f.__dict__, "index": 0})
    a_end = f.ping[0]
    faulted_if = next(ln.ifname(a_end) for ln in ring.links_of(a_end) if ln.name == f.link)
    healthy = next(ln for ln in ring.links_of(a_end) if ln.name != f.link)
    agents = _timeline(50.0, [(0.0, 0.8), (7.0, 8.0)])  # healed in 0.8 s, then an outage of its own
    alone = _timeline(70.0, [(0.0, 5.0)])  # batman-adv alone: out until the restore at 5 s
    steer = ((a_end, faulted_if, 1000.0 + 50.4), (a_end, healthy.ifname(a_end), 1000.0 + 52.0))
    doc = report(ring, [f], Run(agents, steer), Run(alone))
    row = doc["faults"][0]
    assert row["complete"] and row["outage_agents_s"] == pytest.approx(1.8, abs=0.05)
    assert row["outage_alone_s"] == pytest.approx(5.0, abs=0.05)
    assert [o["from_fault_s"] for o in row["agent_only_outages"]] == [pytest.approx(7.0, abs=0.03)]
    assert [w["link"] for w in row["actions_on_healthy_links"]] == [healthy.name]
    s = doc["summary"]
    assert s["agent_only_outages"] == 1 and s["actions_on_healthy_links"] == 1
    assert s["per_kind"]["silent_both"]["p95_alone_s"] == pytest.approx(5.0, abs=0.05)


def test_an_outage_that_overlaps_alones_but_lasts_longer_is_counted_as_harm(ring):
    (f,) = [x for x in schedule(ring, 40, random.Random(1)) if x.kind == "silent_both"][:1]
    f = f.__class__(**{**f.__dict__, "index": 0, "witness": None})
    slower = report(ring, [f], Run(_timeline(50.0, [(0.0, 7.2)])), Run(_timeline(70.0, [(0.0, 5.0)])))
    row = slower["faults"][0]
    assert row["agent_only_outages"] == []  # it overlaps alone's outage: the one-by-one count misses it
    assert row["longer_with_agents_s"] == pytest.approx(2.2, abs=0.05)
    assert slower["summary"]["longer_with_agents"] == 1
    assert "longer with agents: 1" in table(slower["summary"])
    # within an OGM interval of alone's: which run rerouted first, not harm
    close = report(ring, [f], Run(_timeline(50.0, [(0.0, 5.6)])), Run(_timeline(70.0, [(0.0, 5.0)])))
    assert close["faults"][0]["longer_with_agents_s"] is None and close["summary"]["longer_with_agents"] == 0


def test_a_fault_that_started_off_its_links_route_is_reported(ring):
    (f,) = [x for x in schedule(ring, 40, random.Random(1)) if x.kind == "link_down"][:1]
    f = f.__class__(**{**f.__dict__, "index": 0, "witness": None})
    agents, alone = _timeline(50.0, [(0.0, 0.5)]), _timeline(70.0, [(0.0, 5.0)])
    agents["events"].append({"label": "f0-ready", "t": 47.0, "ok": True})
    alone["events"].append({"label": "f0-ready", "t": 20.0, "ok": False})
    doc = report(ring, [f], Run(agents), Run(alone))
    assert doc["faults"][0]["ready"] == {"agents": True, "alone": False}
    assert doc["summary"]["not_from_direct_route"] == 1
    assert "started off their link's route: 1" in table(doc["summary"])


def test_a_fault_missing_from_a_run_is_counted_incomplete():
    rows = [{"fault": {"kind": "delay"}, "complete": False}]
    assert summary(rows)["incomplete"] == 1


def test_random_outages_of_a_partial_loss_are_not_counted_one_by_one(ring):
    (f,) = [x for x in schedule(ring, 60, random.Random(1)) if x.kind == "partial_loss"][:1]
    f = f.__class__(**{**f.__dict__, "index": 0, "witness": None})
    agents = _timeline(50.0, [(0.5, 0.7), (2.0, 2.2)])
    alone = _timeline(70.0, [(1.0, 1.2), (3.0, 3.3)])
    row = report(ring, [f], Run(agents), Run(alone))["faults"][0]
    assert row["agent_only_outages"] == [] and row["outage_agents_s"] < row["outage_alone_s"]


def test_the_steer_offs_and_quarantines_a_node_reports_are_told_apart(monkeypatch, tmp_path, ring):
    """The guest's check reports steer-offs as [hardif, t] and quarantines as ["quarantine", MAC, t]:
    the first are judged against the faults, the second (every node of a chaos run is honest) are
    counted and printed as harm of their own."""
    from types import SimpleNamespace

    import x0tta.lab.chaos as chaos
    import x0tta.lab.runner as runner

    def lab(topology, out, *, scenario, agents, **_):
        found = [["to-n2", 1000.0], ["quarantine", "02:ba:00:02:00:01", 1001.0]]
        checks = {"actions": {"per_node": {"n1": {"ok": True, "result": found}}}}
        return SimpleNamespace(timeline={"measurements": {"checks": checks if agents else {}}, "events": []})

    monkeypatch.setattr(runner, "run_lab", lab)
    doc = chaos.run_chaos(ring, tmp_path, faults=0, seed=1)
    assert doc["quarantines"] == [["n1", "02:ba:00:02:00:01", 1001.0]]
    assert doc["summary"]["quarantines"] == 1
    assert "honest nodes quarantined: 1" in table(doc["summary"])
    calls = []

    class Lab:
        def agent_call(self, node, command, args=None, timeout=10.0):
            calls.append(command)
            if command == "heal.incidents":
                return [{"id": "i1"}]
            return {"actions": [
                {"action": {"kind": "steer_off", "params": {"hardif": "to-n2"}}, "applied": 5.0},
                {"action": {"kind": "quarantine", "params": {"mac": "02:ba:00:02:00:01"}}, "applied": 6.0},
                {"action": {"kind": "quarantine", "params": {"mac": "02:ba:00:03:00:01"}}, "applied": None}]}

    assert chaos.actions(Lab(), "n1") == [["to-n2", 5.0], ["quarantine", "02:ba:00:02:00:01", 6.0]]


def test_threat_records_above_informational_are_counted_per_detector_from_the_agents_logs(tmp_path):
    """Every node of a chaos run is honest: a threat record above informational is a false positive,
    counted per detector from the agents' logs; informational records, other events and lines that
    are not JSON are not."""
    from x0tta.lab.chaos import agents_threats
    from x0tta.lab.core.chaos import threat_counts

    def rec(detector, severity):
        return json.dumps({"event": "guard_threat", "threat": {"alert": {"severity": severity},
                                                                 "batman": {"detector": detector}}})

    lines = [rec("unadmitted_frames", 2), rec("seqno_takeover", 1), rec("unadmitted_frames", 2),
             rec("flow_scan", 4), '{"event": "heal_decision"}', 'not json "guard_threat"',
             '{"event": "guard_threat", "threat": {}}']
    assert threat_counts(lines) == {"seqno_takeover": 1, "unadmitted_frames": 2}
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "n1.log").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "agents" / "n2.log").write_text("\n".join(lines[2:]) + "\n")
    assert agents_threats(tmp_path) == {"seqno_takeover": 1, "unadmitted_frames": 2}
    assert agents_threats(None) == {}
    summary_ = {"per_kind": {}, "agent_only_outages": 0, "actions_on_healthy_links": 0, "incomplete": 0,
                "threats": {"seqno_takeover": 1, "unadmitted_frames": 2}}
    assert "threat records above informational: 3 (seqno_takeover 1, unadmitted_frames 2)" in table(summary_)


def test_an_agents_run_with_identities_waits_for_keyed_probes_before_its_first_fault(monkeypatch, tmp_path, ring):
    """With identities the agents' probes count only once a neighbour's session keys them: the
    agents' run waits for that on every link (a mesh in service has had its sessions long), the
    run alone and a run without identities do not."""
    from types import SimpleNamespace

    import x0tta.lab.chaos as chaos
    import x0tta.lab.runner as runner

    seen = {}

    def lab(topology, out, *, scenario, agents, identities=False, **_):
        seen[(agents, identities)] = [s for s in scenario if s["label"] == "ready"]
        labels = [s["label"] for s in scenario]
        if seen[(agents, identities)]:
            assert labels.index("ready") == labels.index("converged") + 1
        return SimpleNamespace(timeline={"measurements": {}, "events": []})

    monkeypatch.setattr(runner, "run_lab", lab)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    chaos.run_chaos(ring, tmp_path / "a", faults=2, seed=1, identities=True)
    chaos.run_chaos(ring, tmp_path / "b", faults=2, seed=1)
    assert seen[(True, True)] == [{"do": "check", "label": "ready", "call": "x0tta.lab.chaos:keyed", "each_node": True}]
    assert seen[(False, True)] == seen[(True, False)] == seen[(False, False)] == []
    ring.with_changes(steps=steps(schedule(ring, 2, random.Random(1)), agents=True, hold_s=5, settle_s=6,
                                  ready="x0tta.lab.chaos:keyed"), agents=True)  # a valid scenario

    # the check: every link of the node keyed, whatever else the agent has
    answers = iter([RuntimeError("starting"), {"authentication": {"mode": "none", "link_keys": {}}},
                    {"authentication": {"mode": "sessions", "link_keys": {"to-n2": 1, "to-n5": 0}}},
                    {"authentication": {"mode": "sessions", "link_keys": {"to-n2": 1, "to-n5": 2}}}])

    class Lab:
        topology = ring

        def agent_call(self, node, command, args=None, timeout=10.0):
            assert (node, command) == ("n1", "heal.state")
            a = next(answers)
            if isinstance(a, Exception):
                raise a
            return a

    monkeypatch.setattr(chaos.time, "sleep", lambda s: None)
    assert chaos.keyed(Lab(), "n1") >= 0
    with pytest.raises(StopIteration):
        next(answers)
    answers = iter([{"authentication": {"mode": "sessions", "link_keys": {"to-n2": 1}}}] * 3)
    with pytest.raises(AssertionError, match=r"not keyed on \['to-n5'\]"):
        chaos.keyed(Lab(), "n1", timeout=0.0)
