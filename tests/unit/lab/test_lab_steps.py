"""Scenario steps: one record type per action, written back as data that parses to the same record;
a broken step raises StepError with its index and every problem, and the lab tests' scenarios parse."""

from __future__ import annotations

import json
import random

import pytest

from x0tta.common.errors import PermanentError
from x0tta.lab.core.net import Link, Netem
from x0tta.lab.core.steps import (
    STEP_TYPES,
    Check,
    Degrade,
    Ping,
    SilentLoss,
    Step,
    StepError,
    parse_step,
)
from x0tta.lab.core.topology import TopologyError, topology_from_data

NODES = ("a", "b", "c")
LINKS = (Link("a", "b", 1), Link("b", "c", 2, Netem(delay_ms=5.0, loss_pct=1.0, rate_mbit=10.0)))

# One table per action, with every optional key the action takes.
EXAMPLES: dict[str, dict] = {
    "converge": {"do": "converge", "timeout_s": 30, "agents": False},
    "sleep": {"do": "sleep", "seconds": 2.5},
    "ping": {"do": "ping", "from": "a", "to": "c", "interval_ms": 10, "name": "p"},
    "ping_stop": {"do": "ping_stop", "name": "p"},
    "link_down": {"do": "link_down", "link": "b-a"},
    "link_up": {"do": "link_up", "link": "a-b"},
    "silent_loss": {"do": "silent_loss", "link": "c-b", "loss_pct": 50, "from": "c"},
    "degrade": {"do": "degrade", "link": "b-c", "delay_ms": 40, "jitter_ms": 2, "from": "b"},
    "restore": {"do": "restore", "node": "b"},
    "kill_agent": {"do": "kill_agent", "node": "a", "signal": "TERM"},
    "start_agent": {"do": "start_agent", "node": "a"},
    "restart_agent": {"do": "restart_agent", "node": "c"},
    "kill_node": {"do": "kill_node", "node": "b"},
    "snapshot": {"do": "snapshot", "nodes": ["a", "b"]},
    "wait_route": {"do": "wait_route", "from": "a", "to": "c", "not_via": "b", "timeout_s": 9},
    "check": {"do": "check", "call": "pkg.mod:fn", "each_node": True, "nodes": ["c"], "args": {"n": 1}},
    "load": {"do": "load", "cpu_pct": 30, "spawn_per_s": 2, "seconds": 5, "name": "busy"},
    "load_stop": {"do": "load_stop", "name": "busy"},
}


def parse(data: object, index: int = 0, pings: set[str] | None = None) -> Step:
    return parse_step(data, index, nodes=NODES, links=LINKS, pings=pings)


def test_every_action_has_an_example():
    assert set(EXAMPLES) == set(STEP_TYPES)


@pytest.mark.parametrize("do", list(EXAMPLES))
def test_every_step_kind_round_trips(do):
    running = {"p"} if do == "ping_stop" else None  # the ping a ping_stop stops
    step = parse(EXAMPLES[do], 3, pings=running and set(running))
    assert type(step) is STEP_TYPES[do] and step.do == do and step.label == f"3:{do}"
    written = step.to_data()
    # the guest gets its scenario as JSON
    again = parse(json.loads(json.dumps(written)), 7, pings=running and set(running))
    assert again == step and again.to_data() == written
    with pytest.raises(AttributeError):  # records are frozen
        step.label = "x"  # type: ignore[misc]


def test_records_carry_what_their_action_needs():
    ping = parse({"do": "ping", "from": "a", "to": "b"})
    assert isinstance(ping, Ping) and (ping.src, ping.dst, ping.name, ping.interval_ms) == ("a", "b", "a->b", 20.0)
    loss = parse({"do": "silent_loss", "link": "c-b", "after_s": 1})
    assert isinstance(loss, SilentLoss) and loss.link == "b-c" and loss.after_s == 1.0
    assert loss.netem == Netem(delay_ms=5.0, loss_pct=100.0, rate_mbit=10.0)  # the link's own, lossy
    degrade = parse({"do": "degrade", "link": "b-c", "delay_ms": 40})
    assert isinstance(degrade, Degrade) and degrade.src is None
    assert degrade.netem == Netem(delay_ms=40.0, loss_pct=1.0, rate_mbit=10.0)
    check = parse({"do": "check", "call": "/x/checks.py:fn", "label": "c1"})
    assert isinstance(check, Check) and (check.each_node, check.nodes, check.args) == (False, None, {})
    assert parse({"do": "converge"}).waits_s == 60.0 and parse({"do": "kill_node", "node": "a"}).waits_s == 0.0


@pytest.mark.parametrize(("data", "expected"), [
    ("ping", "steps[4]: got 'ping'; expected a table"),
    ({}, "steps[4].do: missing; one of converge"),
    ({"do": "teleport"}, "steps[4].do: got 'teleport'"),
    ({"do": "ping", "from": "a"}, "steps[4].to: missing (a ping step needs from, to)"),
    ({"do": "ping", "from": "a", "to": "a"}, "steps[4].to: a ping needs two different nodes"),
    ({"do": "ping_stop", "name": "never"}, "steps[4].name: no ping named 'never'"),
    ({"do": "link_down", "link": "a-c"}, "steps[4].link: no link 'a-c'; links: a-b, b-c"),
    ({"do": "link_down", "link": "a-b", "node": "a"}, "steps[4].node: no such key"),
    ({"do": "silent_loss", "link": "a-b", "from": "c"}, "steps[4].from: 'c' is not an end of link a-b"),
    ({"do": "degrade", "link": "a-b"}, "steps[4].do: a degrade step needs at least one of delay_ms"),
    ({"do": "degrade", "link": "a-b", "loss_pct": 101}, "steps[4].loss_pct: got 101; expected between 0 and 100"),
    ({"do": "restore", "link": "a-b", "node": "a"}, "steps[4].do: a restore step needs exactly one of link or node"),
    ({"do": "kill_agent", "node": "z"}, "steps[4].node: no node 'z'; nodes: a, b, c"),
    ({"do": "kill_agent", "node": "a", "signal": "HUP"}, "steps[4].signal: got 'HUP'"),
    ({"do": "snapshot", "nodes": "a"}, "steps[4].nodes: got 'a'; expected a list of node names"),
    ({"do": "wait_route", "from": "a", "to": "c"}, "steps[4].do: a wait_route step needs exactly one of via"),
    ({"do": "check", "call": "no colon"}, "steps[4].call: got 'no colon'"),
    ({"do": "check", "call": "m:f", "args": [1]}, "steps[4].args: got [1]; expected a table"),
    ({"do": "sleep", "seconds": True}, "steps[4].seconds: got True; expected a number"),
    ({"do": "load", "cpu_pct": 150}, "steps[4].cpu_pct: got 150; expected between 0 and 100"),
    ({"do": "converge", "after_s": -1}, "steps[4].after_s: got -1"),
])
def test_a_bad_step_raises_a_typed_error_with_its_index(data, expected):
    with pytest.raises(StepError) as err:
        parse(data, 4)
    assert err.value.index == 4
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems
    assert isinstance(err.value, TopologyError) and isinstance(err.value, PermanentError)
    assert str(err.value).startswith("invalid lab step 4")


def test_a_step_reports_every_problem_at_once():
    with pytest.raises(StepError) as err:
        parse({"do": "wait_route", "from": "q", "to": "a", "via": "b", "bogus": 1}, 2)
    assert err.value.do == "wait_route" and "(wait_route)" in str(err.value)
    assert len(err.value.problems) == 2  # the unknown key and the unknown node


def test_a_topology_collects_the_problems_of_all_its_steps():
    data = {"nodes": list(NODES), "links": ["a-b"],
            "steps": [{"do": "sleep"}, {"do": "sleep", "seconds": 1}, {"do": "link_up", "link": "x-y"}]}
    with pytest.raises(TopologyError) as err:
        topology_from_data(data, "t.toml")
    assert not isinstance(err.value, StepError)
    assert [p.split(":")[0] for p in err.value.problems] == ["steps[0].seconds", "steps[2].link"]


def _lab_scenarios() -> dict[str, list[dict]]:
    from tests.lab import test_forgery_lab, test_heal_lab, test_lab_run, test_meshstate_lab
    from x0tta.lab.core.chaos import schedule, steps
    from x0tta.lab.runner import load_topology

    ring = load_topology(test_heal_lab.RING)
    plan = schedule(ring, 20, random.Random(1))
    return {
        "heal": test_heal_lab.SCENARIO,
        "forgery": test_forgery_lab.scenario(True),
        "forgery-no-identities": test_forgery_lab.scenario(False),
        "meshstate": test_meshstate_lab.scenario(),
        "lab-baseline": test_lab_run.BASELINE,
        "lab-agents": test_lab_run.WITH_AGENTS,
        "chaos": steps(plan, agents=True, hold_s=5, settle_s=6, load={"cpu_pct": 30, "spawn_per_s": 5},
                       collect="x0tta.lab.chaos:actions"),
    }


def test_the_lab_tests_scenarios_parse_and_round_trip():
    """The scenarios the long lab runs build, parsed as their boot would, without booting anything."""
    from tests.lab import test_heal_lab
    from x0tta.lab.runner import load_topology

    ring = load_topology(test_heal_lab.RING)
    for name, scenario in _lab_scenarios().items():
        topo = ring.with_changes(steps=scenario)
        assert len(topo.steps) == len(scenario), name
        assert all(type(s) is STEP_TYPES[s.do] for s in topo.steps), name
        assert topo.with_changes(steps=topo.steps).steps == topo.steps, name


def test_the_meshstate_lab_s_agents_run_the_replicated_state(tmp_path):
    """Its overrides make agent configs the agent takes: the state on, pulled every second."""
    from tests.lab import test_meshstate_lab as lab
    from x0tta.config.loader import parse_settings
    from x0tta.lab.runner import agent_configs, load_topology

    topo = load_topology(lab.RING).with_changes(steps=lab.scenario(), overrides=lab.OVERRIDES)
    texts, _ = agent_configs(topo, tmp_path / "identity")
    for node in lab.NODES:
        s = parse_settings(texts[node])
        assert s.meshstate.enabled and s.identity.enabled and s.peer.enabled and s.meshstate.interval == 1.0
        assert (s.peer.reconnect_max_delay, s.peer.neighbour_refresh) == (2.0, 2.0)


def test_the_guest_runs_every_step_type():
    from x0tta.lab.scenario import HANDLERS

    assert set(HANDLERS) == set(STEP_TYPES.values())
