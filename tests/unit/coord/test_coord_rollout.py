"""The rollout state machine without I/O: turns by wave size, soak reports, abort criteria,
rollback in reverse order, pause, lost turns, and the signed bytes."""

from __future__ import annotations

import pytest

from x0tta.common.errors import DecodeError
from x0tta.coord.core import rollout as r
from x0tta.coord.core.rollout import AbortCriteria, Change, Phase, Report, Rollout, Sample, Step, TransitionError

NODES = ["n1", "n2", "n3", "n4", "n5"]
GOOD = Report(False)
BAD = Report(True, detail="unhealthy 0->1")


def doc(**over) -> Rollout:
    return Rollout(**{"id": "r1", "change": Change("mesh.orig_interval", 500), "targets": ("n*",), "wave": 1,
                      "soak": 5.0, "abort": AbortCriteria(worse_share=0.2), **over})


def turn(state, ro, node, now, report=GOOD):
    state = r.applying(state, ro, node, now)
    state = r.soaking(state, node, now + 1)
    return r.reported(state, ro, node, report, now + 2)


def test_wave_of_one_runs_node_by_node_to_done() -> None:
    ro = doc()
    s = r.start(ro, [*NODES, "gw1"], now=0)
    assert s.targets == tuple(NODES) and s.phase == Phase.APPLYING
    s = r.applying(s, ro, "n1", 1)
    assert not r.may_take_turn(s, ro, "n2")  # one at a time
    with pytest.raises(TransitionError):
        r.applying(s, ro, "n2", 1)
    s = r.reported(r.soaking(s, "n1", 2), ro, "n1", GOOD, 3)
    for i, n in enumerate(NODES[1:]):
        assert r.may_take_turn(s, ro, n)
        s = turn(s, ro, n, 10 + i * 3)
    assert s.phase == Phase.DONE and s.order == tuple(NODES)
    assert all(rec.step == Step.DONE for rec in s.nodes.values())


def test_wave_size_bounds_the_nodes_in_turn() -> None:
    ro = doc(wave=2)
    s = r.start(ro, NODES, 0)
    s = r.applying(s, ro, "n1", 1)
    s = r.applying(s, ro, "n2", 1)
    assert not r.may_take_turn(s, ro, "n3")
    s = r.reported(r.soaking(s, "n2", 2), ro, "n2", GOOD, 3)
    assert r.may_take_turn(s, ro, "n3")


def test_worse_health_aborts_after_the_first_wave_and_rolls_back_in_reverse_order() -> None:
    ro = doc(wave=2, abort=AbortCriteria(worse_share=0.5))
    s = r.start(ro, NODES, 0)
    s = r.applying(s, ro, "n1", 1)
    s = r.applying(s, ro, "n2", 2)
    s = r.reported(r.soaking(s, "n1", 3), ro, "n1", BAD, 4)
    assert s.phase == Phase.ABORTING and "worse on 1 of 1" in s.reason
    assert not r.may_take_turn(s, ro, "n3")  # the others never see it
    assert r.next_to_roll_back(s) == "n2"  # applied last, back first
    with pytest.raises(TransitionError):
        r.rolled_back(s, "n1", 5)
    s = r.rolled_back(s, "n2", 5)
    s = r.rolled_back(s, "n1", 6)
    assert s.phase == Phase.ROLLED_BACK and s.changed() == []


def test_worse_below_the_share_is_accepted() -> None:
    ro = doc(abort=AbortCriteria(worse_share=0.5))
    s = r.start(ro, ["n1", "n2", "n3"], 0)
    s = turn(s, ro, "n1", 0)
    s = turn(s, ro, "n2", 10)
    s = turn(s, ro, "n3", 20, BAD)  # 1 of 3 < 50 %
    assert s.phase == Phase.DONE


@pytest.mark.parametrize(("report", "why"), [
    (Report(False, heal_harm=1), "harmful heal"),
    (Report(False, lost_originators=2), "originators lost"),
])
def test_heal_harm_and_lost_originators_abort(report: Report, why: str) -> None:
    ro = doc(abort=AbortCriteria(worse_share=1.0, heal_harm=0, lost_originators=1))
    s = turn(r.start(ro, NODES, 0), ro, "n1", 0, report)
    assert s.phase == Phase.ABORTING and why in s.reason


def test_lost_turn_goes_back_to_the_queue() -> None:
    ro = doc()
    s = r.applying(r.start(ro, NODES, 0), ro, "n1", 1)
    s = r.soaking(s, "n1", 2)
    s = r.turn_lost(s, "n1", 3)
    assert "n1" not in s.nodes and s.order == () and r.may_take_turn(s, ro, "n1")
    assert s.lost_turns == {"n1": 1} and r.RolloutState.from_json(s.to_json()) == s


def test_a_node_that_loses_its_turn_again_and_again_aborts_the_rollout() -> None:
    """A change that cuts its node off from etcd: applied, the lease lost, undone, taken again -
    without end, were it not for MAX_LOST_TURNS. The node changed nothing when it is aborted (it
    undid its change with the lost turn), so the rollout ends rolled back at once."""
    ro = doc()
    s = r.start(ro, NODES, 0)
    for i in range(r.MAX_LOST_TURNS):
        assert s.phase == Phase.APPLYING
        s = r.applying(s, ro, "n1", 10 * i + 1)
        s = r.turn_lost(s, "n1", 10 * i + 5)
    assert s.phase == Phase.ROLLED_BACK and "n1 lost its turn 2 times" in s.reason
    assert not s.changed()


def test_pause_and_resume_and_abort_rules() -> None:
    ro = doc()
    s = r.start(ro, NODES, 0)
    p = r.pause(s, 1)
    assert not r.may_take_turn(p, ro, "n1")
    with pytest.raises(TransitionError):
        r.pause(p, 1)
    assert r.resume(p, 2).phase == Phase.APPLYING
    a = r.abort(p, "operator", 3)
    assert a.phase == Phase.ROLLED_BACK  # nothing had changed
    with pytest.raises(TransitionError):
        r.abort(a, "again", 4)


def test_all_applied_is_soaking_until_the_last_report() -> None:
    ro = doc(wave=2)
    s = r.start(ro, ["n1", "n2"], 0)
    s = r.applying(s, ro, "n1", 0)
    s = r.applying(s, ro, "n2", 0)
    s = r.soaking(r.soaking(s, "n1", 1), "n2", 1)
    assert s.phase == Phase.SOAKING
    s = r.reported(s, ro, "n1", GOOD, 2)
    assert s.phase == Phase.SOAKING
    assert r.reported(s, ro, "n2", GOOD, 3).phase == Phase.DONE


def test_no_target_is_refused() -> None:
    with pytest.raises(TransitionError):
        r.start(doc(targets=("gw-*",)), NODES, 0)


def test_state_and_document_round_trip_through_json() -> None:
    ro = doc()
    s = turn(r.start(ro, NODES, 0), ro, "n1", 0)
    assert r.RolloutState.from_json(s.to_json()) == s
    assert Rollout.from_json(ro.to_json()) == ro
    with pytest.raises(DecodeError):
        r.RolloutState.from_json({"phase": "exploded"})
    with pytest.raises(DecodeError):
        Rollout.from_json({"id": "x"})


def test_signed_bytes_are_canonical_and_cover_every_field() -> None:
    a = r.signed_bytes(doc())
    assert a.startswith(r.SIGNING_CONTEXT)
    assert a == r.signed_bytes(Rollout.from_json(doc().to_json()))
    for other in (doc(wave=2), doc(soak=6.0), doc(targets=("n1",)), doc(change=Change("mesh.orig_interval", 501)),
                  doc(abort=AbortCriteria(worse_share=0.3))):
        assert r.signed_bytes(other) != a
    # whole numbers where floats are read back: the bytes a node computes from the stored document
    whole = doc(soak=60, abort=AbortCriteria(worse_share=1))
    assert r.signed_bytes(whole) == r.signed_bytes(Rollout.from_json(whole.to_json()))


@pytest.mark.parametrize("bad", [{"id": "../x"}, {"wave": 0}, {"soak": -1.0}, {"targets": ()},
                                 {"change": Change("Bad Name", 1)}, {"abort": AbortCriteria(worse_share=0)}])
def test_bad_documents_are_refused(bad) -> None:
    with pytest.raises(DecodeError):
        doc(**bad)


def test_judge_compares_health_before_and_after() -> None:
    assert not r.judge(Sample(0, 0, 4), Sample(0, 0, 4)).worse
    assert r.judge(Sample(0, 0, 4), Sample(1, 0, 4)).worse
    rep = r.judge(Sample(0, 1, 4), Sample(0, 2, 3))
    assert rep.worse and rep.heal_harm == 1 and rep.lost_originators == 1


def test_per_segment_allows_one_node_of_each_segment_in_turn() -> None:
    ro = doc(wave=3, per_segment=True)
    segs = {"n1": "east", "n2": "east", "n3": "west", "n4": "", "n5": ""}
    s = r.start(ro, segs, 0)
    assert dict(s.segments) == {"n1": "east", "n2": "east", "n3": "west"}
    s = r.applying(s, ro, "n1", 1)
    assert not r.may_take_turn(s, ro, "n2")  # east is changing
    assert r.may_take_turn(s, ro, "n3") and r.may_take_turn(s, ro, "n4")
    s = r.applying(r.applying(s, ro, "n3", 1), ro, "n4", 1)
    assert not r.may_take_turn(s, ro, "n5")  # the wave bounds it too
    s = r.reported(r.soaking(s, "n1", 2), ro, "n1", GOOD, 3)
    assert r.may_take_turn(s, ro, "n2")
    assert r.RolloutState.from_json(s.to_json()) == s
    assert r.signed_bytes(ro) != r.signed_bytes(doc(wave=3))


def test_rollout_sign_makes_the_signature_nodes_verify(tmp_path, capsys):
    """`x0tta rollout sign` signs exactly `rollout bytes` with the operator's hybrid key."""
    import json

    from x0tta.cli.main import main
    from x0tta.coord.service import operator_verifier
    from x0tta.identity.core.operator import OperatorKey

    key = OperatorKey.generate()
    (tmp_path / "op.key.pem").write_bytes(key.to_pem())
    path = tmp_path / "r1.json"
    path.write_text(json.dumps(doc().to_json()))
    assert main(["rollout", "sign", str(path), "--operator-key", str(tmp_path / "op.key.pem")]) == 0
    sig = capsys.readouterr().out.encode()
    assert operator_verifier(key.public.to_pem(), r.signed_bytes(doc()), sig)
    assert not operator_verifier(OperatorKey.generate().public.to_pem(), r.signed_bytes(doc()), sig)
