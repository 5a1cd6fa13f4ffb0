"""Check functions that ``check`` steps run inside the lab guest (see docs/lab.md, "Checks").

Each gets the running lab (:class:`x0tta.lab.guest.GuestLab`) and, for ``each_node = true``, the
node; what it returns lands in ``timeline.json`` under ``measurements.checks.<label>``; an exception
(an assert) marks the check failed with its message.
"""

from __future__ import annotations

import socket


def sees_every_other_node(lab, node):
    """batctl on ``node`` has a best route to every other node of the lab."""
    routes = lab.routes(node)
    others = {n.name for n in lab.topology.nodes} - {node}
    assert set(routes) == others, f"{node} sees {sorted(routes)}, not {sorted(others)}"
    return routes


def socket_in_namespace(lab, node):
    """Code run inside ``lab.netns(node)`` sees that node's interfaces."""
    with lab.netns(node):
        names = [name for _, name in socket.if_nameindex()]
    assert "bat0" in names and all(f"to-{peer}" in names for peer in lab.topology.neighbours(node)), names
    return sorted(names)


AGENT_VIEWS = {"originators": "originators", "neighbors": "neighbors", "gateways": "gateways",
               "interfaces": "hardifs", "settings": "mesh"}
ENTRY_KEYS = ("orig_address", "neigh_address", "hard_ifindex", "router")
MOVING = ("last_seen_msecs",)  # ages differ by the time between the two reads


def _batctl_form(entry):
    """The agent's JSON (x0tta.mesh.core.views.to_json) and batctl's JSON in one vocabulary."""
    out = {}
    for k, v in entry.items():
        if v is None:
            continue
        if isinstance(v, dict) and "raw" in v:
            v = v["raw"]
        if k == "flag_best":
            k = "best"
        if k == "gw_mode" and isinstance(v, str):
            v = {"off": 0, "client": 1, "server": 2}[v]
        out[k] = v
    return out


def _differences(ours, theirs):
    """{(entry, field): what differs} between the agent's view and one batctl reading."""
    ours = [ours] if isinstance(ours, dict) else ours
    theirs = [theirs] if isinstance(theirs, dict) else theirs
    key = lambda e: tuple(str(e.get(k)) for k in ENTRY_KEYS)  # noqa: E731
    a = sorted((_batctl_form(e) for e in ours), key=key)
    b = sorted((_batctl_form(e) for e in theirs), key=key)
    if [key(x) for x in a] != [key(x) for x in b]:
        return {("entries", ""): f"entries differ: agent {[key(x) for x in a]} batctl {[key(x) for x in b]}"}
    out = {}
    for x, y in zip(a, b, strict=True):
        for k, v in y.items():
            if k in MOVING:
                if abs(x.get(k, -10_000) - v) > 1500:
                    out[(key(x), k)] = f"{key(x)} {k}: agent {x.get(k)} batctl {v}"
            elif k != "mesh_ifname" and x.get(k) != v:
                out[(key(x), k)] = f"{key(x)} {k}: agent {x.get(k)!r} batctl {v!r}"
    return out


def agent_views_match_batctl(lab, node, attempts=5):
    """The node's agent (admin API ``mesh.<view>``) and batctl report the same originators,
    neighbours, gateways, hard interfaces and mesh settings.

    Two processes cannot read at the same instant and TQ moves with every OGM, so batctl is read
    before and after the agent: a field agrees when it equals either reading (the agent's dump
    happened in between). A view that still differs is read again, up to ``attempts`` times."""
    counts = {}
    for view, table in AGENT_VIEWS.items():
        diff = []
        for _ in range(attempts):
            before = lab.batctl_json(node, table)
            ours = lab.agent_call(node, f"mesh.{view}")
            after = lab.batctl_json(node, table)
            first, second = _differences(ours, before), _differences(ours, after)
            diff = [msg for k, msg in first.items() if k in second]
            if not diff:
                break
        assert not diff, f"{node} {view}: {diff[:5]}"
        counts[view] = 1 if isinstance(ours, dict) else len(ours)
    return counts
