"""Per-node agent configs: lab layer, shared [agent], node overrides; written as TOML that the agent loads."""

from __future__ import annotations

import tomllib

from x0tta.config.loader import parse_settings
from x0tta.lab.core.agentconf import node_config, to_toml
from x0tta.lab.core.topology import parse_topology

TOPO = """
nodes = ["a", { name = "b", agent = { logging = { level = "debug" }, mesh = { hop_penalty = 60 } } }]
links = ["a-b"]
[mesh]
orig_interval_ms = 250
[agent]
logging.level = "warning"
metrics.port = 0
"""
MESH_FIELDS = {"mesh": frozenset({"interface", "hard_interfaces", "routing_algo", "bridge_loop_avoidance",
                                  "orig_interval", "hop_penalty"}), "probes": frozenset({"pin_path"})}


def test_layers_merge_node_over_shared_over_lab():
    t = parse_topology(TOPO)
    a = node_config(t, t.node("a"), "/run/lab", MESH_FIELDS)
    b = node_config(t, t.node("b"), "/run/lab", MESH_FIELDS)
    assert a["node"] == {"id": "a", "state_dir": "/run/lab/a/state", "runtime_dir": "/run/lab/a/run"}
    assert a["logging"] == {"format": "json", "level": "warning"} and b["logging"]["level"] == "debug"
    assert a["metrics"] == {"port": 0}
    assert b["mesh"] == {"interface": "bat0", "hard_interfaces": ["primary0", "to-a"], "routing_algo": "BATMAN_IV",
                         "bridge_loop_avoidance": False, "orig_interval": 250, "hop_penalty": 60}


def test_mesh_keys_only_where_the_agent_has_them():
    t = parse_topology(TOPO)
    assert set(node_config(t, t.node("a"), "/run/lab")) == {"node", "logging", "metrics"}
    assert node_config(t, t.node("a"), "/run/lab", MESH_FIELDS)["probes"] == {"pin_path": "/sys/fs/bpf/x0tta-a"}


def test_toml_round_trips_and_the_agent_accepts_it():
    t = parse_topology(TOPO)
    data = node_config(t, t.node("b"), "/run/lab", {"mesh": frozenset({"interface", "hard_interfaces"})})
    data["weird key"] = {"nested": {"x": [1, 2.5, "q\"uote"], "flag": True}}
    text = to_toml(data)
    assert tomllib.loads(text) == data
    del data["weird key"]
    settings = parse_settings(to_toml(data), "lab", environ={})
    assert settings.node.id == "b" and settings.logging.level == "debug"
    assert settings.admin_socket == "/run/lab/b/run/admin.sock"
