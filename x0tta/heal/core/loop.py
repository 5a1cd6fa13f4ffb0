"""The MAPE-K step: ``step(knowledge, observation, now) -> (knowledge, decisions)``.

One call is one cycle of the loop, computed without side effects; the service applies the
decisions (through the executor) and feeds the results back with :func:`settle`. Within a step:

1. **Analyze** - detectors and hysteresis (:mod:`~x0tta.heal.core.detect`) give the active
   symptoms; a newly raised symptom opens an incident, or rejoins the open incident of the same
   symptom (a flapping link stays one incident, not a storm of them).
2. **Verify** (:mod:`~x0tta.heal.core.verify`) - every applied action whose deadline passed is
   judged against the observation: its symptom cleared, or its own expected effect holds (e.g. no
   originator routed through a steered-off interface, no originators lost). One that did not help
   is rolled back. The outcome updates the success statistics that rank actions next time.
3. **Undo** (:mod:`~x0tta.heal.core.verify`) - a remedy whose symptom has cleared (and no other
   symptom needs it) is restored; a restore is itself verified: if the symptom returns within
   ``restore_verify_after``, the restore failed (which counts against its circuit breaker in the
   executor). A load-raising remedy in force past its load budget is undone whatever still needs
   it (:mod:`~x0tta.heal.core.budget`).
4. **Plan** - each open incident with an active symptom and nothing in flight gets the best
   candidate (:mod:`~x0tta.heal.core.plan`), unless the action's target already has a disruptive
   action of another incident in flight: at most one disruptive action per target at a time. A
   load-raising candidate whose budget is spent is refused with the budget's reason.
5. **Close** - an incident whose symptom cleared and whose actions are all settled is closed.

The knowledge is an immutable value (:mod:`~x0tta.heal.core.records`); the knowledge *store*
(SQLite) persists what the service reads out of it (:meth:`Knowledge.incident_json`), and
:func:`resume` rebuilds it after a restart. Records and incidents change state only by their
lifecycle tables (:func:`~x0tta.heal.core.records.transition`); a move a table refuses leaves
that record or incident as it was and becomes a ``transition_refused`` event, never an exception
out of :func:`step`, :func:`settle` or :func:`resume`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from x0tta.heal.core.budget import LOAD_RAISING, by_budget, rebuilt, refusal, reserved, spent
from x0tta.heal.core.detect import Key, Memory, analyze, carrier_down, hysteresis
from x0tta.heal.core.model import (
    Action,
    ActionKind,
    Candidate,
    Decision,
    Observation,
    Op,
    Symptom,
    SymptomKind,
    evidence,
)
from x0tta.heal.core.plan import UNDO, alert_wants_fast_ogms, candidates, tune_orig_interval
from x0tta.heal.core.records import (
    HealStateError,
    Incident,
    IncidentEvent,
    Knowledge,
    Record,
    RecordEvent,
    Scratch,
    State,
    Undo,
    initial,
    record_from_json,
    transition,
)
from x0tta.heal.core.verify import HARM_WEIGHT, MAX_REAPPLY, steered_or_returning, undo, verify

# the names this module always had (tests, the service and the executor import them from here)
__all__ = [
    "HARM_WEIGHT",
    "MAX_REAPPLY",
    "Incident",
    "Knowledge",
    "Record",
    "Result",
    "State",
    "Undo",
    "initial",
    "remember_reattached",
    "resume",
    "settle",
    "step",
]


def step(k: Knowledge, obs: Observation, now: float) -> tuple[Knowledge, tuple[Decision, ...]]:
    s = k.settings
    memory, conds = analyze(k.memory, obs, s, now)
    hyst, raised, cleared, active = hysteresis(k.memory.hyst, conds, s, now, carrier_down(obs))
    memory = replace(memory, hyst=hyst)
    st = Scratch(k, now)
    for sym in cleared:
        st.event("symptom_cleared", st.by_key.get(sym.key, ""), symptom=sym.to_json())
    for sym in raised:
        _open(st, sym)
    for key, sym in active.items():  # keep the incident's evidence current
        inc_id = st.by_key.get(key)
        if inc_id is not None and inc_id in st.incidents:
            st.incidents[inc_id] = replace(st.incidents[inc_id], evidence=sym.evidence, severity=sym.severity.label)
    verify(st, obs, active, memory.reattached)
    undo(st, obs, active)
    _plan(st, obs, active, memory)
    _close(st, active, obs)
    return st.finish(memory=memory, active=active), tuple(st.decisions)


def _open(st: Scratch, sym: Symptom) -> None:
    inc_id = st.by_key.get(sym.key)
    if inc_id is not None and inc_id in st.incidents:
        st.event("symptom_raised", inc_id, symptom=sym.to_json(), reopened=True)
        if sym.kind == SymptomKind.MESH_ALERT:
            return  # a new alert is news from elsewhere, not a restore gone wrong
        # a restore that let the symptom come back failed
        for rid, rec in list(st.records.items()):
            if (rec.incident == inc_id and rec.undo_op == Op.RESTORE and rec.undo_state == Undo.APPLIED
                    and not by_budget(rec.undo_reason)):  # the budget's undo was no judgement of it
                with st.atomic(inc_id):
                    st.records[rid] = transition(rec, RecordEvent.SYMPTOM_RETURNED,
                                                 undo_reason="the symptom came back")
                    st.event("verified", inc_id, id=f"{rid}/undo", ok=False, op="restore",
                             kind=UNDO[rec.action.kind].value, target=rec.action.target,
                             reason="the symptom came back")
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
    st.event("incident_opened", inc_id, kind=sym.kind.value, target=sym.target, severity=inc.severity,
             opened=inc.opened, time_to_detect=max(0.0, sym.raised - sym.onset))
    st.event("symptom_raised", inc_id, symptom=sym.to_json(), reopened=False)


def _plan(st: Scratch, obs: Observation, active: dict[Key, Symptom], memory: Memory) -> None:
    s = st.k.settings
    attached_ago = {hardif: max(0.0, st.now - t) for hardif, t in memory.reattached.items()}
    lossy = frozenset(k[1] for k in active if k[0] == SymptomKind.SILENT_LOSS)
    holding = [r for r in st.records.values() if r.holds]
    load_spent = {kind: spent(st.k.load, kind, st.now, s) for kind in LOAD_RAISING}
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
        cands = candidates(sym, obs, s, lossy, st.stats, steered, load_spent, attached_ago, memory.moved_off)
        for c in cands:
            if by_budget(c.rejected):
                st.event("load_budget", inc_id, op="refused", kind=c.action.kind.value, reason=c.rejected)
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
            if not why and c.action.kind == ActionKind.STEER_OFF:
                _, spent_why = _companion_of(st, sym, c.action, obs, holding, load_spent)
                if spent_why:
                    # without its faster OGMs a steer-off leaves the other nodes routing towards this
                    # node through the link for seconds (the chaos lab measured 7.5 s outages two
                    # hops away on a partial loss): then batman-adv alone is the better choice
                    why = f"its companion, faster OGMs, is refused ({spent_why})"
                    st.event("load_budget", inc_id, op="refused", kind=ActionKind.TUNE_ORIG_INTERVAL.value,
                             reason=spent_why)
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
        companion = _companion(st, inc, sym, rid, chosen.action, obs, holding, load_spent)
        if companion is not None:
            holding.append(companion)


def _companion_of(st: Scratch, sym: Symptom, chosen: Action, obs: Observation, holding: list[Record],
                  load_spent: Mapping[ActionKind, float]) -> tuple[Action | None, str]:
    """The faster originator interval ``chosen`` needs beside it (None when it needs none: not a
    steer-off of a failing link nor the pause for a mesh alert, turned off, or faster OGMs already
    in force), and the load budget's refusal of it ("" when the budget has time for it)."""
    s = st.k.settings
    steer = chosen.kind == ActionKind.STEER_OFF and sym.kind in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN)
    alert = (chosen.kind == ActionKind.PAUSE_AGGREGATION and sym.kind == SymptomKind.MESH_ALERT
             and alert_wants_fast_ogms(obs, s))
    if not (steer or alert):
        return None, ""
    if "tune_orig_interval" in s.disabled_actions:
        return None, ""
    # whatever holds the faster OGMs (another record, the interval already short, or unknown), a
    # steer-off needs their budget to outlast its verification: over budget they go, and it goes
    # with them (verify.undo), so taking it would detach and restore the link every cycle
    used = load_spent.get(ActionKind.TUNE_ORIG_INTERVAL, 0.0)
    budget = refusal(ActionKind.TUNE_ORIG_INTERVAL, s.verify_after, used, s) if steer else ""
    if any(r.action.kind == ActionKind.TUNE_ORIG_INTERVAL for r in holding):
        return None, budget
    action, why = tune_orig_interval(obs, s)
    if why:
        return None, budget
    why = refusal(action.kind, action.verify_after, used, s)
    return action, why or (reserved(action.kind, used, s, action.verify_after) if alert else "")



def _companion(st: Scratch, inc: Incident, sym: Symptom, chosen_id: str, chosen: Action, obs: Observation,
               holding: list[Record], load_spent: Mapping[ActionKind, float]) -> Record | None:
    """A steer-off is paired with a faster originator interval on this node while it lasts (a
    steer-off whose companion the load budget refuses is not taken: see :func:`_plan`), and so is
    the pause for a mesh alert (``alert_fast_ogms``; the pause is taken without it).

    Steering off is instant here, but the other nodes keep routing towards this node through the
    dead link until their own view of it decays: batman-adv (BATMAN_IV) pushes a zero into the
    dead route's TQ window for each newer OGM heard another way, so that takes a few of *this
    node's* originator intervals. Sending OGMs faster shortens it (a 5-node ring: ~6 s at 1 s).
    The same holds for every node whose routes ran through another node's failed link: a node
    that hears the alert sends its own OGMs faster, so the routes towards it move off the link in
    a few of its 50 ms intervals. Without that, a detach of a link that still works one way cut the
    routes through its working direction until 1 s OGMs moved them: the chaos benchmark with
    identities measured 5.6 s on a witness ping that batman-adv alone never lost.
    """
    s = st.k.settings
    action, why = _companion_of(st, sym, chosen, obs, holding, load_spent)
    if action is None or why:
        if why:  # the alert's pause goes without its faster OGMs: say why the interval stays
            st.event("load_budget", inc.id, op="refused", kind=ActionKind.TUNE_ORIG_INTERVAL.value, reason=why)
        return None
    rid = st.next_id("a")
    reasons = (
        f"companion of {chosen.kind.value} on {chosen.target}: OGMs every {s.unstable_orig_interval} ms let the "
        "other nodes drop their routes through the dead link sooner",
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


def _close(st: Scratch, active: dict[Key, Symptom], obs: Observation) -> None:
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
        if any(steered_or_returning(r, obs, st.now, st.k.settings) for r in recs):
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
        with st.atomic(inc_id):
            closed = transition(inc, IncidentEvent.CLOSE, closed=st.now, resolution=resolution)
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
    st = Scratch(k, now)
    for res in results:
        rid, _, of_undo = res.id.partition("/")
        rec = st.records.get(rid)
        if rec is None:
            continue
        with st.atomic(rec.incident):
            _settle_one(st, rec, res, bool(of_undo))
        st.event("executed", rec.incident, id=res.id, outcome=res.outcome, detail=res.detail)
    return st.finish()


def _settle_one(st: Scratch, rec: Record, res: Result, of_undo: bool) -> None:
    s, now = st.k.settings, st.now
    inc = st.incidents.get(rec.incident)
    if not of_undo:
        if res.ok:
            rec = transition(rec, RecordEvent.APPLIED, applied=now, verify_at=now + rec.action.verify_after)
        elif res.outcome == "dry_run":
            rec = transition(rec, RecordEvent.DRY_RUN, applied=now, outcome="dry run")
        else:
            rec = transition(rec, RecordEvent.REFUSED, outcome=f"{res.outcome}: {res.detail}".rstrip(": "))
            if inc is not None:
                st.incidents[rec.incident] = replace(inc, next_attempt=now + max(s.retry_after, res.retry_in))
    elif res.ok:
        wait = s.restore_verify_after if rec.undo_op == Op.RESTORE else rec.action.verify_after
        rec = transition(rec, RecordEvent.UNDO_APPLIED, undo_applied=now, undo_verify_at=now + wait)
    else:
        reason = rec.undo_reason.split("; refused")[0]
        rec = transition(rec, RecordEvent.UNDO_REFUSED, undo_reason=f"{reason}; refused {res.outcome}: {res.detail}")
        if inc is not None:
            st.incidents[rec.incident] = replace(inc, next_attempt=now + max(s.retry_after, res.retry_in))
    st.records[rec.id] = rec


def resume(k: Knowledge, incidents: Iterable[Mapping[str, Any]], now: float) -> Knowledge:
    """Rebuild open incidents (as :meth:`Knowledge.incident_json` gave them) after a restart.

    Actions whose executor result was never recorded (``planned``) may or may not have happened:
    they are treated as applied, which is safe because every undo is idempotent. An incident
    whose symptom does not show again within ``resume_grace`` has its actions undone and is
    closed; one whose symptom shows again continues where it was.

    The load budget's accounts are rebuilt from the records' own times (applied, undo applied):
    the open incidents' records are all the knowledge the store gives back, so what closed
    incidents spent within the window is forgotten - at most one budget more per restart. A
    remedy left in force counts from its application through the restart (the kernel kept it).
    """
    st = Scratch(k, now)
    uses: list[tuple[ActionKind, float, float | None]] = []
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
            rec = record_from_json(a)
            uses.extend(_in_force(rec))
            try:
                rec = _resumed(rec, now)
            except HealStateError as exc:  # kept as stored, and logged
                st.refused(exc, inc.id)
            st.records[rec.id] = rec
        st.event("incident_resumed", inc.id)
    # ids are the start's prefix and a sequence number: a start whose prefix an earlier one had (a
    # router without a clock that boots to the same time) must not give a new record a resumed id
    st.seq = max([st.seq, *(_seq_of(i, k.prefix) for i in (*st.incidents, *st.records))])
    st.load = {**rebuilt(uses, now, k.settings), **st.load}
    return st.finish()


def remember_reattached(k: Knowledge, records: Iterable[Mapping[str, Any]], now: float) -> Knowledge:
    """Seed the memory of interfaces that joined the mesh interface again (``reattach_guard``)
    after a restart, from stored steer-off records (as :meth:`Record.to_json` wrote them, of open
    and closed incidents): a detach whose undo was applied less than ``reattach_guard`` before
    ``now`` attached its interface again then. The memory starts empty and the first observation
    marks nothing, so without this an interface restored just before a ``kill -9`` could be
    detached again at once. A record that cannot be read is skipped (a newer or hand-edited store)."""
    guard = k.settings.reattach_guard
    seen = dict(k.memory.reattached)
    for data in records:
        try:
            rec = record_from_json(data)
        except Exception:  # noqa: S112 - any record the store cannot give back whole is skipped (a pure core: no log)
            continue
        a, t = rec.action, rec.undo_applied
        hardif = a.param("hardif")
        if a.kind != ActionKind.STEER_OFF or a.param("method") != "detach" or not hardif:
            continue
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            continue
        if 0.0 <= now - t < guard and t > seen.get(hardif, float("-inf")):
            seen[hardif] = t
    if seen == k.memory.reattached:
        return k
    return replace(k, memory=replace(k.memory, reattached=seen))


def _seq_of(ident: str, prefix: str) -> int:
    """The sequence number of an id made under ``prefix`` (``PREFIX-a12`` -> 12); 0 for another's."""
    if not ident.startswith(prefix + "-"):
        return 0
    digits = ident[len(prefix) + 2:]
    return int(digits) if digits.isdigit() else 0


def _in_force(rec: Record) -> list[tuple[ActionKind, float, float | None]]:
    """When a stored record of a load-raising remedy was in force, as far as it says: from its
    application (its decision, if the result was never recorded) to its undo's, or still."""
    if rec.action.kind not in LOAD_RAISING or rec.state == State.REFUSED:
        return []
    start = rec.applied if rec.applied is not None else rec.decided
    if rec.undo_state in (Undo.APPLIED, Undo.EFFECTIVE, Undo.FAILED):
        # a dry run's undo is only recorded, with no time: nothing of it is in force any more
        return [] if rec.undo_applied is None else [(rec.action.kind, start, rec.undo_applied)]
    return [(rec.action.kind, start, None)]


def _resumed(rec: Record, now: float) -> Record:
    """A stored record as the loop takes it up again: an action whose result was never recorded
    as applied, an undo that was in flight as re-issued (a refused one is, by :func:`undo`), one
    that was applied as held."""
    if rec.state == State.PLANNED:
        return transition(rec, RecordEvent.RESUMED, applied=now, verify_at=now + rec.action.verify_after,
                          outcome="result unknown after restart; assumed applied")
    if rec.undo_state in (Undo.PLANNED, Undo.APPLIED):
        return transition(rec, RecordEvent.RESUMED)
    return rec


