"""The data of the loop: what was observed, what is wrong, what to do about it.

Everything here is an immutable value. One :class:`Observation` is taken per cycle (Monitor); the
detectors turn it into :class:`Symptom` values (Analyze); the policies turn symptoms into
:class:`Decision` values naming an :class:`Action` (Plan); the executor applies them (Execute); the
:class:`~x0tta.heal.core.loop.Knowledge` keeps what happened (Knowledge).

Names follow batman-adv's own (``include/uapi/linux/batman_adv.h``): an *originator* is any node
of the mesh known through its OGMs, with a *router* (the next hop neighbour) reached through an
outgoing *hard interface*; a *neighbour* is a node heard directly on a hard interface; link quality
is TQ (0..255, BATMAN_IV) or throughput (kbit/s, BATMAN_V).

Times are seconds on the clock the caller chooses for ``now`` (the service uses wall-clock time so
that incidents stored on disk keep their meaning across restarts).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TQ_MAX = 255


@dataclass(frozen=True, slots=True)
class Originator:
    orig: str  # MAC of the originator
    router: str  # MAC of the next hop neighbour
    hardif: str  # outgoing hard interface
    tq: int | None = None  # BATMAN_IV link quality, 0..255
    throughput: int | None = None  # BATMAN_V, kbit/s
    last_seen_ms: int = 0


@dataclass(frozen=True, slots=True)
class Neighbour:
    addr: str  # MAC of the neighbour's hard interface
    hardif: str
    tq: int | None = None
    throughput: int | None = None
    last_seen_ms: int = 0

    @property
    def quality(self) -> float | None:
        """One number to trend: throughput when batman-adv gives it (BATMAN_V), else TQ."""
        if self.throughput is not None:
            return float(self.throughput)
        return None if self.tq is None else float(self.tq)


@dataclass(frozen=True, slots=True)
class HardIf:
    name: str
    oper_up: bool  # IFF_RUNNING / IF_OPER_UP: the carrier
    attached: bool = True  # enslaved to the mesh interface
    active: bool = True  # BATADV_ATTR_ACTIVE
    hop_penalty: int | None = None  # per hard interface hop penalty, when the kernel has it


@dataclass(frozen=True, slots=True)
class Gateway:
    orig: str
    selected: bool
    bandwidth_down: int | None = None  # kbit/s * 100 as in the uapi; compared, never shown raw
    bandwidth_up: int | None = None


@dataclass(frozen=True, slots=True)
class ProbeStats:
    """Fast liveness probes on one hard interface towards one neighbouring agent.

    ``lost_run`` is the number of probes in a row that went missing (either direction); ``loss``
    the fraction lost in the last window of ``window`` expected probes.
    """

    hardif: str
    peer: str  # the peer's hard interface MAC (= its batman-adv neighbour address)
    window: int
    received: int
    loss: float
    lost_run: int
    rtt_ms: float | None = None
    last_rx: float | None = None  # time of the last probe heard from the peer
    # probes missing within the window before the last one heard (receive side): losses scattered
    # before the current run, the sign of a link that loses at random rather than one gone silent
    scattered: int = 0


@dataclass(frozen=True, slots=True)
class SubsystemState:
    name: str
    state: str  # ok, starting, degraded, failing
    message: str = ""


@dataclass(frozen=True, slots=True)
class Drift:
    """One mesh setting whose value differs from the desired one."""

    key: str
    desired: Any
    actual: Any


@dataclass(frozen=True, slots=True)
class AlertHeard:
    """Another node (or this one) reported a failing link of its own: ``kind`` is the symptom."""

    origin: str
    kind: str
    # its tag verified (a session's or the shared key), or this node's own: only such an alert
    # moves this node's OGM interval (an unkeyed one could spend the budget its own faults need)
    keyed: bool = True


@dataclass(frozen=True, slots=True)
class ThreatSeen:
    """A threat the guard's detectors see now about a neighbour (from its EVE-style record)."""

    mac: str  # the neighbour's MAC, aa:bb:cc:dd:ee:ff
    signature: str  # the detector's name
    severity: int  # EVE's: 1 high, 2 medium, 3 low, 4 informational
    spiffe_id: str | None = None


@dataclass(frozen=True)
class Observation:
    """Everything the loop knows about the node at one moment; built once per cycle."""

    at: float
    mesh_available: bool = True
    originators: tuple[Originator, ...] = ()  # the best entry of each originator
    neighbours: tuple[Neighbour, ...] = ()
    hardifs: tuple[HardIf, ...] = ()
    other_routes: tuple[Originator, ...] = ()  # every other entry of the originator table
    gateways: tuple[Gateway, ...] = ()
    probes: tuple[ProbeStats, ...] = ()
    subsystems: tuple[SubsystemState, ...] = ()
    drift: tuple[Drift, ...] = ()
    orig_interval_ms: int | None = None
    gw_mode: str | None = None  # off, client, server
    aggregation: bool | None = None  # OGM aggregation (batctl ag)
    alerts: tuple[AlertHeard, ...] = ()  # mesh alerts in force (x0tta.heal.core.alert)
    strained: bool = False  # this agent is itself late or over its CPU share (x0tta.heal.core.strain)
    # no kernel echo (no raw socket): a starved neighbour agent cannot be told from a dead link,
    # so silent loss takes twice the run and a suspicion moves nothing
    echo_missing: bool = False
    # the node's CPU is over strain_node_cpu busy (x0tta.heal.core.strain): every process runs late,
    # the kernel's echo replies read late too, so silent loss takes twice the run here as well
    node_busy: bool = False
    threats: tuple[ThreatSeen, ...] = ()  # the guard's findings of its last look (x0tta.guard)
    quarantined: frozenset[str] = frozenset()  # MACs the guard holds in quarantine now

    def hardif(self, name: str) -> HardIf | None:
        for h in self.hardifs:
            if h.name == name:
                return h
        return None

    def selected_gateway(self) -> str | None:
        for g in self.gateways:
            if g.selected:
                return g.orig
        return None


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class SymptomKind(enum.StrEnum):
    LINK_DOWN = "link_down"
    SILENT_LOSS = "silent_loss"
    LINK_SUSPECT = "link_suspect"
    LINK_DEGRADED = "link_degraded"
    NEIGHBOUR_LOST = "neighbour_lost"
    GATEWAY_LOST = "gateway_lost"
    GATEWAY_CHANGED = "gateway_changed"
    ROUTE_FLAPPING = "route_flapping"
    PARTITION = "partition"
    CONFIG_DRIFT = "config_drift"
    SUBSYSTEM_UNHEALTHY = "subsystem_unhealthy"
    MESH_ALERT = "mesh_alert"
    THREAT = "threat"


class ActionKind(enum.StrEnum):
    STEER_OFF = "steer_off"  # detach a hard interface, or raise its hop penalty
    RESTORE_HARDIF = "restore_hardif"  # undo of steer_off
    RESELECT_GATEWAY = "reselect_gateway"
    TUNE_ORIG_INTERVAL = "tune_orig_interval"
    RESTORE_ORIG_INTERVAL = "restore_orig_interval"  # undo of tune_orig_interval
    REAPPLY_SETTINGS = "reapply_settings"
    RESTART_SUBSYSTEM = "restart_subsystem"
    PAUSE_AGGREGATION = "pause_aggregation"  # forward OGMs at once while another node heals a link
    RESUME_AGGREGATION = "resume_aggregation"  # undo of pause_aggregation
    QUARANTINE = "quarantine"  # shut a neighbour out through the guard, for a TTL


class Op(enum.StrEnum):
    APPLY = "apply"  # a chosen remedy
    RESTORE = "restore"  # undo a remedy because its symptom cleared
    ROLLBACK = "rollback"  # undo a remedy because it did not help or made things worse


Evidence = tuple[tuple[str, Any], ...]


def evidence(**kw: Any) -> Evidence:
    return tuple(sorted(kw.items()))


@dataclass(frozen=True, slots=True)
class Symptom:
    kind: SymptomKind
    target: str  # "hardif:eth1", "link:eth1/aa:bb:..", "neigh:..", "gw", "mesh", "subsystem:mesh"
    severity: Severity
    evidence: Evidence
    onset: float  # when the condition was first seen true
    raised: float  # when hysteresis let it through

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind.value, self.target)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "target": self.target,
            "severity": self.severity.label,
            "evidence": dict(self.evidence),
            "onset": self.onset,
            "raised": self.raised,
        }


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    target: str  # what it changes: "hardif:eth1", "mesh", "gw", "subsystem:x"
    params: Evidence = ()
    disruptive: bool = False  # changes forwarding; at most one in flight per target
    blast_radius: int = 0  # neighbours/originators whose path may change
    cost: float = 1.0  # relative price: churn, overhead, risk
    expected: str = ""  # the effect the verification checks for
    verify_after: float = 1.0  # seconds before the effect is checked

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    @property
    def remedy(self) -> str:
        """The name the knowledge base learns under: the kind, and for a steer-off by hop penalty
        ``steer_off:penalty`` (a different remedy from a detach, with its own record)."""
        if self.kind == ActionKind.STEER_OFF and self.param("method") == "penalty":
            return "steer_off:penalty"
        return self.kind.value

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "target": self.target,
            "params": dict(self.params),
            "disruptive": self.disruptive,
            "blast_radius": self.blast_radius,
            "cost": self.cost,
            "expected": self.expected,
            "verify_after": self.verify_after,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    action: Action
    score: float
    rejected: str = ""  # why not chosen (empty for the chosen one)


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing the executor is asked to do, with the reasons a human can read."""

    id: str  # action record id: unique, stable across restarts
    incident: str
    op: Op
    action: Action
    symptom: tuple[str, str]
    reasons: tuple[str, ...] = ()
    alternatives: tuple[Candidate, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident": self.incident,
            "op": self.op.value,
            "action": self.action.to_json(),
            "symptom": {"kind": self.symptom[0], "target": self.symptom[1]},
            "reasons": list(self.reasons),
            "alternatives": [
                {"kind": c.action.kind.value, "target": c.action.target, "score": round(c.score, 4),
                 "rejected": c.rejected}
                for c in self.alternatives
            ],
        }


@dataclass(frozen=True, slots=True)
class Event:
    """Something the loop wants recorded, counted or logged (not acted on)."""

    name: str  # symptom_raised, symptom_cleared, incident_opened, incident_closed, action_verified, ...
    incident: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
