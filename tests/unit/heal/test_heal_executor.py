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
