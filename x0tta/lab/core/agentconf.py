"""Per-node agent configuration for a lab: three layers merged, written out as TOML text.

Layers, later wins: what the lab must set for the node to work in the guest (its id, state and
runtime directories in the guest's tmpfs, JSON logs, the mesh interfaces it owns), the topology's
shared ``[agent]`` table, and the node's own ``agent`` table. So a scenario can change anything,
including what the lab set, on one node or all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from x0tta.lab.core.topology import MESH_IF, Node, Topology


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def lab_layer(
    topology: Topology, node: Node, scratch: str, mesh_fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """What the lab sets for ``node``. ``mesh_fields`` names the ``[mesh]`` settings this version of
    the agent has; the mesh interface and hard interfaces are set only where it has them."""
    base = f"{scratch.rstrip('/')}/{node.name}"
    layer: dict[str, Any] = {
        "node": {"id": node.name, "state_dir": f"{base}/state", "runtime_dir": f"{base}/run"},
        "logging": {"format": "json"},
    }
    mesh: dict[str, Any] = {}
    if "interface" in mesh_fields:
        mesh["interface"] = MESH_IF
    if "hard_interfaces" in mesh_fields:
        mesh["hard_interfaces"] = topology.hard_interfaces(node.name)
    if "routing_algo" in mesh_fields:
        mesh["routing_algo"] = topology.routing_algo
    if "bridge_loop_avoidance" in mesh_fields:
        mesh["bridge_loop_avoidance"] = topology.bridge_loop_avoidance
    if "orig_interval" in mesh_fields and topology.orig_interval_ms is not None:
        mesh["orig_interval"] = topology.orig_interval_ms
    if mesh:
        layer["mesh"] = mesh
    return layer


def node_config(
    topology: Topology, node: Node, scratch: str, mesh_fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    return merge(merge(lab_layer(topology, node, scratch, mesh_fields), topology.agent), node.agent)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{v!r} cannot be written to TOML here")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"{v!r} cannot be written to TOML")


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """TOML text for nested tables of scalars and lists (what agent configs hold)."""
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    lines = [f"{json.dumps(str(k))} = {_value(v)}" for k, v in scalars]
    for k, v in tables:
        name = f"{_prefix}.{json.dumps(str(k))}" if _prefix else json.dumps(str(k))
        has_scalars = any(not isinstance(x, Mapping) for x in v.values())
        if has_scalars or not v:
            lines.append("")
            lines.append(f"[{name}]")
        body = to_toml(v, name)
        if body:
            lines.append(body)
    return "\n".join(lines).strip("\n") + "\n" if _prefix == "" else "\n".join(lines)
