"""A healing action an operator asks for runs through the executor: its rate limit and breaker apply,
disabled actions and actions that need an incident are refused; once applied, the loop verifies it
as it verifies its own, and one that did not help fails and counts against its breaker."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import pytest
import structlog

from tests.kit.clock import ManualClock
from tests.kit.wait import until
from tests.unit.heal.test_heal_executor import FakeKernel, make
from x0tta.common.errors import PermanentError, TemporaryError
from x0tta.config.heal import HealSettings
from x0tta.heal.core.model import Gateway, Observation, SubsystemState
from x0tta.heal.service import HealService, operator_action

GOOD = Observation(at=0.0, gateways=(Gateway("02:00:00:00:00:01", True),))  # a gateway selected, no drift


def service(kernel: FakeKernel, burst: int = 1, fail_max: int = 3, **settings) -> HealService:
    clock = ManualClock()
    svc = HealService(HealSettings(**settings), clock=clock)
    svc.executor = make(kernel, clock, burst=burst, per_minute=1.0, fail_max=fail_max)
    return svc


async def judged(svc: HealService, obs: Observation, name: str, target: str | None, ref: str):
    """``operator_action``, with the heal loop's cycle judging it against ``obs`` once its time came."""
    task = asyncio.create_task(operator_action(svc, name, target, ref))
    await until(lambda: svc.operator_checks or task.done(), 5)
    if not task.done():
        svc.judge_operator_actions(SimpleNamespace(log=structlog.get_logger()), obs)  # too early: not judged
        assert svc.operator_checks and not task.done()
        await svc.clock.pass_time(svc.settings.verify_after)
        svc.judge_operator_actions(SimpleNamespace(log=structlog.get_logger()), obs)
    return await task


async def test_a_named_action_runs_once_then_the_rate_limit_holds_it():
    kernel = FakeKernel()
    svc = service(kernel)
    heard = []
    svc.listeners.append(lambda name, inc, data: heard.append((name, data.get("outcome", data.get("ok")))))
    out = await judged(svc, GOOD, "reselect_gateway", None, "c1")
    assert out["outcome"] == "applied" and kernel.calls == [("set_mesh", {"gw_sel_class": 20})]
    assert (out["verified"], out["verification"]) == (True, "gateway 02:00:00:00:00:01 selected")
    with pytest.raises(PermanentError, match="rate_limited"):
        await operator_action(svc, "reselect_gateway", None, "c2")
    assert len(kernel.calls) == 1
    assert heard == [("operator_action", "applied"), ("verified", True), ("operator_action", "rate_limited")]


async def test_an_action_that_did_not_help_fails_and_opens_its_breaker():
    kernel = FakeKernel()
    svc = service(kernel, burst=3, fail_max=1)
    heard = []
    svc.listeners.append(lambda name, inc, data: heard.append((name, dict(data))))
    with pytest.raises(PermanentError, match="applied but did not help: no gateway selected"):
        await judged(svc, Observation(at=0.0), "reselect_gateway", None, "c1")
    verdict = [d for n, d in heard if n == "verified"]
    assert verdict == [{"id": "operator-c1", "ok": False, "op": "operator", "kind": "reselect_gateway",
                        "target": "gw", "reason": "no gateway selected", "command": "c1"}]
    with pytest.raises(PermanentError, match="breaker_open"):
        await operator_action(svc, "reselect_gateway", None, "c2")
    assert len(kernel.calls) == 1 and not svc.operator_checks


async def test_restart_needs_a_target_and_reaches_the_subsystem():
    kernel = FakeKernel()
    svc = service(kernel)
    with pytest.raises(PermanentError, match="target"):
        await operator_action(svc, "restart_subsystem", "fleet", "c1")
    failing = Observation(at=0.0, subsystems=(SubsystemState("peer", "failing", "boom"),))
    with pytest.raises(PermanentError, match="peer still failing"):
        await judged(svc, failing, "restart_subsystem", "peer", "c2")
    assert kernel.calls == [("restart", "peer")]


async def test_a_verdict_that_does_not_come_leaves_the_result_open_and_the_loop_judges_it_later():
    svc = service(FakeKernel())
    task = asyncio.create_task(operator_action(svc, "reapply_settings", None, "c1"))
    await until(lambda: svc.operator_checks, 5)
    await svc.clock.pass_time(svc.settings.verify_after + 10.0)  # no cycle ran meanwhile
    out = await task
    assert out["verified"] is None and "not judged yet" in out["verification"]
    svc.judge_operator_actions(SimpleNamespace(log=structlog.get_logger()), GOOD)  # the loop comes round
    assert not svc.operator_checks and not svc.executor.trials


@pytest.mark.parametrize(("name", "match"), [("steer_off", "incident"), ("reboot", "no healing action"),
                                             ("reapply_settings", "disabled")])
async def test_refusals(name, match):
    svc = service(FakeKernel(), disabled_actions=("reapply_settings",))
    with pytest.raises(PermanentError, match=match):
        await operator_action(svc, name, None, "c1")


async def test_not_running_is_temporary():
    with pytest.raises(TemporaryError):
        await operator_action(HealService(), "reselect_gateway", None, "c1")




async def test_never_against_a_remedy_the_loop_holds():
    from x0tta.heal.core import loop
    from x0tta.heal.core.model import Action, ActionKind, evidence
    from x0tta.heal.core.records import Record, State

    kernel = FakeKernel()
    svc = service(kernel)
    tuned = Record("a1", "i1", ("silent_loss", "link:eth0/x"),
                   Action(ActionKind.TUNE_ORIG_INTERVAL, "ogm", evidence(interval_ms=200, previous_ms=1000)), (),
                   State.APPLIED, 0.0)
    k = loop.initial(svc.settings, "t")
    svc.knowledge = dataclasses.replace(k, records={"a1": tuned})
    with pytest.raises(PermanentError, match="would undo"):
        await operator_action(svc, "reapply_settings", None, "c1")
    gw = dataclasses.replace(tuned, id="a2", action=Action(ActionKind.RESELECT_GATEWAY, "gw"))
    svc.knowledge = dataclasses.replace(k, records={"a2": gw})
    with pytest.raises(PermanentError, match="holds reselect_gateway there for incident i1"):
        await operator_action(svc, "reselect_gateway", None, "c2")
    assert kernel.calls == []


def test_a_mesh_setting_an_operator_holds_is_desired_not_drift():
    """A fleet ``set_mesh`` holds a value the mesh reconcile keeps; the loop must not see it as
    config drift and put [mesh]'s value back (a tug of war with the reconcile), and its
    reapply_settings puts back the operator's value where something else changed it."""
    from x0tta.config.schema import AgentSettings
    from x0tta.heal.core.model import Drift
    from x0tta.mesh.core.reconcile import desired_mesh

    settings = AgentSettings()
    svc = HealService()
    svc.operator_mesh = lambda: {"orig_interval": 500}
    ctx = SimpleNamespace(settings=settings)

    def kernel_reports(**values):
        return SimpleNamespace(settings=lambda: {**desired_mesh(settings.mesh), **values})

    assert svc._drift(ctx, kernel_reports(orig_interval=500)) == ()
    assert svc._drift(ctx, kernel_reports(orig_interval=settings.mesh.orig_interval)) == (
        Drift("orig_interval", 500, settings.mesh.orig_interval),)
    assert svc._desired_mesh(ctx)["orig_interval"] == 500
