"""The lifecycles of action records and incidents: the tables, the refusals, how the loop meets one.

The tables are in :mod:`x0tta.heal.core.records`; ``docs/heal.md`` shows them, and a test here
keeps the two equal.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from x0tta.common.errors import PermanentError, X0ttaError
from x0tta.config.heal import HealSettings
from x0tta.heal.core import loop
from x0tta.heal.core.model import Action, ActionKind, Decision, Observation, Op
from x0tta.heal.core.records import (
    INCIDENT_TRANSITIONS,
    RECORD_TRANSITIONS,
    HealStateError,
    Incident,
    IncidentEvent,
    IncidentState,
    Phase,
    Record,
    RecordEvent,
    Scratch,
    State,
    Undo,
    phase_name,
    record_from_json,
    transition,
)

START: Phase = (State.PLANNED, None)
DOCS = Path(__file__).resolve().parents[3] / "docs" / "heal.md"


def _record(phase: Phase = START, kind: ActionKind = ActionKind.STEER_OFF) -> Record:
    action = Action(kind=kind, target="hardif:eth0", params=(("hardif", "eth0"), ("method", "detach")))
    return Record(id="p-a1", incident="p-i1", symptom=("silent_loss", "link:eth0/x"), action=action,
                  reasons=("test",), state=phase[0], undo_state=phase[1], decided=1.0)


def _incident(healed: float | None = None, closed: float | None = None) -> Incident:
    return Incident(id="p-i1", key=("silent_loss", "link:eth0/x"), opened=1.0, onset=0.5, severity="warning",
                    evidence=(), healed=healed, closed=closed)


def _reachable() -> set[Phase]:
    seen, todo = {START}, [START]
    while todo:
        here = todo.pop()
        for (phase, _), nxt in RECORD_TRANSITIONS.items():
            if phase == here and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# -- the tables ---------------------------------------------------------------------------------


def test_every_phase_in_the_record_table_is_reached_from_planned():
    phases = {p for p, _ in RECORD_TRANSITIONS} | set(RECORD_TRANSITIONS.values())
    assert phases == _reachable()


def test_the_phases_nothing_leaves_are_the_settled_ones():
    """For an action with an undo, a record is settled exactly when its lifecycle is over."""
    leaving = {p for p, _ in RECORD_TRANSITIONS}
    final = _reachable() - leaving
    assert final == {
        (State.REFUSED, None),
        (State.DRY_RUN, Undo.EFFECTIVE),
        (State.EFFECTIVE, Undo.EFFECTIVE),
        (State.EFFECTIVE, Undo.FAILED),
        (State.FAILED, Undo.EFFECTIVE),
    }
    for phase in _reachable():
        assert _record(phase).settled == (phase in final), phase
        # an action without an undo is over once verified (or refused, or only logged)
        no_undo = _record(phase, ActionKind.RESELECT_GATEWAY)
        if phase[1] is None:
            assert no_undo.settled == (phase[0] in (State.EFFECTIVE, State.FAILED, State.REFUSED, State.DRY_RUN))


def test_undos_run_only_after_a_verdict_and_restores_only_for_what_helped():
    for (phase, event), nxt in RECORD_TRANSITIONS.items():
        if nxt[1] is not None and phase[1] is None:  # an undo decided
            assert phase[0] in (State.EFFECTIVE, State.FAILED, State.DRY_RUN)
            if phase[0] == State.FAILED:
                assert event == RecordEvent.ROLLBACK
            else:  # a restore: its symptom cleared, or its load budget is spent
                assert event in (RecordEvent.RESTORE, RecordEvent.OVER_BUDGET)
        if phase[1] is not None:  # once an undo is decided, the action's own state stays
            assert nxt[0] == phase[0], (phase, event)
    # the load budget's undo moves a record exactly as a restore does
    assert {p: n for (p, e), n in RECORD_TRANSITIONS.items() if e == RecordEvent.OVER_BUDGET} == {
        p: n for (p, e), n in RECORD_TRANSITIONS.items() if e == RecordEvent.RESTORE}
    # only a restore can fail (the symptom came back); a rollback undoes what did not help
    assert [k for k, v in RECORD_TRANSITIONS.items() if v[1] == Undo.FAILED] == [
        ((((State.EFFECTIVE, Undo.APPLIED)), RecordEvent.SYMPTOM_RETURNED))
    ]


def test_every_event_is_used_and_verdicts_are_only_for_applied_actions():
    assert {e for _, e in RECORD_TRANSITIONS} == set(RecordEvent)
    assert {e for _, e in INCIDENT_TRANSITIONS} == set(IncidentEvent)
    for event in (RecordEvent.HELPED, RecordEvent.DID_NOT_HELP):
        assert [p for p, e in RECORD_TRANSITIONS if e == event] == [(State.APPLIED, None)]
    for event in (RecordEvent.APPLIED, RecordEvent.DRY_RUN, RecordEvent.REFUSED):
        assert [p for p, e in RECORD_TRANSITIONS if e == event] == [START]


def test_incident_table():
    assert INCIDENT_TRANSITIONS == {
        (IncidentState.OPEN, IncidentEvent.HEAL): IncidentState.HEALED,
        (IncidentState.OPEN, IncidentEvent.CLOSE): IncidentState.CLOSED,
        (IncidentState.HEALED, IncidentEvent.CLOSE): IncidentState.CLOSED,
    }
    inc = _incident()
    assert inc.state == IncidentState.OPEN
    healed = transition(inc, IncidentEvent.HEAL, healed=2.0)
    assert healed.state == IncidentState.HEALED and healed.healed == 2.0
    closed = transition(healed, IncidentEvent.CLOSE, closed=3.0, resolution="healed: steer_off")
    assert closed.state == IncidentState.CLOSED and closed.to_json()["status"] == "closed"


# -- refusals ------------------------------------------------------------------------------------


def test_a_move_not_in_the_table_is_a_typed_error():
    rec = _record()
    with pytest.raises(HealStateError, match=r"p-a1: helped is not allowed in state planned") as err:
        transition(rec, RecordEvent.HELPED, outcome="never applied")
    assert isinstance(err.value, PermanentError) and isinstance(err.value, X0ttaError)
    assert (err.value.item, err.value.state, err.value.event) == ("p-a1", "planned", "helped")
    effective = transition(transition(rec, RecordEvent.APPLIED), RecordEvent.HELPED)
    with pytest.raises(HealStateError, match="rollback is not allowed in state effective"):
        transition(effective, RecordEvent.ROLLBACK)
    failed = transition(transition(rec, RecordEvent.APPLIED), RecordEvent.DID_NOT_HELP)
    with pytest.raises(HealStateError, match="restore is not allowed in state failed"):
        transition(failed, RecordEvent.RESTORE)
    with pytest.raises(HealStateError, match="restore is not allowed in state refused"):
        transition(transition(rec, RecordEvent.REFUSED), RecordEvent.RESTORE)
    with pytest.raises(HealStateError, match="close is not allowed"):  # an incident's event on a record
        transition(rec, IncidentEvent.CLOSE)  # type: ignore[call-overload]


def test_incident_refusals():
    with pytest.raises(HealStateError, match="heal is not allowed in state healed"):
        transition(_incident(healed=2.0), IncidentEvent.HEAL, healed=3.0)
    with pytest.raises(HealStateError, match="close is not allowed in state closed"):
        transition(_incident(closed=2.0), IncidentEvent.CLOSE, closed=3.0)
    with pytest.raises(HealStateError, match="leaves it open, not closed"):
        transition(_incident(), IncidentEvent.CLOSE, resolution="no time given")


def test_the_table_sets_the_phase_not_the_caller():
    with pytest.raises(TypeError):
        transition(_record(), RecordEvent.APPLIED, state=State.EFFECTIVE)


# -- property: random events ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(RecordEvent)), max_size=40), st.sampled_from([None, *list(Undo)]))
def test_random_events_move_a_record_only_along_the_table(events, start_undo):
    rec = _record((State.PLANNED, None) if start_undo is None else (State.EFFECTIVE, start_undo))
    taken = []
    for i, event in enumerate(events):
        before = rec
        try:
            rec = transition(rec, event, outcome=f"after {event}", reapplied=i)
        except HealStateError as exc:
            assert (before.phase, event) not in RECORD_TRANSITIONS
            assert exc.state == phase_name(before.phase) and exc.event == event
            assert rec is before  # nothing changed
            continue
        assert (before.phase, event) in RECORD_TRANSITIONS
        assert rec.phase == RECORD_TRANSITIONS[before.phase, event]
        # the move changes the phase and what it was told, nothing else
        assert replace(rec, state=before.state, undo_state=before.undo_state, outcome=before.outcome,
                       reapplied=before.reapplied) == before
        taken.append((before.phase, event))
    assert all(t in RECORD_TRANSITIONS for t in taken)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(IncidentEvent)), st.floats(min_value=0.0, max_value=1e6)),
                max_size=10))
def test_random_events_move_an_incident_only_along_the_table(events):
    inc = _incident()
    for event, at in events:
        before = inc
        field = {"heal": "healed", "close": "closed"}[event.value]
        try:
            inc = transition(inc, event, **{field: at})
        except HealStateError:
            assert (before.state, event) not in INCIDENT_TRANSITIONS
            assert inc is before
            continue
        assert inc.state == INCIDENT_TRANSITIONS[before.state, event]


# -- the loop meets a refused move -----------------------------------------------------------------


def _knowledge_with(rec: Record, inc: Incident | None = None) -> loop.Knowledge:
    inc = inc or _incident()
    k = loop.initial(HealSettings(), "p")
    return replace(k, incidents={inc.id: inc}, by_key={inc.key: inc.id}, records={rec.id: rec})


def test_step_leaves_a_record_the_table_refuses_as_it_was_and_says_so():
    # applied, with an undo applied too: a record nothing in the loop makes (say, a store edited by hand)
    rec = replace(_record((State.APPLIED, Undo.APPLIED)), applied=1.0, verify_at=2.0, undo_op=Op.RESTORE)
    k = _knowledge_with(rec)
    obs = Observation(at=10.0)
    k2, decisions = loop.step(k, obs, 10.0)  # verification is due; the symptom is not active
    assert k2.records == {rec.id: rec} and k2.stats == k.stats and not decisions
    assert k2.incidents[rec.incident].healed is None, "the refused verdict healed nothing"
    refused = [e for e in k2.events if e.name == "transition_refused"]
    assert [(e.incident, e.data["id"], e.data["state"], e.data["move"]) for e in refused] == [
        ("p-i1", "p-a1", "applied, undo applied", "helped")
    ]
    assert not any(e.name in ("verified", "healed") for e in k2.events)


def test_a_refused_move_drops_every_change_the_block_made():
    rec = _record((State.APPLIED, None))
    k = _knowledge_with(rec)
    st = Scratch(k, 5.0)
    with st.atomic(rec.incident):
        st.learn(rec, False, weight=2)
        st.next_id("a")
        st.event("verified", rec.incident, id=rec.id, ok=False)
        st.decisions.append(Decision(id=rec.id + "/undo", incident=rec.incident, op=Op.ROLLBACK,
                                     action=rec.action, symptom=rec.symptom))
        st.records[rec.id] = transition(rec, RecordEvent.DID_NOT_HELP)
        st.incidents[rec.incident] = transition(st.incidents[rec.incident], IncidentEvent.CLOSE, closed=5.0)
        transition(st.records[rec.id], RecordEvent.RESTORE)  # a failed action is rolled back, not restored
    after = st.finish()
    assert (after.records, after.incidents, after.stats, after.seq, st.decisions) == (
        k.records, k.incidents, k.stats, k.seq, [])
    assert [(e.name, e.data["move"], e.data["state"]) for e in after.events] == [
        ("transition_refused", "restore", "failed")]


def test_settle_of_a_result_the_record_already_has_is_refused_not_applied_twice():
    rec = replace(_record((State.APPLIED, None)), applied=1.0, verify_at=2.0)
    k = _knowledge_with(rec)
    k2 = loop.settle(k, [loop.Result(rec.id, "applied")], 5.0)
    assert k2.records[rec.id] == rec  # its verification deadline did not move
    assert [e.name for e in k2.events] == ["transition_refused", "executed"]
    # a refused undo of a record that has none keeps the incident's retry time too
    k3 = loop.settle(k, [loop.Result(rec.id + "/undo", "rate_limited", retry_in=30.0)], 5.0)
    assert k3.records[rec.id] == rec and k3.incidents == k.incidents


def test_resume_keeps_a_stored_record_the_table_refuses_as_stored():
    good = replace(_record(START), id="p-a2")
    bad = replace(_record((State.PLANNED, Undo.APPLIED)), undo_op=Op.RESTORE)
    data = {**_incident().to_json(), "actions": [bad.to_json(), good.to_json()]}
    k = loop.resume(loop.initial(HealSettings(), "q"), [data], 100.0)
    assert k.records["p-a1"] == record_from_json(bad.to_json())
    assert k.records["p-a2"].phase == (State.APPLIED, None) and k.records["p-a2"].applied == 100.0
    assert [e.data["id"] for e in k.events if e.name == "transition_refused"] == ["p-a1"]


def test_a_start_with_an_earlier_start_s_prefix_never_reuses_a_resumed_id():
    """Ids are the start's prefix and a number; a router without a clock can boot to the same time
    twice. Found by the property test below: a new record took a resumed record's id."""
    rec = replace(_record((State.APPLIED, None)), id="p-a7")
    data = {**_incident().to_json(), "actions": [rec.to_json()]}
    k = loop.resume(loop.initial(HealSettings(), "p"), [data], 100.0)
    st = Scratch(k, 101.0)
    assert st.next_id("a") == "p-a8"
    other = loop.resume(loop.initial(HealSettings(), "q"), [data], 100.0)
    assert Scratch(other, 101.0).next_id("a") == "q-a1"  # another start's ids do not count


# -- property: the loop moves only along the table -------------------------------------------------


def _moves(a: Phase, b: Phase, most: int) -> bool:
    """``b`` is ``a``, or reached from it in at most ``most`` moves of the table."""
    here = {a}
    for _ in range(most):
        here |= {nxt for (p, _), nxt in RECORD_TRANSITIONS.items() if p in here}
    return b in here


def _check(before: loop.Knowledge, after: loop.Knowledge, most: int) -> None:
    assert not [e for e in after.events if e.name == "transition_refused"]
    for rid, rec in after.records.items():
        old = before.records.get(rid)
        if old is None:
            assert rec.phase == START, rec  # a new record starts planned
        else:
            assert _moves(old.phase, rec.phase, most), (old.phase, rec.phase)
    closed = {a["id"]: record_from_json(a) for e in after.events if e.name == "incident_closed"
              for a in e.data["actions"]}
    for rid, rec in before.records.items():  # a record leaves only with its closed incident, settled
        if rid not in after.records:
            last = closed[rid]
            assert last.settled and _moves(rec.phase, last.phase, most), (rec.phase, last.phase)


script = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 1, 3, 5]),  # lost probes in a row on eth0
        st.booleans(),  # eth0 attached
        st.sampled_from([True, True, False]),  # eth0 carrier
        st.sampled_from([3, 3, 0]),  # other originators (0: a partition)
        st.sampled_from([100, 1000]),  # originator interval in effect
        st.floats(min_value=0.05, max_value=4.0),  # time to the next cycle
        st.sampled_from(["applied", "applied", "applied", "dry_run", "error"]),  # the executor's answer
        st.integers(min_value=0, max_value=25),  # 0: the agent restarts
    ),
    max_size=50,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script, st.booleans())
def test_the_loop_moves_records_only_along_the_table(ring, steps, suspect):
    """Scripted ring cycles (loss, detach by others, carrier loss, partitions, refusals, restarts):
    nothing is ever refused, a step moves a record by at most two moves of the table (a verdict
    and its rollback or restore), a settle or a resume by at most one."""
    s = HealSettings(silent_loss_raise_after=0.0, unstable_orig_interval=100, suspect_run=1 if suspect else 0)
    k = loop.initial(s, "p")
    now, restarts = 0.0, 0
    for lost_run, attached, up, others, interval, dt, outcome, restart in steps:
        now += dt
        obs = ring.obs(now, lost_run=lost_run, eth0_attached=attached, eth0_up=up, others=others, interval=interval)
        k2, decisions = loop.step(k, obs, now)
        _check(k, k2, 2)
        k = k2
        if decisions:
            k2 = loop.settle(k, [loop.Result(d.id, outcome) for d in decisions], now)
            _check(k, k2, 1)
            k = k2
        if restart == 0:
            data = [k.incident_json(i) for i in k.incidents]
            restarts += 1  # each start its own id prefix, as the service's start time gives it
            k2 = loop.resume(loop.initial(s, f"q{restarts}", k.stats), data, now)
            _check(k, k2, 1)
            k = k2


# -- the docs show the tables ----------------------------------------------------------------------


def _doc_rows(heading: str) -> set[tuple[str, str, str]]:
    text = DOCS.read_text()
    section = text.split(heading, 1)[1]
    rows = set()
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        m = re.fullmatch(r"\| (.+?) \| `(\w+)` \| (.+?) \|", line.strip())
        if m:
            rows.add(m.groups())
    return rows


def test_docs_show_the_record_table():
    want = {(phase_name(p), e.value, phase_name(n)) for (p, e), n in RECORD_TRANSITIONS.items()}
    assert _doc_rows("#### An action record") == want


def test_docs_show_the_incident_table():
    want = {(s.value, e.value, n.value) for (s, e), n in INCIDENT_TRANSITIONS.items()}
    assert _doc_rows("#### An incident") == want
