"""Per-node agent configuration for a lab: three layers merged, written out as TOML text.

Layers, later wins: what the lab must set for the node to work in the guest (its id, state and
runtime directories in the guest's tmpfs, JSON logs, the mesh interfaces it owns and the mesh
settings the topology chose, its own bpffs pin directory), the topology's
shared ``[agent]`` table, and the node's own ``agent`` table. So a scenario can change anything,
including what the lab set, on one node or all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from x0tta.common.tables import merge_tables as merge
from x0tta.lab.core.topology import MESH_IF, Node, Topology

Known = Mapping[str, frozenset[str]]  # config section -> the setting names the agent has
EMPTY: Known = {}
_BARE = re.compile(r"[A-Za-z0-9_-]+")


LAB_TRUST_DOMAIN = "lab.x0tta"  # the trust domain of the CA a lab run with identities creates
IDENTITY_FILES = {"svid_file": "svid.pem", "key_file": "svid.key", "bundle_file": "bundle.pem",
                  "revocation_file": "crl.pem"}  # as the built-in CA writes a node directory


def lab_layer(topology: Topology, node: Node, scratch: str, known: Known = EMPTY,
              identity_root: str | None = None) -> dict[str, Any]:
    """What the lab sets for ``node``. ``known`` names, per config section, the settings this version
    of the agent has: a setting the agent lacks is not written (the agent would refuse the file).
    ``identity_root``: a directory holding one SVID directory per node (``ROOT/NODE/svid.pem``...),
    issued by the lab's own CA before the boot; the node's agent reads its SVID from there."""
    base = f"{scratch.rstrip('/')}/{node.name}"
    layer: dict[str, Any] = {
        "node": {"id": node.name, "state_dir": f"{base}/state", "runtime_dir": f"{base}/run"},
        "logging": {"format": "json"},
    }
    wanted: dict[str, dict[str, Any]] = {
        "mesh": {
            "interface": MESH_IF,
            "hard_interfaces": topology.hard_interfaces(node.name),
            "routing_algo": topology.routing_algo,
            "bridge_loop_avoidance": topology.bridge_loop_avoidance,
            "orig_interval": topology.orig_interval_ms,
        },
        # one bpffs pin directory per node: the nodes share the guest's mount namespace
        "probes": {"pin_path": f"/sys/fs/bpf/x0tta-{node.name}"},
        # observe, not the agent's default auto (enforce once a node has an identity): the lab's
        # scenarios and figures were measured with every frame passing; a scenario that wants the
        # guard enforcing sets it in its [agent] table
        "guard": {"mode": "observe"},
    }
    if identity_root is not None:
        where = f"{identity_root.rstrip('/')}/{node.name}"
        files = {k: f"{where}/{f}" for k, f in IDENTITY_FILES.items()}
        wanted["identity"] = {"source": "builtin", "trust_domain": LAB_TRUST_DOMAIN, **files}
    for section, values in wanted.items():
        have = known.get(section, frozenset())
        chosen = {k: v for k, v in values.items() if k in have and v is not None}
        if chosen:
            layer[section] = chosen
    return layer


def node_config(topology: Topology, node: Node, scratch: str, known: Known = EMPTY,
                identity_root: str | None = None) -> dict[str, Any]:
    return merge(merge(lab_layer(topology, node, scratch, known, identity_root), topology.agent), node.agent)


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
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"{v!r} cannot be written to TOML")


def _key(k: Any) -> str:
    text = str(k)
    return text if _BARE.fullmatch(text) else json.dumps(text)


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """TOML text for nested tables of scalars and lists (what agent configs hold)."""
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    lines = [f"{_key(k)} = {_value(v)}" for k, v in scalars]
    for k, v in tables:
        name = f"{_prefix}.{_key(k)}" if _prefix else _key(k)
        has_scalars = any(not isinstance(x, Mapping) for x in v.values())
        if has_scalars or not v:
            lines.append("")
            lines.append(f"[{name}]")
        body = to_toml(v, name)
        if body:
            lines.append(body)
    return "\n".join(lines).strip("\n") + "\n" if _prefix == "" else "\n".join(lines)
