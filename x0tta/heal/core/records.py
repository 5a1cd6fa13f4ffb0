"""What the heal loop knows: action records, incidents, the knowledge, and a step's scratch.

A :class:`Record` is one remedy (its decision, how it went, its undo); an :class:`Incident` is one
symptom's story from raise to close; :class:`Knowledge` holds the open ones, the detectors' memory
and the success statistics. All are immutable values: a step works on a :class:`Scratch` copy and
freezes it again (:meth:`Scratch.finish`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from x0tta.config.heal import HealSettings
from x0tta.heal.core.detect import Key, Memory
from x0tta.heal.core.model import Action, ActionKind, Decision, Event, Op, Symptom
from x0tta.heal.core.plan import UNDO


class State(enum.StrEnum):
    PLANNED = "planned"  # decided and written down; the executor has not answered yet
    APPLIED = "applied"  # done; awaiting verification
    EFFECTIVE = "effective"  # verified: it helped
    FAILED = "failed"  # verified: it did not help (rolled back when it has an undo)
    REFUSED = "refused"  # not done: breaker open, rate limited, error, disabled
    DRY_RUN = "dry_run"  # would have been done


class Undo(enum.StrEnum):
    PLANNED = "planned"
    APPLIED = "applied"
    REFUSED = "refused"
    EFFECTIVE = "effective"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Record:
    """One remedy: its decision, how it went, and its undo (restore or rollback), if any."""

    id: str
    incident: str
    symptom: Key
    action: Action
    reasons: tuple[str, ...]
    state: State
    decided: float
    applied: float | None = None
    verify_at: float | None = None
    outcome: str = ""
    undo_op: Op | None = None
    undo_state: Undo | None = None
    undo_applied: float | None = None
    undo_verify_at: float | None = None
    undo_reason: str = ""
    baseline: tuple[tuple[str, Any], ...] = ()
    reapplied: int = 0  # times applied again because someone else undid it
    companion: bool = False  # faster OGMs taken together with a steer-off (shown in the record)

    @property
    def holds(self) -> bool:
        """Still occupies its target: in flight, in effect, or waiting for its undo."""
        if self.state in (State.REFUSED,):
            return False
        if self.undo_state in (Undo.APPLIED, Undo.EFFECTIVE, Undo.FAILED):
            return False
        if self.state == State.FAILED and self.action.kind not in UNDO:
            return False
        return not (self.state == State.EFFECTIVE and self.action.kind not in UNDO)

    @property
    def settled(self) -> bool:
        """Nothing more will happen to it (its undo, if any, done and verified)."""
        if self.state == State.REFUSED:
            return True
        if self.action.kind not in UNDO:
            return self.state in (State.EFFECTIVE, State.FAILED, State.DRY_RUN)
        if self.state == State.DRY_RUN:
            return self.undo_state is not None
        return self.undo_state in (Undo.EFFECTIVE, Undo.FAILED)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident": self.incident,
            "symptom": {"kind": self.symptom[0], "target": self.symptom[1]},
            "action": self.action.to_json(),
            "reasons": list(self.reasons),
            "state": self.state.value,
            "decided": self.decided,
            "applied": self.applied,
            "verify_at": self.verify_at,
            "outcome": self.outcome,
            "undo_op": self.undo_op.value if self.undo_op else None,
            "undo_state": self.undo_state.value if self.undo_state else None,
            "undo_applied": self.undo_applied,
            "undo_reason": self.undo_reason,
            "baseline": dict(self.baseline),
            "reapplied": self.reapplied,
            "companion": self.companion,
        }


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    key: Key
    opened: float
    onset: float
    severity: str
    evidence: tuple[tuple[str, Any], ...]
    closed: float | None = None
    healed: float | None = None
    resolution: str = ""
    next_attempt: float = 0.0
    resumed: float | None = None  # set when rebuilt after a restart
    notes: tuple[str, ...] = ()  # why nothing was done, the latest reason first

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "symptom": {"kind": self.key[0], "target": self.key[1]},
            "opened": self.opened,
            "onset": self.onset,
            "severity": self.severity,
            "evidence": dict(self.evidence),
            "closed": self.closed,
            "healed": self.healed,
            "status": "closed" if self.closed is not None else "open",
            "resolution": self.resolution,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Knowledge:
    settings: HealSettings
    prefix: str  # makes ids unique across restarts (the service uses its start time)
    memory: Memory = field(default_factory=Memory)
    active: dict[Key, Symptom] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)  # open ones
    by_key: dict[Key, str] = field(default_factory=dict)  # symptom -> open incident
    records: dict[str, Record] = field(default_factory=dict)  # of open incidents
    stats: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    seq: int = 0
    events: tuple[Event, ...] = ()  # of the last step/settle, for the service to log and store

    def incident_json(self, incident_id: str) -> dict[str, Any] | None:
        inc = self.incidents.get(incident_id)
        if inc is None:
            return None
        data = inc.to_json()
        data["actions"] = [r.to_json() for r in self.records.values() if r.incident == incident_id]
        return data

    @property
    def busy(self) -> bool:
        """Something to watch closely: the service polls fast while this holds."""
        return bool(self.incidents) or bool(self.active) or any(h.true_since for h in self.memory.hyst.values())


def initial(
    settings: HealSettings, prefix: str, stats: Mapping[tuple[str, str], tuple[int, int]] | None = None
) -> Knowledge:
    return Knowledge(settings=settings, prefix=prefix, stats=dict(stats or {}))


class Scratch:
    """Mutable scratch for one step; the result is frozen again before it leaves the step."""

    def __init__(self, k: Knowledge, now: float) -> None:
        self.k = k
        self.now = now
        self.incidents = dict(k.incidents)
        self.by_key = dict(k.by_key)
        self.records = dict(k.records)
        self.stats = dict(k.stats)
        self.seq = k.seq
        self.events: list[Event] = []
        self.decisions: list[Decision] = []

    def next_id(self, kind: str) -> str:
        self.seq += 1
        return f"{self.k.prefix}-{kind}{self.seq}"

    def event(self, name: str, inc: str = "", **data: Any) -> None:
        self.events.append(Event(name=name, incident=inc, data=data))

    def learn(self, rec: Record, ok: bool, weight: int = 1) -> None:
        key = (rec.symptom[0], rec.action.remedy)
        good, bad = self.stats.get(key, (0, 0))
        self.stats[key] = (good + weight, bad) if ok else (good, bad + weight)

    def finish(self, **changes: Any) -> Knowledge:
        return replace(
            self.k,
            incidents=self.incidents,
            by_key=self.by_key,
            records=self.records,
            stats=self.stats,
            seq=self.seq,
            events=tuple(self.events),
            **changes,
        )


def record_from_json(a: Mapping[str, Any]) -> Record:
    """A record as :meth:`Record.to_json` wrote it (the knowledge store keeps them so)."""
    act = a["action"]
    params = act.get("params", {})
    action = Action(
        kind=ActionKind(act["kind"]),
        target=act["target"],
        params=tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())),
        disruptive=act.get("disruptive", False),
        blast_radius=act.get("blast_radius", 0),
        cost=act.get("cost", 1.0),
        expected=act.get("expected", ""),
        verify_after=act.get("verify_after", 1.0),
    )
    return Record(
        id=a["id"],
        incident=a["incident"],
        symptom=(a["symptom"]["kind"], a["symptom"]["target"]),
        action=action,
        reasons=tuple(a.get("reasons", ())),
        state=State(a["state"]),
        decided=a["decided"],
        applied=a.get("applied"),
        verify_at=a.get("verify_at"),
        outcome=a.get("outcome", ""),
        undo_op=Op(a["undo_op"]) if a.get("undo_op") else None,
        undo_state=Undo(a["undo_state"]) if a.get("undo_state") else None,
        undo_applied=a.get("undo_applied"),
        undo_reason=a.get("undo_reason", ""),
        baseline=tuple(sorted(a.get("baseline", {}).items())),
        reapplied=a.get("reapplied", 0),
        companion=a.get("companion", False),
    )
