"""The executor: idempotent actions, breakers that open on unverified actions, rate limits, dry run."""

from __future__ import annotations

from tests.kit.clock import ManualClock
from x0tta.heal.breakers import Breakers
from x0tta.heal.core.model import Action, ActionKind, Decision, Op, evidence
from x0tta.heal.executor import Executor


class FakeKernel:
    """Just enough kernel: which hard interfaces are attached, and the mesh settings."""

    def __init__(self) -> None:
        self.attached = {"eth0": True, "eth1": True}
        self.hop_penalty = {"eth0": 0, "eth1": 0}
        self.mesh = {"orig_interval": 1000, "gw_sel_class": 20}
        self.calls: list[tuple] = []
        self.fail = False

    async def detach(self, hardif):
        self.calls.append(("detach", hardif))
        if self.fail:
            raise OSError("EBUSY")
        self.attached[hardif] = False

    async def attach(self, hardif):
        self.calls.append(("attach", hardif))
        self.attached[hardif] = True

    async def set_hardif(self, hardif, values):
        self.calls.append(("set_hardif", hardif, dict(values)))
        self.hop_penalty[hardif] = values["hop_penalty"]

    async def set_mesh(self, values):
        self.calls.append(("set_mesh", dict(values)))
        self.mesh.update(values)

    async def mesh_settings(self):
        return dict(self.mesh)

    async def desired_drift(self):
        return {"orig_interval": 1000} if self.mesh["orig_interval"] != 1000 else {}

    async def restart_subsystem(self, name):
        self.calls.append(("restart", name))


def steer(i: int, op: Op = Op.APPLY, kind: ActionKind = ActionKind.STEER_OFF, method: str = "detach") -> Decision:
    a = Action(kind, "hardif:eth0", evidence(hardif="eth0", method=method, hop_penalty=255, previous_hop_penalty=0),
               disruptive=True)
    return Decision(id=f"a{i}" + ("/undo" if op != Op.APPLY else ""), incident="i1", op=op, action=a,
                    symptom=("silent_loss", "link:eth0/x"))


def make(kernel, clock, dry_run=False, burst=3, per_minute=6.0, fail_max=3):
    return Executor(kernel, dry_run=dry_run, breakers=Breakers(fail_max, 60.0, clock.monotonic), rate_burst=burst,
                    rate_per_minute=per_minute, clock=clock.monotonic)


async def test_actions_are_idempotent_and_undone():
    k, c = FakeKernel(), ManualClock()
    ex = make(k, c)
    for i in range(2):
        assert (await ex.execute(steer(i))).ok
        ex.verified(f"a{i}", True, "")
    assert k.attached["eth0"] is False
    assert (await ex.execute(steer(0, Op.RESTORE, ActionKind.RESTORE_HARDIF))).ok
    assert k.attached["eth0"] is True
    assert (await ex.execute(steer(3, method="penalty"))).ok and k.hop_penalty["eth0"] == 255
    assert (await ex.execute(steer(3, Op.RESTORE, ActionKind.RESTORE_HARDIF, method="penalty"))).ok
    assert k.hop_penalty["eth0"] == 0
    tune = Decision("t1", "i2", Op.APPLY, Action(ActionKind.TUNE_ORIG_INTERVAL, "mesh",
                                                  evidence(interval_ms=250, previous_ms=1000)), ("partition", "mesh"))
    assert (await ex.execute(tune)).ok and k.mesh["orig_interval"] == 250
    reapply = Decision("r1", "i3", Op.APPLY, Action(ActionKind.REAPPLY_SETTINGS, "mesh"), ("config_drift", "mesh"))
    assert (await ex.execute(reapply)).ok and k.mesh["orig_interval"] == 1000
    gw = Decision("g1", "i4", Op.APPLY, Action(ActionKind.RESELECT_GATEWAY, "gw"), ("gateway_lost", "gw"))
    assert (await ex.execute(gw)).ok and ("set_mesh", {"gw_sel_class": 20}) in k.calls


async def test_unverified_actions_open_the_breaker_and_rollback_still_runs():
    k, c = FakeKernel(), ManualClock()
    ex = make(k, c, burst=100, per_minute=600)
    for i in range(3):
        r = await ex.execute(steer(i))
        assert r.ok
        ex.verified(f"a{i}", False, "routes did not move")
    r = await ex.execute(steer(9))
    assert r.outcome == "breaker_open" and 59 <= r.retry_in <= 60
    assert ex.breakers.states() == {"steer_off:hardif:eth0": "open"}
    # undoing harm is never refused
    assert (await ex.execute(steer(1, Op.ROLLBACK, ActionKind.RESTORE_HARDIF))).ok
    c.advance(61)
    r = await ex.execute(steer(10))
    assert r.ok and ex.breakers.states()["steer_off:hardif:eth0"] == "half-open"
    ex.verified("a10", True, "")
    assert ex.breakers.states()["steer_off:hardif:eth0"] == "closed"


async def test_kernel_errors_count_against_the_breaker():
    k, c = FakeKernel(), ManualClock()
    k.fail = True
    ex = make(k, c, burst=100, per_minute=600, fail_max=2)
    assert [(await ex.execute(steer(i))).outcome for i in range(3)] == ["error", "error", "breaker_open"]


async def test_rate_limit_and_dry_run():
    k, c = FakeKernel(), ManualClock()
    ex = make(k, c, burst=2, per_minute=6)
    outcomes = []
    for i in range(5):
        r = await ex.execute(steer(i))
        ex.verified(f"a{i}", True, "")
        outcomes.append(r.outcome)
    assert outcomes == ["applied", "applied", "rate_limited", "rate_limited", "rate_limited"]
    c.advance(10.0)  # one token per 10 s
    assert (await ex.execute(steer(7))).ok
    dry = make(FakeKernel(), c, dry_run=True)
    r = await dry.execute(steer(1))
    assert r.outcome == "dry_run" and dry.actuator.calls == []


def held(kernel, clock, penalty=240, changes=None):
    """An executor that re-attaches with ``penalty`` held; ``changes`` collects its holds each time
    it tells of a change."""
    def told():
        if changes is not None:
            changes.append(dict(ex.holds))

    ex = Executor(kernel, dry_run=False, breakers=Breakers(3, 60.0, clock.monotonic), rate_burst=3,
                  rate_per_minute=6.0, clock=clock.monotonic, reattach_hop_penalty=penalty, on_holds=told)
    return ex


async def test_a_restored_detach_holds_a_raised_hop_penalty_until_the_link_is_rated():
    k, c = FakeKernel(), ManualClock()
    k.mesh["orig_interval"] = 50
    k.hop_penalty["eth0"] = 15  # what the operator set: the hold lowers to it, not to 0
    changes: list[dict] = []
    ex = held(k, c, changes=changes)
    a = steer(0)
    a = Decision(a.id, a.incident, a.op, Action(a.action.kind, a.action.target, evidence(
        hardif="eth0", method="detach", previous_hop_penalty=15), disruptive=True), a.symptom)
    assert (await ex.execute(a)).ok and k.attached["eth0"] is False
    undo = Decision("a0/undo", "i1", Op.RESTORE, Action(ActionKind.RESTORE_HARDIF, "hardif:eth0", a.action.params),
                    a.symptom)
    assert (await ex.execute(undo)).ok
    # attached, then at once the hold's penalty (batman-adv takes settings only while attached)
    assert k.calls[-2:] == [("attach", "eth0"), ("set_hardif", "eth0", {"hop_penalty": 240})]
    assert changes and "eth0" in changes[-1]  # the reconcile knew before the kernel did
    assert ex.holds["eth0"].due == c.monotonic() + 4.0  # 80 OGMs of 50 ms
    c.advance(3.9)
    assert await ex.release_holds() == [] and k.hop_penalty["eth0"] == 240
    c.advance(0.1)
    [(hold, error)] = await ex.release_holds()
    assert error == "" and hold.to_json() == {"hardif": "eth0", "value": 240, "lower_to": 15}
    assert k.hop_penalty["eth0"] == 15 and ex.holds == {} and changes[-1] == {}


async def test_a_rollback_attaches_at_once_without_a_hold():
    k, c = FakeKernel(), ManualClock()
    ex = held(k, c)
    assert (await ex.execute(steer(0))).ok
    assert (await ex.execute(steer(0, Op.ROLLBACK, ActionKind.RESTORE_HARDIF))).ok
    assert k.attached["eth0"] is True and k.hop_penalty["eth0"] == 0 and ex.holds == {}


async def test_a_steer_off_during_a_hold_is_restored_to_the_value_before_it():
    k, c = FakeKernel(), ManualClock()
    ex = held(k, c)
    assert (await ex.execute(steer(0))).ok
    assert (await ex.execute(steer(0, Op.RESTORE, ActionKind.RESTORE_HARDIF))).ok
    assert k.hop_penalty["eth0"] == 240 and "eth0" in ex.holds
    # the plan saw 240 as the link's penalty before this steer-off
    a = Action(ActionKind.STEER_OFF, "hardif:eth0", evidence(hardif="eth0", method="penalty", hop_penalty=255,
                                                              previous_hop_penalty=240), disruptive=True)
    assert (await ex.execute(Decision("a1", "i2", Op.APPLY, a, ("silent_loss", "link:eth0/x")))).ok
    assert k.hop_penalty["eth0"] == 255 and ex.holds == {}  # no hold left to lower it under the steer-off
    c.advance(60.0)
    assert await ex.release_holds() == [] and k.hop_penalty["eth0"] == 255
    undo = Decision("a1/undo", "i2", Op.RESTORE, Action(ActionKind.RESTORE_HARDIF, "hardif:eth0", a.params),
                    ("silent_loss", "link:eth0/x"))
    assert (await ex.execute(undo)).ok and k.hop_penalty["eth0"] == 0


async def test_a_refused_lowering_stays_held_and_is_tried_again():
    k, c = FakeKernel(), ManualClock()
    ex = held(k, c)
    assert (await ex.execute(steer(0))).ok
    assert (await ex.execute(steer(0, Op.RESTORE, ActionKind.RESTORE_HARDIF))).ok
    assert ex.holds["eth0"].due == c.monotonic() + 10.0  # 1 s OGMs: 80 s, at most 10
    real = k.set_hardif

    async def refuse(hardif, values):
        raise OSError("EBUSY")

    k.set_hardif = refuse
    c.advance(10.0)
    [(_hold, error)] = await ex.release_holds()
    assert "EBUSY" in error and "eth0" in ex.holds and k.hop_penalty["eth0"] == 240
    k.set_hardif = real
    assert [e for _h, e in await ex.release_holds(everything=True)] == [""] and k.hop_penalty["eth0"] == 0


async def test_no_hold_when_turned_off_or_already_penalised_as_much():
    for penalty, before in ((0, 0), (240, 250)):
        k, c = FakeKernel(), ManualClock()
        k.hop_penalty["eth0"] = before
        ex = held(k, c, penalty=penalty)
        a = Action(ActionKind.STEER_OFF, "hardif:eth0", evidence(hardif="eth0", method="detach",
                                                                  previous_hop_penalty=before), disruptive=True)
        assert (await ex.execute(Decision("a0", "i1", Op.APPLY, a, ("silent_loss", "link:eth0/x")))).ok
        undo = Action(ActionKind.RESTORE_HARDIF, "hardif:eth0", a.params)
        assert (await ex.execute(Decision("a0/undo", "i1", Op.RESTORE, undo, ("silent_loss", "link:eth0/x")))).ok
        assert k.attached["eth0"] and k.hop_penalty["eth0"] == before and ex.holds == {}


async def test_a_detach_during_a_hold_leaves_no_held_penalty_behind_and_a_refused_one_keeps_the_hold():
    k, c = FakeKernel(), ManualClock()
    ex = held(k, c)
    assert (await ex.execute(steer(0))).ok
    ex.verified("a0", True, "")  # each breaker trial closed, as the loop does
    assert (await ex.execute(steer(0, Op.RESTORE, ActionKind.RESTORE_HARDIF))).ok
    assert k.hop_penalty["eth0"] == 240 and "eth0" in ex.holds
    k.fail = True  # the kernel refuses the next detach: the hold stays, to end as planned
    assert (await ex.execute(steer(1))).outcome == "error"
    assert "eth0" in ex.holds and k.attached["eth0"]
    k.fail = False
    assert (await ex.execute(steer(2))).ok and ex.holds == {} and not k.attached["eth0"]
    ex.verified("a2", False, "harm")
    # the detach did harm: rolled back, attached at once with no hold, and the penalty from
    # before the first detach put back (the kernel kept the held one through the detach)
    assert (await ex.execute(steer(2, Op.ROLLBACK, ActionKind.RESTORE_HARDIF))).ok
    assert k.attached["eth0"] and k.hop_penalty["eth0"] == 0 and ex.holds == {}
