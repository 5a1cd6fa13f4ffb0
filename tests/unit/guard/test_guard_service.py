"""The guard subsystem: health follows the maps the probes hand over, admin commands, metrics, reload."""

from __future__ import annotations

import asyncio

import pytest

from x0tta.common.errors import DecodeError, PermanentError
from x0tta.config.guard import DetectSettings, GuardSettings
from x0tta.config.schema import AgentSettings
from x0tta.guard.core import parse_mac
from x0tta.guard.core.detect import SIGNATURES, Heard, Observation, unadmitted_frames
from x0tta.guard.enforce import KernelMaps
from x0tta.guard.service import GuardCommandError, GuardService
from x0tta.guard.testing import DictMap
from x0tta.telemetry.testing import StandaloneContext

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
MODE_KEY = b"\0\0\0\0"


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def running():
    settings = AgentSettings(guard=GuardSettings(mode="enforce", admitted_macs=(A,)))
    ctx = StandaloneContext(settings, name="guard")
    svc = GuardService(settings.guard)
    task = asyncio.create_task(svc.run(ctx))
    await settle()
    yield svc, ctx
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_health_follows_the_kernel_maps(running):
    svc, ctx = running
    assert ctx.health.codes == ["guard_not_enforced"]
    assert "probes" in ctx.health.conditions[0].message
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    await settle()
    assert ctx.health.conditions == ()
    assert set(maps.admitted.data) == {parse_mac(A)} and maps.config.data[MODE_KEY] == (1).to_bytes(8, "little")
    svc.kernel_maps(None)  # the probes stopped: nothing enforced, nothing forgotten
    await settle()
    assert ctx.health.codes == ["guard_not_enforced"] and svc.guard.is_admitted(A)


async def test_admin_commands(running):
    svc, ctx = running
    cmd = ctx.admin.handlers
    assert sorted(cmd) == ["guard.admit", "guard.list", "guard.mode", "guard.revoke"]
    maps = KernelMaps(DictMap(), DictMap())
    assert await cmd["guard.admit"]({"mac": B, "reason": "test"}) == {"mac": B, "changed": True}
    svc.kernel_maps(maps)  # an admission made before the maps came is written when they do
    assert parse_mac(B) in maps.admitted.data
    listing = await cmd["guard.list"]({})
    assert listing["mode"] == "enforce" and listing["enforced_in_kernel"]
    assert [(e["mac"], e["origin"], e["reason"]) for e in listing["admitted"]] == [
        (A, "static", "config"),
        (B, "dynamic", "test"),
    ]
    assert await cmd["guard.revoke"]({"mac": B}) == {"mac": B, "changed": True}
    assert parse_mac(B) not in maps.admitted.data
    assert await cmd["guard.mode"]({"mode": "observe"}) == {"mode": "observe"}
    assert maps.config.data[MODE_KEY] == (0).to_bytes(8, "little")
    with pytest.raises(GuardCommandError):
        await cmd["guard.mode"]({"mode": "block"})
    with pytest.raises(GuardCommandError):
        await cmd["guard.admit"]({})
    with pytest.raises(DecodeError):
        await cmd["guard.admit"]({"mac": "not a mac"})
    with pytest.raises(PermanentError):  # a static MAC is changed in the config, not at run time
        await cmd["guard.revoke"]({"mac": A})


async def test_metrics(running):
    svc, ctx = running
    value = ctx.registry.get_sample_value
    assert value("x0tta_guard_enforcing") == 1 and value("x0tta_guard_in_kernel") == 0
    svc.guard.admit(B)
    svc.kernel_maps(KernelMaps(DictMap(), DictMap()))
    assert value("x0tta_guard_in_kernel") == 1
    assert value("x0tta_guard_admitted", {"origin": "static"}) == 1
    assert value("x0tta_guard_admitted", {"origin": "dynamic"}) == 1


async def test_threats_are_counted_by_signature_from_zero(running):
    svc, ctx = running
    value = ctx.registry.get_sample_value
    assert all(value("x0tta_guard_threats_total", {"signature": name}) == 0 for name in SIGNATURES)
    obs = [Observation(0.0, heard=(Heard("wlan0", B, 0, 0.0),)), Observation(60.0, heard=(Heard("wlan0", B, 99, 0.0),))]
    svc.count_threats(unadmitted_frames(obs, DetectSettings(), 60.0) * 2)
    assert value("x0tta_guard_threats_total", {"signature": "unadmitted_frames"}) == 2
    assert value("x0tta_guard_threats_total", {"signature": "flow_flood"}) == 0


async def test_reload_in_place_and_restart_keep_dynamic_admissions(running):
    svc, ctx = running
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    svc.guard.admit(B, "handshake")
    new = AgentSettings(guard=GuardSettings(mode="observe", admitted_macs=()))
    assert await svc.reload(ctx, new) is True
    assert svc.guard.mode == "observe" and not svc.guard.is_admitted(A) and svc.guard.is_admitted(B)
    assert set(maps.admitted.data) == {parse_mac(B)} and maps.config.data[MODE_KEY] == (0).to_bytes(8, "little")
    assert await svc.reload(ctx, AgentSettings(guard=GuardSettings(enabled=False))) is False


async def test_a_restart_takes_the_settings_in_force_and_keeps_admissions_and_metrics():
    ctx = StandaloneContext(AgentSettings(), name="guard")
    svc = GuardService(ctx.settings.guard)
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    svc.guard.admit(B, "handshake")
    for mode in ("observe", "enforce"):  # the second run is what the supervisor does after a failure
        ctx.settings = AgentSettings(guard=GuardSettings(mode=mode, admitted_macs=(A,)))
        task = asyncio.create_task(svc.run(ctx))
        await settle()
        assert svc.guard.mode == mode and svc.guard.is_admitted(A) and svc.guard.is_admitted(B)
        assert ctx.health.conditions == ()  # bound all along
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert maps.config.data[MODE_KEY] == (1).to_bytes(8, "little")
    families = [m.name for m in ctx.registry.collect()]
    assert families.count("x0tta_guard_enforcing") == 1  # registered once
