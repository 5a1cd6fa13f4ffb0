"""Verify, harm, undo and hand-over: what the step does with the actions already decided.

* **Verify** (:func:`verify`) - every applied action whose deadline passed is judged against the
  observation: its symptom cleared, or its own expected effect holds (:func:`effect`). One that
  did not help is rolled back; a steer-off after which another link of this node went silent did
  harm and is rolled back at once; a steer-off in effect when the mesh partitions failed. A
  steer-off someone else undid while its symptom lasts is applied again. The outcomes update the
  success statistics that rank actions next time.
* **Undo** (:func:`undo`) - a remedy whose symptom has cleared (and no other symptom needs it) is
  restored; one that another, longer-lived symptom needs is handed over to that symptom's incident.
  A load-raising remedy in force past its load budget (:mod:`~x0tta.heal.core.budget`) is restored
  whatever still needs it.
  A restore is itself verified: if the symptom returns within ``restore_verify_after``, the restore
  failed (the step's analysis sees that, :mod:`~x0tta.heal.core.loop`).

Every change of a record's phase goes through :func:`~x0tta.heal.core.records.transition`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from x0tta.config.heal import HealSettings
from x0tta.heal.core.budget import overrun, reserved, spent
from x0tta.heal.core.detect import Key
from x0tta.heal.core.model import Action, ActionKind, Decision, Observation, Op, Symptom, SymptomKind
from x0tta.heal.core.plan import UNDO, _hardif_of, alert_wants_fast_ogms
from x0tta.heal.core.records import Incident, IncidentEvent, Record, RecordEvent, Scratch, State, Undo, transition


def _effect(rec: Record, obs: Observation, s: HealSettings) -> tuple[bool, str]:
    """Does the observation show the record's expected effect?"""
    return effect(rec.action, rec.baseline, obs, s)


def effect(a: Action, baseline: tuple[tuple[str, Any], ...], obs: Observation, s: HealSettings) -> tuple[bool, str]:
    """Does the observation show ``a``'s expected effect? ``baseline``: what the observation held
    when it was decided (originators, ...). Also the verdict on an action an operator's command ran,
    which has no incident and no symptom to clear: only its own effect tells (x0tta.heal.service)."""
    base = dict(baseline)
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
    if a.kind == ActionKind.QUARANTINE:
        mac = a.param("mac")
        if mac not in obs.quarantined:
            return False, f"{mac} is not quarantined"
        before = int(base.get("originators", 0))
        lost = before - len(obs.originators)
        if lost >= s.partition_min_lost and lost >= before * s.partition_fraction:
            return False, f"{lost} of {before} originators lost since quarantining {mac}"
        return True, f"{mac} quarantined; {len(obs.originators)} originators reachable"
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


def verify(st: Scratch, obs: Observation, active: dict[Key, Symptom],
           reattached: Mapping[str, float] | None = None) -> None:
    """``reattached``: hard interface -> when it was last seen joining the mesh interface again."""
    partition = active.get((SymptomKind.PARTITION.value, "mesh"))
    for rid, rec in list(st.records.items()):
        with st.atomic(rec.incident):
            _verify_one(st, rid, rec, obs, active, partition, reattached or {})


def _verify_one(st: Scratch, rid: str, rec: Record, obs: Observation, active: dict[Key, Symptom],
                partition: Symptom | None, reattached: Mapping[str, float]) -> None:
    s = st.k.settings
    # a detach attached again by someone else is not detached again within reattach_guard: its
    # neighbours would ignore the interface's next new OGM seqno after the restore (plan.py)
    guarded = rec.action.param("hardif") in reattached
    if _undone_by_others(rec, obs, active) and rec.reapplied < MAX_REAPPLY and not guarded:
        rec = transition(rec, RecordEvent.REAPPLY, outcome="re-applied: undone by someone else",
                         reapplied=rec.reapplied + 1)
        st.records[rid] = rec
        st.decisions.append(Decision(
            id=rid, incident=rec.incident, op=Op.APPLY, action=rec.action, symptom=rec.symptom,
            reasons=(f"{rec.action.target} was restored by someone else (e.g. a mesh reconcile) while "
                     f"{rec.symptom[0]} lasts; applying again ({rec.reapplied}/{MAX_REAPPLY})",),
        ))
        return
    if harm := _harm(rec, active, st.now, s):
        # the steer-off moved traffic onto a link that failed right after: roll it back at once
        # (batman-adv alone would have both links) and weigh it twice in the ranking
        st.learn(rec, False, weight=HARM_WEIGHT)
        rec = transition(rec, RecordEvent.HARM, outcome=harm)
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
        rec = transition(rec, RecordEvent.HELPED if ok else RecordEvent.DID_NOT_HELP, outcome=why)
        st.learn(rec, ok)
        st.event("verified", rec.incident, id=rid, ok=ok, op="apply", kind=rec.action.kind.value,
                 target=rec.action.target, reason=why)
        if ok:
            inc = st.incidents.get(rec.incident)
            if inc is not None and inc.healed is None:
                healed = rec.applied if rec.applied is not None else st.now
                st.incidents[rec.incident] = transition(inc, IncidentEvent.HEAL, healed=healed)
                st.event("healed", rec.incident, time_to_heal=max(0.0, healed - inc.onset),
                         action=rec.action.kind.value)
        elif rec.action.kind in UNDO:
            rec = _undo_decision(st, rec, Op.ROLLBACK, f"did not help: {why}")
        st.records[rid] = rec
    elif (
        partition is not None  # a steer-off judged good earlier; right after one, originators
        and rec.action.kind == ActionKind.STEER_OFF  # reachable only through that link vanish for
        and rec.state == State.EFFECTIVE  # an OGM interval or two: its own verification judges
        and rec.undo_state is None  # that, and the partition it raised outlives the verification
        and rec.symptom[0] != SymptomKind.PARTITION  # by its clear hysteresis: harm only while
        and _lost_since(rec, obs, s)  # originators are missing against the steer-off's baseline
    ):
        # (the heal lab's 5-node ring: n4 steered its silent link to n3 off, saw two of four
        # originators vanish for a moment, verified all four back 1.1 s later, and then rolled the
        # steer-off back on that same partition, three times until the rate limit stopped it)
        st.learn(rec, False)
        rec = transition(rec, RecordEvent.PARTITION, outcome="partition while steered off")
        st.event("verified", rec.incident, id=rid, ok=False, op="apply", kind=rec.action.kind.value,
                 target=rec.action.target, reason=rec.outcome)
        st.records[rid] = _undo_decision(st, rec, Op.ROLLBACK, "the mesh partitioned while steered off")
    if rec.undo_state == Undo.APPLIED and rec.undo_verify_at is not None and st.now >= rec.undo_verify_at:
        st.records[rid] = transition(rec, RecordEvent.UNDO_HELD)
        st.event("verified", rec.incident, id=f"{rid}/undo", ok=True, op=rec.undo_op.value if rec.undo_op else "",
                 kind=UNDO[rec.action.kind].value, target=rec.action.target, reason="undo held")


def _lost_since(rec: Record, obs: Observation, s: HealSettings) -> bool:
    """As many originators missing now, against ``rec``'s baseline, as make a partition."""
    before = int(dict(rec.baseline).get("originators", 0))
    lost = before - len(obs.originators)
    return lost >= s.partition_min_lost and lost >= before * s.partition_fraction


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


def _undo_decision(st: Scratch, rec: Record, op: Op, reason: str, event: RecordEvent | None = None) -> Record:
    """``rec`` with its undo decided (``event``: a restore or rollback by ``op``, unless told): the
    undo decision goes to the executor; a dry run's undo is only recorded."""
    current = st.records.get(rec.id)
    if current is not None and current.undo_state in (Undo.PLANNED, Undo.APPLIED, Undo.EFFECTIVE):
        # already undone, or its undo decided earlier in this step by another pass (a symptom that
        # cleared and a spent load budget can both undo one steer-off): one undo, not two
        return current
    if event is None:
        event = RecordEvent.RESTORE if op == Op.RESTORE else RecordEvent.ROLLBACK
    undone = transition(rec, event, undo_op=op, undo_reason=reason)
    if undone.undo_state == Undo.PLANNED:
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
    return undone


# Symptoms under which this node keeps its faster originator interval, whichever incident took it.
_FAST_OGMS = (SymptomKind.PARTITION, SymptomKind.ROUTE_FLAPPING, SymptomKind.LINK_SUSPECT, SymptomKind.SILENT_LOSS,
              SymptomKind.LINK_DOWN)


# Symptoms under which this node keeps OGM aggregation paused: the alert it heard (its own
# symptom), and its own link failures, whose far ends need their OGMs forwarded at once. Not
# route flapping or a partition: they hold the faster OGMs, not the pause.
_NO_AGGREGATION = (SymptomKind.MESH_ALERT, SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN)


def _needed_by(action: Action, active: Iterable[Key], alert_fast: bool = False) -> list[Key]:
    """Active symptoms whose remedy would use ``action``'s target (so it is not restored under them).
    ``alert_fast``: the mesh alerts in force ask for faster OGMs (:func:`~.plan.alert_wants_fast_ogms`)."""
    target = action.target
    if target.startswith("hardif:"):
        hardif = _hardif_of(target)
        return [k for k in active if k[0] in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN,
                                              SymptomKind.LINK_DEGRADED) and _hardif_of(k[1]) == hardif]
    if target == "mesh":
        if action.kind == ActionKind.PAUSE_AGGREGATION:
            kinds: tuple[SymptomKind, ...] = _NO_AGGREGATION
        else:
            kinds = (*_FAST_OGMS, SymptomKind.MESH_ALERT) if alert_fast else _FAST_OGMS
        return [k for k in active if k[0] in kinds]
    return []


def undo(st: Scratch, obs: Observation, active: dict[Key, Symptom]) -> None:
    s = st.k.settings
    tune_used = spent(st.k.load, ActionKind.TUNE_ORIG_INTERVAL, st.now, s)
    # the mesh alerts in force ask for faster OGMs only within the half of the budget that is not
    # kept for this node's own faults (budget.reserved)
    for_others = reserved(ActionKind.TUNE_ORIG_INTERVAL, tune_used, s)
    alert_fast = alert_wants_fast_ogms(obs, s) and not for_others
    for rid, rec in list(st.records.items()):
        if rec.action.kind not in UNDO:
            continue
        if rec.undo_state in (Undo.PLANNED, Undo.APPLIED, Undo.EFFECTIVE, Undo.FAILED):
            continue
        if rec.undo_state == Undo.REFUSED:  # retry an undo the executor refused
            if st.now >= st.incidents.get(rec.incident, _NEVER).next_attempt:
                with st.atomic(rec.incident):
                    st.records[rid] = _undo_decision(st, rec, rec.undo_op or Op.RESTORE, rec.undo_reason,
                                                     RecordEvent.RETRY_UNDO)
            continue
        if rec.state not in (State.EFFECTIVE, State.DRY_RUN):
            continue  # an applied action is verified before it can be undone
        if why := overrun(rec.action.kind, spent(st.k.load, rec.action.kind, st.now, s), s):
            # in force past its load budget: undone whatever still needs it, and refused by the
            # planner until the window frees time (a remedy that raises every node's load must
            # not become the mesh's steady state)
            with st.atomic(rec.incident):
                st.records[rid] = _undo_decision(st, rec, Op.RESTORE, why, RecordEvent.OVER_BUDGET)
                st.event("load_budget", rec.incident, op="undone", id=rid, kind=rec.action.kind.value, reason=why)
                if rec.action.kind == ActionKind.TUNE_ORIG_INTERVAL:
                    _take_back_steer_offs(st, rec.incident, why)
            continue
        inc = st.incidents.get(rec.incident)
        if inc is not None and inc.resumed is not None and st.now - inc.resumed < s.resume_grace:
            continue  # give a resumed incident's symptom the time to show again
        # an alert's faster OGMs are its own symptom's only while the alerts ask for them
        alert_kept = rec.action.kind == ActionKind.TUNE_ORIG_INTERVAL and rec.symptom[0] == SymptomKind.MESH_ALERT
        if rec.symptom in active and (alert_fast or not alert_kept):
            continue
        others = _needed_by(rec.action, active, alert_fast)
        if others:
            _hand_over(st, rid, rec, others)
            continue
        # faster OGMs stay while any steer-off (of any incident: the link's suspect incident may
        # own them) is in effect or its restored link carries no route yet; an alert's past half
        # the budget only for a steer-off of a failing link, which goes with them
        past_half = alert_kept and rec.symptom in active and bool(for_others)
        if rec.action.kind == ActionKind.TUNE_ORIG_INTERVAL and any(
            steered_or_returning(r, obs, st.now, s)
            and (not past_half or r.symptom[0] in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN))
            for r in st.records.values()
        ):
            continue
        reason, event = "the symptom cleared", None
        if rec.symptom in active:  # an alert's, no longer asking
            reason = for_others or "the mesh alerts in force do not ask for faster OGMs (unkeyed, or strained)"
            event = RecordEvent.OVER_BUDGET if for_others else None
        with st.atomic(rec.incident):
            st.records[rid] = _undo_decision(st, rec, Op.RESTORE, reason, event)
            if event is not None:
                st.event("load_budget", rec.incident, op="undone", id=rid, kind=rec.action.kind.value, reason=reason)
    gone = overrun(ActionKind.TUNE_ORIG_INTERVAL, tune_used, s)
    fast = any(r.action.kind == ActionKind.TUNE_ORIG_INTERVAL and r.holds and r.undo_state is None
               for r in st.records.values())
    if gone and "tune_orig_interval" not in s.disabled_actions and not fast:
        # a steer-off still being verified when its faster OGMs went over budget
        first = next((r for r in st.records.values() if _relies_on_fast_ogms(r)), None)
        if first is not None:
            with st.atomic(first.incident):
                _take_back_steer_offs(st, first.incident, gone)


def _relies_on_fast_ogms(r: Record) -> bool:
    """A steer-off of a failing link in force: it goes with this node's faster OGMs or not at all."""
    return (r.action.kind == ActionKind.STEER_OFF and r.symptom[0] in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_DOWN)
            and r.undo_state is None and r.state in (State.EFFECTIVE, State.DRY_RUN))


def _take_back_steer_offs(st: Scratch, incident: str, why: str) -> None:
    """The faster OGMs went over budget: every steer-off that relied on them goes too, whichever
    incident holds them (the node has one interval; see loop._plan)."""
    taken = f"{why} (for its companion, faster OGMs)"
    for sid, other in list(st.records.items()):
        if _relies_on_fast_ogms(other):
            st.records[sid] = _undo_decision(st, other, Op.RESTORE, taken, RecordEvent.OVER_BUDGET)
            st.event("load_budget", incident, op="undone", id=sid, kind=other.action.kind.value, reason=taken)


# Mesh-wide symptoms that can last a whole flap window: they take over the remedies they need.
_LONG_LIVED = (SymptomKind.ROUTE_FLAPPING, SymptomKind.PARTITION)


def _hand_over(st: Scratch, rid: str, rec: Record, needing: list[Key]) -> None:
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


def steered_or_returning(r: Record, obs: Observation, now: float, s: HealSettings) -> bool:
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
