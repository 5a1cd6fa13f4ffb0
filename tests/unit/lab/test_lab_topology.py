"""Lab topology files: valid ones become typed records, broken ones report every problem with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from x0tta.lab.core.topology import Netem, TopologyError, parse_topology, topology_from_data, veth_mac

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "lab"

TRIANGLE = """
name = "tri"
nodes = ["a", "b", { name = "c", agent = { logging = { level = "debug" } } }]
links = ["a-b", { a = "b", b = "c", delay_ms = 5, loss_pct = 1.5, rate_mbit = 10 }, "c-a"]

[mesh]
routing_algo = "BATMAN_V"
orig_interval_ms = 500

[[steps]]
do = "converge"

[[steps]]
do = "ping"
from = "a"
to = "c"

[[steps]]
do = "silent_loss"
label = "blackhole"
link = "a-c"
after_s = 2

[[steps]]
do = "degrade"
link = "c-b"
delay_ms = 50
from = "c"

[[steps]]
do = "wait_route"
from = "a"
to = "c"
via = "b"

[[steps]]
do = "restore"
link = "c-a"
"""


def test_triangle_parses_into_records():
    t = parse_topology(TRIANGLE)
    assert [n.name for n in t.nodes] == ["a", "b", "c"]
    assert t.node("c").agent == {"logging": {"level": "debug"}}
    assert t.routing_algo == "BATMAN_V" and t.orig_interval_ms == 500
    assert t.primary == "dummy" and t.bridge_loop_avoidance is False
    bc = t.link("c-b")
    assert bc.name == "b-c" and bc.netem == Netem(delay_ms=5.0, loss_pct=1.5, rate_mbit=10.0)
    assert bc.netem.tc_args() == ["delay", "5ms", "loss", "1.5%", "rate", "10mbit"]
    assert bc.ifname("b") == "to-c" and bc.ifname("c") == "to-b"
    assert t.hard_interfaces("a") == ["primary0", "to-b", "to-c"]
    assert t.neighbours("a") == ("b", "c")
    steps = {s.label: s for s in t.steps}
    assert [s.do for s in t.steps] == ["converge", "ping", "silent_loss", "degrade", "wait_route", "restore"]
    assert t.steps[0].timeout_s == 60.0
    assert t.steps[1].name == "a->c" and t.steps[1].interval_ms == 20.0
    blackhole = steps["blackhole"]
    assert blackhole.link == "c-a" and blackhole.after_s == 2.0 and blackhole.netem == Netem(loss_pct=100.0)
    degrade = t.steps[3]
    assert degrade.src == "c" and degrade.netem == Netem(delay_ms=50.0, loss_pct=1.5, rate_mbit=10.0)
    assert t.steps[4].via == "b" and t.steps[4].not_via is None


def test_addresses_and_macs_are_derived_and_unique():
    t = parse_topology(TRIANGLE)
    a = t.node("a")
    assert (a.address, a.mac, a.primary_mac) == ("10.99.0.1", "02:ba:01:01:00:00", "02:ba:02:01:00:00")
    assert veth_mac(t.node("c"), t.link("c-a")) == "02:ba:00:03:00:03"
    owners = t.mac_owner()
    assert len(owners) == 3 * 2 + 3 * 2  # bat0 + primary per node, two veth ends per link
    assert owners["02:ba:00:03:00:03"] == "c"
    assert t.originator_owner() == {"02:ba:02:01:00:00": "a", "02:ba:02:02:00:00": "b", "02:ba:02:03:00:00": "c"}
    linked = t.with_changes(overrides={"mesh": {"primary": "link"}})
    assert linked.originator_owner()["02:ba:00:01:00:01"] == "a"  # a's end of its first link, a-b


def test_every_problem_is_reported_with_its_path():
    bad = {
        "nodes": ["a", "a", "B", {"agent": {}}],
        "links": ["a-zz", {"a": "a", "b": "a"}, {"a": "a", "b": "b", "loss_pct": 150}],
        "mesh": {"routing_algo": "OLSR", "bogus": 1},
        "steps": [
            {"do": "teleport"},
            {"do": "ping", "from": "a"},
            {"do": "link_down", "link": "a-q"},
            {"do": "restore"},
            {"do": "wait_route", "from": "a", "to": "a", "via": "a", "not_via": "a"},
            {"do": "kill_agent", "node": "a", "signal": "HUP"},
            {"do": "ping_stop", "name": "never-started"},
            {"do": "check", "call": "no colon"},
            {"do": "sleep", "seconds": 1, "label": "x"},
            {"do": "sleep", "seconds": 1, "label": "x"},
        ],
    }
    with pytest.raises(TopologyError) as err:
        topology_from_data(bad, "bad.toml")
    problems = "\n".join(err.value.problems)
    for expected in (
        "nodes[1].name: node 'a' is declared twice",
        "nodes[2].name: got 'B'; expected a name matching",
        "nodes[3].name: missing",
        "links[0].b: no node 'zz'",
        "links[1]: a link needs two different nodes",
        "links[2].loss_pct: got 150; expected between 0 and 100",
        "mesh.routing_algo: got 'OLSR'; expected one of BATMAN_IV, BATMAN_V",
        "mesh.bogus: no such key",
        "steps[0].do: got 'teleport'",
        "steps[1].to: missing",
        "steps[2].link: no link 'a-q'",
        "steps[3].do: a restore step needs exactly one of link or node",
        "steps[4].do: a wait_route step needs exactly one of via or not_via",
        "steps[5].signal: got 'HUP'",
        "steps[6].name: no ping named 'never-started'",
        "steps[7].call: got 'no colon'",
        "steps[9].label: 'x' is used by an earlier step",
    ):
        assert expected in problems, f"{expected!r} not in:\n{problems}"
    assert "bad.toml" in str(err.value)


def test_keys_after_a_table_header_are_caught():
    text = 'name = "x"\n[agent]\nnodes = ["a"]\n'
    with pytest.raises(TopologyError, match="top-level keys must come before the first"):
        parse_topology(text)


def test_invalid_toml_is_a_topology_error():
    with pytest.raises(TopologyError, match="not valid TOML"):
        parse_topology("nodes = [")


def test_with_changes_replaces_the_scenario_and_agents():
    t = parse_topology(TRIANGLE)
    changed = t.with_changes(steps=[{"do": "converge", "timeout_s": 5}, t.steps[1]], agents=False)
    assert [s.do for s in changed.steps] == ["converge", "ping"] and changed.agents is False
    assert changed.steps[0].timeout_s == 5.0
    with pytest.raises(TopologyError, match="no link"):
        t.with_changes(steps=[{"do": "link_down", "link": "a-x"}])


@pytest.mark.parametrize("name", ["line", "ring", "grid"])
def test_example_topologies_are_valid(name):
    t = parse_topology((CONFIGS / f"{name}.toml").read_text(), name)
    assert t.nodes and t.links and t.steps
    assert t.steps[0].do == "converge"


def test_overrides_merge_into_the_tables():
    t = parse_topology(TRIANGLE).with_changes(overrides={"mesh": {"orig_interval_ms": 250}, "agent": {"x": 1}})
    assert t.orig_interval_ms == 250 and t.routing_algo == "BATMAN_V" and t.agent == {"x": 1}


def test_load_steps_take_their_defaults_and_refuse_out_of_range_values():
    base = {"nodes": ["a", "b"], "links": ["a-b"]}
    topo = topology_from_data({**base, "steps": [{"do": "load", "cpu_pct": 30}, {"do": "load_stop"}]}, "t")
    load, stop = topo.steps
    assert (load.cpu_pct, load.spawn_per_s, load.seconds, load.name) == (30.0, 5.0, 0.0, "load")
    assert stop.name == "load"
    with pytest.raises(TopologyError, match="cpu_pct"):
        topology_from_data({**base, "steps": [{"do": "load", "cpu_pct": 150}]}, "t")
