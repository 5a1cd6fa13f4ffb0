"""A healing action an operator asks for runs through the executor: its rate limit and breaker apply,
disabled actions and actions that need an incident are refused."""

from __future__ import annotations

import dataclasses

import pytest

from tests.kit.clock import ManualClock
from tests.unit.heal.test_heal_executor import FakeKernel, make
from x0tta.common.errors import PermanentError, TemporaryError
from x0tta.config.heal import HealSettings
from x0tta.heal.service import HealService, operator_action


def service(kernel: FakeKernel, **settings) -> HealService:
    svc = HealService(HealSettings(**settings))
    svc.executor = make(kernel, ManualClock(), burst=1, per_minute=1.0)
    return svc


async def test_a_named_action_runs_once_then_the_rate_limit_holds_it():
    kernel = FakeKernel()
    svc = service(kernel)
    heard = []
    svc.listeners.append(lambda name, inc, data: heard.append((name, data["outcome"])))
    out = await operator_action(svc, "reselect_gateway", None, "c1")
    assert out["outcome"] == "applied" and kernel.calls == [("set_mesh", {"gw_sel_class": 20})]
    with pytest.raises(PermanentError, match="rate_limited"):
        await operator_action(svc, "reselect_gateway", None, "c2")
    assert len(kernel.calls) == 1 and heard == [("operator_action", "applied"), ("operator_action", "rate_limited")]


async def test_restart_needs_a_target_and_reaches_the_subsystem():
    kernel = FakeKernel()
    svc = service(kernel)
    with pytest.raises(PermanentError, match="target"):
        await operator_action(svc, "restart_subsystem", "fleet", "c1")
    await operator_action(svc, "restart_subsystem", "peer", "c2")
    assert kernel.calls == [("restart", "peer")]


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
