"""What the heal loop knows, and the lifecycles of its incidents and action records, as data.

Rules (after h11's ``_state.py``):

* An action **record** is in one *phase*: the state of the action (:class:`State`) and the state of
  its undo (:class:`Undo`, ``None`` before one is decided). An **incident** is open, healed (one of
  its actions helped) or closed (:class:`IncidentState`, read from its ``healed`` and ``closed``
  times).
* Every change of a phase or an incident's state is an event (:class:`RecordEvent`,
  :class:`IncidentEvent`) looked up in :data:`RECORD_TRANSITIONS` or :data:`INCIDENT_TRANSITIONS`
  by :func:`transition`, the only place that changes them. What is not in a table is refused with
  :class:`HealStateError`, and the record or incident stays as it was.
* The step meets such an error inside :meth:`Scratch.atomic`: every change it made for that record
  or incident in that phase of the step is dropped, and a ``transition_refused`` event goes to the
  log (``heal_transition_refused``). The daemon runs on; the record stays where it was (and is
  refused again on each step that tries the same move, which the log shows). ``docs/heal.md``
  ("Lifecycle of an action and an incident") has both tables; a test keeps it equal to these.

The tables hold every move the loop makes and no other: a record that was never applied is never
verified, a restore is never planned for a failed action nor a rollback for an effective one, a
closed incident is never healed, and so on.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, overload

from x0tta.common.errors import PermanentError
from x0tta.config.heal import HealSettings
from x0tta.heal.core.budget import LOAD_RAISING, LoadUse, advance
from x0tta.heal.core.detect import Key, Memory
from x0tta.heal.core.model import Action, ActionKind, Decision, Event, Op, Symptom, SymptomKind
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


# Symptoms counted over the flap window: their incidents alone do not make the loop poll fast.
SLOW_KINDS = frozenset({SymptomKind.ROUTE_FLAPPING, SymptomKind.GATEWAY_CHANGED})

Phase = tuple[State, Undo | None]
"""Where a record is: its action's state and its undo's (``None``: no undo decided)."""


class RecordEvent(enum.StrEnum):
    APPLIED = "applied"  # the executor did it
    DRY_RUN = "dry_run"  # the executor only logged it
    REFUSED = "refused"  # the executor refused it: breaker open, rate limited, error, disabled
    HELPED = "helped"  # verified: its symptom cleared, or its expected effect holds
    DID_NOT_HELP = "did_not_help"  # verified: neither
    HARM = "harm"  # another link of this node went silent right after the steer-off
    PARTITION = "partition"  # the mesh partitioned while the link was steered off
    REAPPLY = "reapply"  # someone else undid it while its symptom lasts: it is applied again
    RESTORE = "restore"  # its symptom cleared: undo it (a dry run's undo is only recorded)
    OVER_BUDGET = "over_budget"  # a load-raising remedy in force past its load budget: undo it
    ROLLBACK = "rollback"  # it failed or did harm: undo it
    RETRY_UNDO = "retry_undo"  # the executor refused the undo; its incident's retry time came
    UNDO_APPLIED = "undo_applied"  # the executor did the undo
    UNDO_REFUSED = "undo_refused"  # the executor refused the undo
    UNDO_HELD = "undo_held"  # the undo's verification time passed without its symptom back
    SYMPTOM_RETURNED = "symptom_returned"  # the symptom came back after a restore: it failed
    RESUMED = "resumed"  # rebuilt after a restart: what was in flight is taken as done


_S, _U, _E = State, Undo, RecordEvent
_UNDONE = (_S.EFFECTIVE, _S.FAILED)  # the states from which an undo runs (restore, rollback)

RECORD_TRANSITIONS: dict[tuple[Phase, RecordEvent], Phase] = {
    # the executor's answer to the decision
    ((_S.PLANNED, None), _E.APPLIED): (_S.APPLIED, None),
    ((_S.PLANNED, None), _E.DRY_RUN): (_S.DRY_RUN, None),
    ((_S.PLANNED, None), _E.REFUSED): (_S.REFUSED, None),
    ((_S.PLANNED, None), _E.RESUMED): (_S.APPLIED, None),  # the answer was lost: every undo is idempotent
    # verification, and what can still go wrong afterwards
    ((_S.APPLIED, None), _E.HELPED): (_S.EFFECTIVE, None),
    ((_S.APPLIED, None), _E.DID_NOT_HELP): (_S.FAILED, None),
    ((_S.APPLIED, None), _E.HARM): (_S.FAILED, None),
    ((_S.EFFECTIVE, None), _E.HARM): (_S.FAILED, None),
    ((_S.EFFECTIVE, None), _E.PARTITION): (_S.FAILED, None),
    ((_S.APPLIED, None), _E.REAPPLY): (_S.PLANNED, None),
    ((_S.EFFECTIVE, None), _E.REAPPLY): (_S.PLANNED, None),
    # the undo: a restore of what helped, a rollback of what did not
    ((_S.EFFECTIVE, None), _E.RESTORE): (_S.EFFECTIVE, _U.PLANNED),
    ((_S.DRY_RUN, None), _E.RESTORE): (_S.DRY_RUN, _U.EFFECTIVE),
    ((_S.EFFECTIVE, None), _E.OVER_BUDGET): (_S.EFFECTIVE, _U.PLANNED),  # a restore, whatever still needs it
    ((_S.DRY_RUN, None), _E.OVER_BUDGET): (_S.DRY_RUN, _U.EFFECTIVE),
    ((_S.FAILED, None), _E.ROLLBACK): (_S.FAILED, _U.PLANNED),
    **{((s, _U.PLANNED), _E.UNDO_APPLIED): (s, _U.APPLIED) for s in _UNDONE},
    **{((s, _U.PLANNED), _E.UNDO_REFUSED): (s, _U.REFUSED) for s in _UNDONE},
    **{((s, _U.PLANNED), _E.RESUMED): (s, _U.REFUSED) for s in _UNDONE},  # re-issued: idempotent
    **{((s, _U.REFUSED), _E.RETRY_UNDO): (s, _U.PLANNED) for s in _UNDONE},
    **{((s, _U.APPLIED), _E.UNDO_HELD): (s, _U.EFFECTIVE) for s in _UNDONE},
    **{((s, _U.APPLIED), _E.RESUMED): (s, _U.EFFECTIVE) for s in _UNDONE},
    ((_S.EFFECTIVE, _U.APPLIED), _E.SYMPTOM_RETURNED): (_S.EFFECTIVE, _U.FAILED),
}
"""``(phase, event) -> phase`` of an action record. Not in the table: :class:`HealStateError`."""


class IncidentState(enum.StrEnum):
    OPEN = "open"
    HEALED = "healed"  # an action of it helped; still open until its symptom cleared and all is undone
    CLOSED = "closed"


class IncidentEvent(enum.StrEnum):
    HEAL = "heal"  # the first of its actions verified effective
    CLOSE = "close"  # its symptom cleared and all its actions are settled


INCIDENT_TRANSITIONS: dict[tuple[IncidentState, IncidentEvent], IncidentState] = {
    (IncidentState.OPEN, IncidentEvent.HEAL): IncidentState.HEALED,
    (IncidentState.OPEN, IncidentEvent.CLOSE): IncidentState.CLOSED,
    (IncidentState.HEALED, IncidentEvent.CLOSE): IncidentState.CLOSED,
}
"""``(state, event) -> state`` of an incident. Not in the table: :class:`HealStateError`."""


def phase_name(phase: Phase) -> str:
    state, undo = phase
    return state.value if undo is None else f"{state.value}, undo {undo.value}"


class HealStateError(PermanentError):
    """A record or incident was asked to move in a way its lifecycle does not allow."""

    def __init__(self, item: str, state: str, event: str, message: str = "") -> None:
        super().__init__(message or f"{item}: {event} is not allowed in state {state}")
        self.item = item
        self.state = state
        self.event = event


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
    companion: bool = False  # faster OGMs taken together with a steer-off or an alert's pause (shown in the record)

    @property
    def phase(self) -> Phase:
        return (self.state, self.undo_state)

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

    @property
    def state(self) -> IncidentState:
        if self.closed is not None:
            return IncidentState.CLOSED
        return IncidentState.OPEN if self.healed is None else IncidentState.HEALED

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


_STATE_FIELDS = frozenset({"state", "undo_state", "healed", "closed"})


@overload
def transition(item: Record, event: RecordEvent, **changes: Any) -> Record: ...
@overload
def transition(item: Incident, event: IncidentEvent, **changes: Any) -> Incident: ...
def transition(item: Record | Incident, event: RecordEvent | IncidentEvent, **changes: Any) -> Record | Incident:
    """``item`` after ``event``, with ``changes`` to its other fields; :class:`HealStateError` if its
    lifecycle table has no such move. An incident's ``healed`` or ``closed`` time, which make its
    state, is given in ``changes`` and must make the state the table says."""
    if isinstance(item, Record):
        if _STATE_FIELDS.intersection(changes):
            raise TypeError("the table sets a record's phase, not the caller")
        nxt = RECORD_TRANSITIONS.get((item.phase, event))
        if nxt is None:
            raise HealStateError(item.id, phase_name(item.phase), str(event))
        return replace(item, state=nxt[0], undo_state=nxt[1], **changes)
    to = INCIDENT_TRANSITIONS.get((item.state, event))
    if to is None:
        raise HealStateError(item.id, item.state.value, str(event))
    moved = replace(item, **changes)
    if moved.state != to:
        raise HealStateError(item.id, item.state.value, str(event),
                             f"{item.id}: {event} leaves it {moved.state.value}, not {to.value}")
    return moved


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
    load: dict[ActionKind, LoadUse] = field(default_factory=dict)  # load budget spent (budget.py)

    def incident_json(self, incident_id: str) -> dict[str, Any] | None:
        inc = self.incidents.get(incident_id)
        if inc is None:
            return None
        data = inc.to_json()
        data["actions"] = [r.to_json() for r in self.records.values() if r.incident == incident_id]
        return data

    @property
    def busy(self) -> bool:
        """Something to watch closely: the service polls fast while this holds.

        Symptoms counted over the flap window (:data:`SLOW_KINDS`) do not hold it on their own: a
        poll a second sees every route change, and a 20-node lab mesh, whose routes alternate
        between paths of equal quality for as long as it runs, kept every agent polling netlink
        three times as often for nothing. An action of theirs in flight does hold it."""
        if any(k[0] not in SLOW_KINDS for k in self.active) or any(
                inc.key[0] not in SLOW_KINDS for inc in self.incidents.values()):
            return True
        if any(h.true_since for k, h in self.memory.hyst.items() if k[0] not in SLOW_KINDS):
            return True
        return any(r.state in (State.PLANNED, State.APPLIED) or r.undo_state in (Undo.PLANNED, Undo.APPLIED)
                   for r in self.records.values())


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
        self.load = dict(k.load)
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

    def refused(self, exc: HealStateError, inc: str) -> None:
        self.event("transition_refused", inc, id=exc.item, state=exc.state, move=exc.event, reason=str(exc))

    @contextmanager
    def atomic(self, inc: str) -> Iterator[None]:
        """What the block changes happens whole or not at all: a move its lifecycle refuses
        (:class:`HealStateError`) drops every change, decision and event of the block and is
        reported as a ``transition_refused`` event of incident ``inc`` instead."""
        saved = (dict(self.records), dict(self.incidents), dict(self.by_key), dict(self.stats), self.seq)
        events, decisions = len(self.events), len(self.decisions)
        try:
            yield
        except HealStateError as exc:
            self.records, self.incidents, self.by_key, self.stats, self.seq = saved
            del self.events[events:], self.decisions[decisions:]
            self.refused(exc, inc)

    def finish(self, **changes: Any) -> Knowledge:
        """The knowledge after this step, settle or resume; the load budget's accounts sampled
        now, from the records that hold a load-raising remedy."""
        on = {r.action.kind for r in self.records.values() if r.action.kind in LOAD_RAISING and r.holds}
        return replace(
            self.k,
            incidents=self.incidents,
            by_key=self.by_key,
            records=self.records,
            stats=self.stats,
            seq=self.seq,
            events=tuple(self.events),
            load=advance(self.load, on, self.now, self.k.settings),
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
