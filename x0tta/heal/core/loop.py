"""The MAPE-K step: ``step(knowledge, observation, now) -> (knowledge, decisions)``.

One call is one cycle of the loop, computed without side effects; the service applies the
decisions (through the executor) and feeds the results back with :func:`settle`. Within a step:

1. **Analyze** - detectors and hysteresis (:mod:`~x0tta.heal.core.detect`) give the active
   symptoms; a newly raised symptom opens an incident, or rejoins the open incident of the same
   symptom (a flapping link stays one incident, not a storm of them).
2. **Verify** - every applied action whose deadline passed is judged against the observation:
   its symptom cleared, or its own expected effect holds (e.g. no originator routed through a
   steered-off interface, no originators lost). One that did not help is rolled back. The outcome
   updates the success statistics that rank actions next time.
3. **Undo** - a remedy whose symptom has cleared (and no other symptom needs it) is restored;
   a restore is itself verified: if the symptom returns within ``restore_verify_after``, the
   restore failed (which counts against its circuit breaker in the executor).
4. **Plan** - each open incident with an active symptom and nothing in flight gets the best
   candidate (:mod:`~x0tta.heal.core.plan`), unless the action's target already has a disruptive
   action of another incident in flight: at most one disruptive action per target at a time.
5. **Close** - an incident whose symptom cleared and whose actions are all settled is closed.

The knowledge is an immutable value; the knowledge *store* (SQLite) persists what the service
reads out of it (:meth:`Knowledge.incident_json`), and :func:`resume` rebuilds it after a restart.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from x0tta.config.heal import HealSettings
from x0tta.heal.core.detect import Key, Memory, analyze, carrier_down, hysteresis
from x0tta.heal.core.model import (
    Action,
    ActionKind,
    Candidate,
    Decision,
    Event,
    Observation,
    Op,
    Symptom,
    SymptomKind,
    evidence,
)
from x0tta.heal.core.plan import UNDO, _hardif_of, candidates, tune_orig_interval


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


class _Step:
    """Mutable scratch for one step; the result is frozen again before it leaves :func:`step`."""

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


def step(k: Knowledge, obs: Observation, now: float) -> tuple[Knowledge, tuple[Decision, ...]]:
    s = k.settings
    memory, conds = analyze(k.memory, obs, s, now)
    hyst, raised, cleared, active = hysteresis(k.memory.hyst, conds, s, now, carrier_down(obs))
    memory = replace(memory, hyst=hyst)
    st = _Step(k, now)
    for sym in cleared:
        st.event("symptom_cleared", st.by_key.get(sym.key, ""), symptom=sym.to_json())
    for sym in raised:
        _open(st, sym)
    for key, sym in active.items():  # keep the incident's evidence current
        inc_id = st.by_key.get(key)
        if inc_id is not None and inc_id in st.incidents:
            st.incidents[inc_id] = replace(st.incidents[inc_id], evidence=sym.evidence, severity=sym.severity.label)
    _verify(st, obs, active)
    _undo(st, obs, active)
    _plan(st, obs, active)
    _close(st, active, obs)
    return st.finish(memory=memory, active=active), tuple(st.decisions)


def _open(st: _Step, sym: Symptom) -> None:
    inc_id = st.by_key.get(sym.key)
    if inc_id is not None and inc_id in st.incidents:
        st.event("symptom_raised", inc_id, symptom=sym.to_json(), reopened=True)
        if sym.kind == SymptomKind.MESH_ALERT:
            return  # a new alert is news from elsewhere, not a restore gone wrong
        # a restore that let the symptom come back failed
        for rid, rec in list(st.records.items()):
            if rec.incident == inc_id and rec.undo_op == Op.RESTORE and rec.undo_state == Undo.APPLIED:
                st.records[rid] = replace(rec, undo_state=Undo.FAILED, undo_reason="the symptom came back")
                st.event("verified", inc_id, id=f"{rid}/undo", ok=False, op="restore",
                         kind=UNDO[rec.action.kind].value, target=rec.action.target, reason="the symptom came back")
        return
    inc_id = st.next_id("i")
    inc = Incident(
        id=inc_id,
        key=sym.key,
        opened=sym.raised,
        onset=sym.onset,
        severity=sym.severity.label,
        evidence=sym.evidence,
    )
    st.incidents[inc_id] = inc
    st.by_key[sym.key] = inc_id
    st.event("incident_opened", inc_id, kind=sym.kind.value, target=sym.target,
             time_to_detect=max(0.0, sym.raised - sym.onset))
    st.event("symptom_raised", inc_id, symptom=sym.to_json(), reopened=False)


def _effect(rec: Record, obs: Observation, s: HealSettings) -> tuple[bool, str]:
    """Does the observation show the action's expected effect?"""
    a = rec.action
    base = dict(rec.baseline)
    if a.kind == ActionKind.STEER_OFF:
        hardif = a.param("hardif")
        h = obs.hardif(hardif)
        if a.param("method") == "detach":
            if h is not None and h.attached:
                return False, f"{hardif} is still attached"
        elif h is not None and h.hop_penalty is not None and h.hop_penalty != a.param("hop_penalty"):
            return False, f"hop penalty of {hardif} is {h.hop_penalty}"
        before = int(base.get("originators", 0))
        lost = before - len(obs.originators)
        if lost >= s.partition_min_lost and lost >= before * s.partition_fraction:
            return False, f"{lost} of {before} originators lost since steering off {hardif}"
        if a.param("method") == "detach":
            via = sum(1 for o in obs.originators if o.hardif == hardif)
            if via:
                return False, f"{via} originators still routed through {hardif}"
        else:  # a penalty keeps the link: the neighbour's own entry stays on it, the rest must move
            via = sum(1 for o in obs.originators if o.hardif == hardif and o.orig != o.router)
            if via:
                return False, f"{via} originators still routed through {hardif} despite its hop penalty"
        return True, f"traffic steered off {hardif}; {len(obs.originators)} originators reachable"
    if a.kind == ActionKind.TUNE_ORIG_INTERVAL:
        want = a.param("interval_ms")
        if obs.orig_interval_ms != want:
            return False, f"originator interval is {obs.orig_interval_ms} ms, not {want}"
        return True, f"originator interval {want} ms"
    if a.kind == ActionKind.PAUSE_AGGREGATION:
        return (obs.aggregation is False), ("OGM aggregation off" if obs.aggregation is False
                                            else f"OGM aggregation is {obs.aggregation}")
    if a.kind == ActionKind.RESELECT_GATEWAY:
        gw = obs.selected_gateway()
        return (gw is not None), (f"gateway {gw} selected" if gw else "no gateway selected")
    if a.kind == ActionKind.REAPPLY_SETTINGS:
        return (not obs.drift), ("settings as desired" if not obs.drift else f"{len(obs.drift)} settings still differ")
    if a.kind == ActionKind.RESTART_SUBSYSTEM:
        name = a.param("subsystem")
        bad = [x for x in obs.subsystems if x.name == name and x.state == "failing"]
        return (not bad), (f"{name} still failing" if bad else f"{name} recovered")
    return True, "no check"


def _verify(st: _Step, obs: Observation, active: dict[Key, Symptom]) -> None:
    s = st.k.settings
    partition = (SymptomKind.PARTITION.value, "mesh") in active
    for rid, rec in list(st.records.items()):
        if _undone_by_others(rec, obs, active) and rec.reapplied < MAX_REAPPLY:
            rec = replace(rec, state=State.PLANNED, outcome="re-applied: undone by someone else",
                          reapplied=rec.reapplied + 1)
            st.records[rid] = rec
            st.decisions.append(Decision(
                id=rid, incident=rec.incident, op=Op.APPLY, action=rec.action, symptom=rec.symptom,
                reasons=(f"{rec.action.target} was restored by someone else (e.g. a mesh reconcile) while "
                         f"{rec.symptom[0]} lasts; applying again ({rec.reapplied}/{MAX_REAPPLY})",),
            ))
            continue
        if harm := _harm(rec, active, st.now, s):
            # the steer-off moved traffic onto a link that failed right after: roll it back at once
            # (batman-adv alone would have both links) and weigh it twice in the ranking
            st.learn(rec, False, weight=HARM_WEIGHT)
            rec = replace(rec, state=State.FAILED, outcome=harm)
            st.event("verified", rec.incident, id=rid, ok=False, op="apply", kind=rec.action.kind.value,
                     target=rec.action.target, reason=harm)
            st.event("harm", rec.incident, id=rid, kind=rec.action.kind.value, target=rec.action.target,
                     reason=harm)
            st.records[rid] = _undo_decision(st, rec, Op.ROLLBACK, harm)
        elif rec.state == State.APPLIED and rec.verify_at is not None and st.now >= rec.verify_at:
            if rec.symptom not in active:
                ok, why = True, "the symptom cleared"
            else:
                ok, why = _effect(rec, obs, s)
            rec = replace(rec, state=State.EFFECTIVE if ok else State.FAILED, outcome=why)
            st.learn(rec, ok)
            st.event("verified", rec.incident, id=rid, ok=ok, op="apply", kind=rec.action.kind.value,
                     target=rec.action.target, reason=why)
            if ok:
                inc = st.incidents.get(rec.incident)
                if inc is not None and inc.healed is None:
                    healed = rec.applied if rec.applied is not None else st.now
                    st.incidents[rec.incident] = replace(inc, healed=healed)
                    st.event("healed", rec.incident, time_to_heal=max(0.0, healed - inc.onset),
                             action=rec.action.kind.value)
            elif rec.action.kind in UNDO:
                rec = _undo_decision(st, rec, Op.ROLLBACK, f"did not help: {why}")
            st.records[rid] = rec
        elif (
            partition  # a steer-off judged good earlier; right after one, originators reachable
            and rec.action.kind == ActionKind.STEER_OFF  # only through that link vanish for an OGM
            and rec.state == State.EFFECTIVE  # interval or two: its own verification judges that
            and rec.undo_state is None
            and rec.symptom[0] != SymptomKind.PARTITION
        ):
            st.learn(rec, False)
            rec = replace(rec, state=State.FAILED, outcome="partition while steered off")
            st.event("verified", rec.incident, id=rid, ok=False, op="apply", kind=rec.action.kind.value,
                     target=rec.action.target, reason=rec.outcome)
            st.records[rid] = _undo_decision(st, rec, Op.ROLLBACK, "the mesh partitioned while steered off")
        if rec.undo_state == Undo.APPLIED and rec.undo_verify_at is not None and st.now >= rec.undo_verify_at:
            st.records[rid] = replace(rec, undo_state=Undo.EFFECTIVE)
            st.event("verified", rec.incident, id=f"{rid}/undo", ok=True, op=rec.undo_op.value if rec.undo_op else "",
                     kind=UNDO[rec.action.kind].value, target=rec.action.target, reason="undo held")


MAX_REAPPLY = 5
HARM_WEIGHT = 2  # a remedy that did harm counts as two failures of it


def _harm(rec: Record, active: dict[Key, Symptom], now: float, s: HealSettings) -> str:
    """Why the steer-off ``rec`` did harm, or "": within ``harm_window`` of its application,
    another hard interface of this node was confirmed silent (raised after the steer-off)."""
    if rec.action.kind != ActionKind.STEER_OFF or rec.state not in (State.APPLIED, State.EFFECTIVE):
        return ""
    if rec.undo_state is not None or rec.applied is None or now - rec.applied > s.harm_window:
        return ""
    mine = rec.action.param("hardif")
    for (kind, target), sym in active.items():
        if kind == SymptomKind.SILENT_LOSS and _hardif_of(target) != mine and sym.raised >= rec.applied:
            return f"harm: {target} went silent {sym.raised - rec.applied:.1f} s after steering off {mine}"
    return ""


def _undone_by_others(rec: Record, obs: Observation, active: dict[Key, Symptom]) -> bool:
    """An applied detach found attached again (e.g. by a reconcile) while its symptom lasts."""
    if rec.state not in (State.APPLIED, State.EFFECTIVE) or rec.undo_state is not None:
        return False
    if rec.symptom not in active:
        return False
    if rec.action.kind != ActionKind.STEER_OFF or rec.action.param("method") != "detach":
        return False
    h = obs.hardif(rec.action.param("hardif"))
    return h is not None and h.attached


def _undo_action(rec: Record) -> Action:
    a = rec.action
    kind = UNDO[a.kind]
    if kind == ActionKind.RESTORE_HARDIF:
        expected = f"{a.param('hardif')} attached again with hop penalty {a.param('previous_hop_penalty')}"
    elif kind == ActionKind.RESUME_AGGREGATION:
        expected = "OGM aggregation on again"
    else:
        expected = f"originator interval back to {a.param('previous_ms')} ms"
    return Action(kind=kind, target=a.target, params=a.params, disruptive=a.disruptive,
                  blast_radius=a.blast_radius, cost=a.cost, expected=expected, verify_after=a.verify_after)


def _undo_decision(st: _Step, rec: Record, op: Op, reason: str) -> Record:
    if rec.state == State.DRY_RUN:
        return replace(rec, undo_op=op, undo_state=Undo.EFFECTIVE, undo_reason=reason)
    st.decisions.append(
        Decision(
            id=f"{rec.id}/undo",
            incident=rec.incident,
            op=op,
            action=_undo_action(rec),
            symptom=rec.symptom,
            reasons=(reason,),
        )
    )
    return replace(rec, undo_op=op, undo_state=Undo.PLANNED, undo_reason=reason)


# Symptoms under which this node keeps its faster originator interval, whichever incident took it.
_FAST_OGMS = (SymptomKind.PARTITION, SymptomKind.ROUTE_FLAPPING, SymptomKind.LINK_SUSPECT, SymptomKind.SILENT_LOSS,
              SymptomKind.LINK_DOWN)


# Symptoms under which this node keeps OGM aggregation paused: the alert it heard (its own
# symptom), and its own link failures, whose far ends need their OGMs forwarded at once. Not
# route flapping or a partition: they hold the faster OGMs, not the pause.
_NO_AGGREGATION = (SymptomKind.MESH_ALERT, SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN)


def _needed_by(action: Action, active: Iterable[Key]) -> list[Key]:
    """Active symptoms whose remedy would use ``action``'s target (so it is not restored under them)."""
    target = action.target
    if target.startswith("hardif:"):
        hardif = _hardif_of(target)
        return [k for k in active if k[0] in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN,
                                              SymptomKind.LINK_DEGRADED) and _hardif_of(k[1]) == hardif]
    if target == "mesh":
        kinds = _NO_AGGREGATION if action.kind == ActionKind.PAUSE_AGGREGATION else _FAST_OGMS
        return [k for k in active if k[0] in kinds]
    return []


def _undo(st: _Step, obs: Observation, active: dict[Key, Symptom]) -> None:
    s = st.k.settings
    for rid, rec in list(st.records.items()):
        if rec.action.kind not in UNDO:
            continue
        if rec.undo_state in (Undo.PLANNED, Undo.APPLIED, Undo.EFFECTIVE, Undo.FAILED):
            continue
        if rec.undo_state == Undo.REFUSED:  # retry an undo the executor refused
            if st.now >= st.incidents.get(rec.incident, _NEVER).next_attempt:
                st.records[rid] = _undo_decision(st, rec, rec.undo_op or Op.RESTORE, rec.undo_reason)
            continue
        if rec.state not in (State.EFFECTIVE, State.DRY_RUN):
            continue  # an applied action is verified before it can be undone
        inc = st.incidents.get(rec.incident)
        if inc is not None and inc.resumed is not None and st.now - inc.resumed < s.resume_grace:
            continue  # give a resumed incident's symptom the time to show again
        if rec.symptom in active:
            continue
        others = _needed_by(rec.action, active)
        if others:
            _hand_over(st, rid, rec, others)
            continue
        # faster OGMs stay while any steer-off (of any incident: the link's suspect incident may
        # own them) is in effect or its restored link carries no route yet
        if rec.action.kind == ActionKind.TUNE_ORIG_INTERVAL and any(
            _steered_or_returning(r, obs, st.now, s) for r in st.records.values()
        ):
            continue
        st.records[rid] = _undo_decision(st, rec, Op.RESTORE, "the symptom cleared")


# Mesh-wide symptoms that can last a whole flap window: they take over the remedies they need.
_LONG_LIVED = (SymptomKind.ROUTE_FLAPPING, SymptomKind.PARTITION)


def _hand_over(st: _Step, rid: str, rec: Record, needing: list[Key]) -> None:
    """A remedy whose own symptom cleared but which another active symptom needs (the faster OGMs
    of a suspect link, kept for route flapping) goes to that symptom's incident, so the first
    incident closes now instead of staying open, healed, for the other one's whole flap window;
    the heir undoes it when its own symptom clears. A steer-off is never handed over: it belongs
    to its link."""
    if rec.action.kind == ActionKind.STEER_OFF:
        return
    for key in needing:
        if key[0] not in _LONG_LIVED:
            continue  # a link's own stages (suspect, then silent loss) keep their records
        heir = st.by_key.get(key)
        if heir is None or heir == rec.incident or heir not in st.incidents:
            continue
        st.records[rid] = replace(rec, incident=heir)
        st.event("handed_over", rec.incident, id=rid, kind=rec.action.kind.value, to=heir)
        st.event("handed_over", heir, id=rid, kind=rec.action.kind.value, origin=rec.incident)
        return


def _steered_or_returning(r: Record, obs: Observation, now: float, s: HealSettings) -> bool:
    """``r`` is a steer-off in effect, or restored less than ``route_return_max`` ago on a link
    that carries no route yet: a re-attached link builds its TQ from nothing, one OGM at a time,
    which the faster interval makes seconds instead of tens of seconds."""
    if r.action.kind != ActionKind.STEER_OFF:
        return False
    # in effect, or its restore is on its way; a restore that failed holds nothing (the link
    # failed again, and a steer-off of its own took over)
    if r.state in (State.EFFECTIVE, State.APPLIED) and r.undo_state not in (Undo.EFFECTIVE, Undo.FAILED):
        return True
    # an originator whose address is its own next hop is a neighbour's interface as BATMAN_IV lists
    # it (one hop, routed through a re-attached link at once): not yet a route the mesh uses again
    return (r.undo_state == Undo.EFFECTIVE and r.undo_applied is not None
            and now - r.undo_applied < s.route_return_max
            and not any(o.hardif == r.action.param("hardif") and o.orig != o.router for o in obs.originators))


_NEVER = Incident(id="", key=("", ""), opened=0.0, onset=0.0, severity="", evidence=())


def _plan(st: _Step, obs: Observation, active: dict[Key, Symptom]) -> None:
    s = st.k.settings
    lossy = frozenset(k[1] for k in active if k[0] == SymptomKind.SILENT_LOSS)
    holding = [r for r in st.records.values() if r.holds]
    for inc_id, inc in sorted(st.incidents.items()):
        sym = active.get(inc.key)
        if sym is None or st.now < inc.next_attempt:
            continue
        # one remedy at a time per incident; faster OGMs (a steer-off's companion, or the remedy of
        # a link that is down) never stand in the way of another one, e.g. a steer-off once that
        # link flaps
        if any(r.incident == inc_id and r.holds and r.action.kind != ActionKind.TUNE_ORIG_INTERVAL for r in holding):
            continue
        steered = frozenset(r.action.param("hardif") for r in holding if r.action.kind == ActionKind.STEER_OFF)
        cands = candidates(sym, obs, s, lossy, st.stats, steered)
        if not cands:
            note = _note(sym)
            if note not in inc.notes:
                st.incidents[inc_id] = replace(inc, notes=(note, *inc.notes)[:5], next_attempt=st.now + s.retry_after)
            continue
        chosen: Candidate | None = None
        judged: list[Candidate] = []
        for c in cands:
            why = c.rejected
            if not why:
                for r in holding:
                    if r.action.target == c.action.target and (r.action.kind == c.action.kind or
                                                               (r.action.disruptive and c.action.disruptive)):
                        why = f"{c.action.target} already has {r.action.kind.value} in effect ({r.id})"
                        break
            if not why and chosen is None:
                chosen = c
                continue
            judged.append(replace(c, rejected=why or "lower score"))
        if chosen is None:
            note = "; ".join(f"{c.action.kind.value}: {c.rejected}" for c in judged)
            st.incidents[inc_id] = replace(inc, notes=(note, *inc.notes[:4]) if note not in inc.notes else inc.notes,
                                           next_attempt=st.now + s.retry_after)
            continue
        rid = st.next_id("a")
        reasons = (
            f"{sym.kind.value} on {sym.target}: " + ", ".join(f"{k}={v}" for k, v in sym.evidence if k != "onset"),
            f"chose {chosen.action.remedy} on {chosen.action.target} (score {chosen.score:.3f}); "
            f"expected: {chosen.action.expected}",
            *(f"not {c.action.remedy}: {c.rejected}" for c in judged),
        )
        decision = Decision(id=rid, incident=inc_id, op=Op.APPLY, action=chosen.action, symptom=inc.key,
                            reasons=reasons, alternatives=tuple(judged))
        rec = Record(id=rid, incident=inc_id, symptom=inc.key, action=chosen.action, reasons=reasons,
                     state=State.PLANNED, decided=st.now,
                     baseline=evidence(originators=len(obs.originators)))
        st.records[rid] = rec
        holding.append(rec)
        st.decisions.append(decision)
        companion = _companion(st, inc, sym, chosen.action, obs, holding)
        if companion is not None:
            holding.append(companion)


def _companion(st: _Step, inc: Incident, sym: Symptom, chosen: Action, obs: Observation,
               holding: list[Record]) -> Record | None:
    """A steer-off is paired with a faster originator interval on this node while it lasts.

    Steering off is instant here, but the other nodes keep routing towards this node through the
    dead link until their own view of it decays: batman-adv (BATMAN_IV) pushes a zero into the
    dead route's TQ window for each newer OGM heard another way, so that takes a few of *this
    node's* originator intervals. Sending OGMs faster shortens it (a 5-node ring: ~6 s at 1 s).
    """
    s = st.k.settings
    if chosen.kind != ActionKind.STEER_OFF or sym.kind not in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN):
        return None
    if "tune_orig_interval" in s.disabled_actions:
        return None
    if any(r.action.kind == ActionKind.TUNE_ORIG_INTERVAL for r in holding):
        return None
    action, why = tune_orig_interval(obs, s)
    if why:
        return None
    rid = st.next_id("a")
    reasons = (
        f"companion of steer_off on {chosen.target}: OGMs every {s.unstable_orig_interval} ms let the other "
        "nodes drop their routes through the dead link sooner",
    )
    rec = Record(id=rid, incident=inc.id, symptom=inc.key, action=action, reasons=reasons, state=State.PLANNED,
                 decided=st.now, baseline=evidence(originators=len(obs.originators)), companion=True)
    st.records[rid] = rec
    st.decisions.append(Decision(id=rid, incident=inc.id, op=Op.APPLY, action=action, symptom=inc.key,
                                 reasons=reasons))
    return rec


def _note(sym: Symptom) -> str:
    from x0tta.heal.core.plan import NO_ACTION

    return NO_ACTION.get(sym.kind, f"no policy acts on {sym.kind.value}")


def _close(st: _Step, active: dict[Key, Symptom], obs: Observation) -> None:
    for inc_id, inc in list(st.incidents.items()):
        if inc.key in active:
            continue
        if inc.resumed is not None and st.now - inc.resumed < st.k.settings.resume_grace:
            continue
        recs = [r for r in st.records.values() if r.incident == inc_id]
        if not all(r.settled for r in recs):
            continue
        # a restored link is not over until it carries a route again: its steer-off record keeps
        # the faster OGMs (which another incident, the link's suspect one, may hold) until then
        if any(_steered_or_returning(r, obs, st.now, st.k.settings) for r in recs):
            continue
        if any(r.state == State.EFFECTIVE for r in recs):
            resolution = "healed: " + ", ".join(r.action.kind.value for r in recs if r.state == State.EFFECTIVE)
        elif any(r.state == State.DRY_RUN for r in recs):
            resolution = "cleared (dry run: actions only logged)"
        elif recs:
            resolution = "cleared by itself; actions did not help"
        elif inc.healed is not None:
            resolution = "healed; its remedy was handed over to an incident that still needs it"
        else:
            resolution = "cleared by itself"
        closed = replace(inc, closed=st.now, resolution=resolution)
        st.incidents[inc_id] = closed
        st.event("incident_closed", inc_id, incident=closed.to_json(),
                 actions=[r.to_json() for r in recs], duration=st.now - inc.opened)
        del st.incidents[inc_id]
        st.by_key.pop(inc.key, None)
        for r in recs:
            st.records.pop(r.id, None)


@dataclass(frozen=True, slots=True)
class Result:
    """What the executor did with a decision."""

    id: str  # the decision id (``<record>`` or ``<record>/undo``)
    outcome: str  # applied, dry_run, breaker_open, rate_limited, error, disabled
    detail: str = ""
    retry_in: float = 0.0  # when refused: how long until the executor could accept it

    @property
    def ok(self) -> bool:
        return self.outcome == "applied"


def settle(k: Knowledge, results: Iterable[Result], now: float) -> Knowledge:
    """Feed the executor's results back into the knowledge."""
    st = _Step(k, now)
    s = k.settings
    for res in results:
        rid, _, undo = res.id.partition("/")
        rec = st.records.get(rid)
        if rec is None:
            continue
        inc = st.incidents.get(rec.incident)
        if not undo:
            if res.ok:
                rec = replace(rec, state=State.APPLIED, applied=now, verify_at=now + rec.action.verify_after)
            elif res.outcome == "dry_run":
                rec = replace(rec, state=State.DRY_RUN, applied=now, outcome="dry run")
            else:
                rec = replace(rec, state=State.REFUSED, outcome=f"{res.outcome}: {res.detail}".rstrip(": "))
                if inc is not None:
                    st.incidents[rec.incident] = replace(inc, next_attempt=now + max(s.retry_after, res.retry_in))
        elif res.ok:
            wait = s.restore_verify_after if rec.undo_op == Op.RESTORE else rec.action.verify_after
            rec = replace(rec, undo_state=Undo.APPLIED, undo_applied=now, undo_verify_at=now + wait)
        else:
            reason = rec.undo_reason.split("; refused")[0]
            rec = replace(rec, undo_state=Undo.REFUSED, undo_reason=f"{reason}; refused {res.outcome}: {res.detail}")
            if inc is not None:
                st.incidents[rec.incident] = replace(inc, next_attempt=now + max(s.retry_after, res.retry_in))
        st.records[rid] = rec
        st.event("executed", rec.incident, id=res.id, outcome=res.outcome, detail=res.detail)
    return st.finish()


def resume(k: Knowledge, incidents: Iterable[Mapping[str, Any]], now: float) -> Knowledge:
    """Rebuild open incidents (as :meth:`Knowledge.incident_json` gave them) after a restart.

    Actions whose executor result was never recorded (``planned``) may or may not have happened:
    they are treated as applied, which is safe because every undo is idempotent. An incident
    whose symptom does not show again within ``resume_grace`` has its actions undone and is
    closed; one whose symptom shows again continues where it was.
    """
    st = _Step(k, now)
    for data in incidents:
        key = (data["symptom"]["kind"], data["symptom"]["target"])
        inc = Incident(
            id=data["id"],
            key=key,
            opened=data["opened"],
            onset=data["onset"],
            severity=data.get("severity", "warning"),
            evidence=tuple(sorted(data.get("evidence", {}).items())),
            healed=data.get("healed"),
            resumed=now,
            notes=("resumed after an agent restart", *data.get("notes", ())[:4]),
        )
        st.incidents[inc.id] = inc
        st.by_key[key] = inc.id
        for a in data.get("actions", ()):
            rec = _record_from_json(a)
            if rec.state == State.PLANNED:
                rec = replace(rec, state=State.APPLIED, applied=now, verify_at=now + rec.action.verify_after,
                              outcome="result unknown after restart; assumed applied")
            if rec.undo_state in (Undo.PLANNED, Undo.REFUSED):
                rec = replace(rec, undo_state=Undo.REFUSED)  # re-issued by _undo
            elif rec.undo_state == Undo.APPLIED:
                rec = replace(rec, undo_state=Undo.EFFECTIVE)
            st.records[rec.id] = rec
        st.event("incident_resumed", inc.id)
    return st.finish()


def _record_from_json(a: Mapping[str, Any]) -> Record:
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
