"""The mesh reconcile planner: desired settings + the kernel's current state -> actions (pure).

Why: the agent keeps batman-adv as the config says, whoever changed it. Like Tailscale's
``Router.Set``, applying is idempotent: the same desired settings against a state that already
matches plan nothing, so the planner can run every period and on every config event.

Each :class:`Action` names what it does in the client's vocabulary (``create_mesh``, ``attach``,
``set_mesh``, ``set_hardif``, ``up``) and carries ``drift``: for each value, what the kernel had and
what is wanted, so the executor can log and count exactly what was corrected. Values are named
after batadv attributes (``orig_interval``, ``gw_bandwidth_down`` in the kernel's 100 kbit/s units).

Not planned, on purpose: changing the routing algorithm of an existing interface (it needs the
mesh torn down; a ``warn`` action reports it) and detaching hard interfaces nobody listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from x0tta.config.mesh import HardIfSettings, MeshSettings
from x0tta.mesh.core.batadv import GwMode, HardIf, MeshInfo

GW_MODE = {"off": GwMode.OFF, "client": GwMode.CLIENT, "server": GwMode.SERVER}


@dataclass(frozen=True)
class Action:
    kind: str  # create_mesh | attach | up | set_mesh | set_hardif | warn
    target: str  # interface name (mesh or hard interface)
    values: Mapping[str, Any] = field(default_factory=dict)
    drift: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (current, desired)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "values": dict(self.values),
            "drift": {k: list(v) for k, v in self.drift.items()},
            "reason": self.reason,
        }


def desired_mesh(s: MeshSettings) -> dict[str, Any]:
    """The SET_MESH attributes the settings ask for."""
    want: dict[str, Any] = {
        "orig_interval": s.orig_interval,
        "hop_penalty": s.hop_penalty,
        "gw_mode": int(GW_MODE[s.gw_mode]),
        "gw_bandwidth_down": max(1, round(s.gw_bandwidth_down / 100)),
        "gw_bandwidth_up": max(1, round(s.gw_bandwidth_up / 100)),
        "bridge_loop_avoidance_enabled": s.bridge_loop_avoidance,
        "distributed_arp_table_enabled": s.distributed_arp_table,
        "aggregated_ogms_enabled": s.aggregation,
        "fragmentation_enabled": s.fragmentation,
        "bonding_enabled": s.bonding,
        "multicast_forceflood_enabled": s.multicast_forceflood,
        "multicast_fanout": s.multicast_fanout,
        "ap_isolation_enabled": s.ap_isolation,
    }
    if s.gw_sel_class:
        want["gw_sel_class"] = s.gw_sel_class
    return want


def desired_hardif(h: HardIfSettings) -> dict[str, Any]:
    """The SET_HARDIF attributes; THROUGHPUT_OVERRIDE is in 100 kbit/s units like the gateway bandwidths."""
    return {
        "hop_penalty": h.hop_penalty,
        "elp_interval": h.elp_interval,
        "throughput_override": round(h.throughput_override / 100),
    }


def diff(current: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Values whose current value differs; a value the kernel does not report is left alone
    (an older batman-adv without that setting), so the plan converges instead of looping."""
    return {k: (current[k], v) for k, v in want.items() if k in current and current[k] != v}


def plan(
    s: MeshSettings,
    mesh: MeshInfo | None,
    hardifs: Iterable[HardIf],
    mesh_up: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> list[Action]:
    """What to do so that the kernel matches ``s``. ``mesh`` None: the interface does not exist.

    ``overrides`` are deliberate, temporary departures from the config made by the healing loop
    (x0tta.heal), which are not drift: ``{"detached": {hard interfaces taken out on purpose},
    "mesh": {attribute: value}, "hardif": {name: {attribute: value}}}``. They win over ``s``.
    """
    ov = overrides or {}
    detached = set(ov.get("detached") or ())
    actions: list[Action] = []
    name = s.interface
    if mesh is None:
        if s.create:
            missing = "mesh interface missing"
            actions.append(Action("create_mesh", name, {"routing_algo": s.routing_algo}, reason=missing))
            listed = "hard interface listed in mesh.hard_interfaces"
            actions.extend(Action("attach", h, reason=listed) for h in s.hard_interfaces if h not in detached)
            actions.append(Action("up", name, reason="new mesh interface"))
            want = {**desired_mesh(s), **(ov.get("mesh") or {})}
            actions.append(Action("set_mesh", name, want, reason="new mesh interface"))
        else:
            actions.append(Action("warn", name, reason="mesh interface missing and mesh.create is false"))
        return actions
    if mesh.algo_name is not None and mesh.algo_name != s.routing_algo:
        actions.append(
            Action(
                "warn",
                name,
                drift={"routing_algo": (mesh.algo_name, s.routing_algo)},
                reason="routing algorithm differs; recreate the interface to change it",
            )
        )
    attached = {h.hard_ifname: h for h in hardifs}
    for h in s.hard_interfaces:
        if h not in attached and h not in detached:
            actions.append(Action("attach", h, reason="hard interface listed in mesh.hard_interfaces"))
    if not mesh_up and s.create:
        actions.append(Action("up", name, reason="mesh interface down"))
    drift = diff(mesh.settings(), {**desired_mesh(s), **(ov.get("mesh") or {})})
    if drift:
        actions.append(
            Action("set_mesh", name, {k: v for k, (_c, v) in drift.items()}, drift, reason="settings differ")
        )
    hardif_ov = ov.get("hardif") or {}
    for hname in sorted(set(s.hardif) | set(hardif_ov)):
        cur = attached.get(hname)
        if cur is None:
            continue  # not (yet) part of the mesh; planned again once attached
        want = {**(desired_hardif(s.hardif[hname]) if hname in s.hardif else {}), **hardif_ov.get(hname, {})}
        hdrift = diff(cur.settings(), want)
        if hdrift:
            values = {k: v for k, (_c, v) in hdrift.items()}
            actions.append(Action("set_hardif", hname, values, hdrift, reason="settings differ"))
    return actions
