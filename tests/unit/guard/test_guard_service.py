"""The guard subsystem: health follows the maps the probes hand over, admin commands, metrics, reload."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

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


@contextlib.asynccontextmanager
async def guard_running(guard: GuardSettings):
    """A guard subsystem running with ``guard`` as its settings: (service, context)."""
    settings = AgentSettings(guard=guard)
    ctx = StandaloneContext(settings, name="guard")
    svc = GuardService(settings.guard)
    task = asyncio.create_task(svc.run(ctx))
    await settle()
    try:
        yield svc, ctx
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def running():
    async with guard_running(GuardSettings(mode="enforce", admitted_macs=(A,))) as both:
        yield both


async def test_health_follows_the_kernel_maps(running):
    svc, ctx = running
    assert ctx.health.codes == ["guard_not_enforced"]
    assert "probes" in ctx.health.conditions[0].message
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    await settle()
    assert ctx.health.conditions == ()
    assert set(maps.admitted.data) == {parse_mac(A)} and maps.config.data[MODE_KEY][:4] == (1).to_bytes(4, "little")
    svc.kernel_maps(None)  # the probes stopped: nothing enforced, nothing forgotten
    await settle()
    assert ctx.health.codes == ["guard_not_enforced"] and svc.guard.is_admitted(A)


async def test_admin_commands(running):
    svc, ctx = running
    cmd = ctx.admin.handlers
    assert sorted(cmd) == ["guard.admit", "guard.list", "guard.mode", "guard.release", "guard.revoke", "guard.threats"]
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
    assert maps.config.data[MODE_KEY][:4] == (0).to_bytes(4, "little")
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


async def test_the_kernels_ogm_window_follows_the_detector_settings(running):
    from dataclasses import replace

    from x0tta.guard.enforce import CONFIG

    svc, ctx = running
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    assert CONFIG.unpack(maps.config.data[MODE_KEY]) == (1, 64, 40_000_000)  # the defaults: 64, 25 per second
    settings = AgentSettings(guard=replace(svc.settings, detect=DetectSettings(seqno_margin=200, seqno_rate=8.0)))
    assert await svc.reload(ctx, settings)
    assert CONFIG.unpack(maps.config.data[MODE_KEY]) == (1, 200, 125_000_000)


async def test_reload_in_place_and_restart_keep_dynamic_admissions(running):
    svc, ctx = running
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    svc.guard.admit(B, "handshake")
    new = AgentSettings(guard=GuardSettings(mode="observe", admitted_macs=()))
    assert await svc.reload(ctx, new) is True
    assert svc.guard.mode == "observe" and not svc.guard.is_admitted(A) and svc.guard.is_admitted(B)
    assert set(maps.admitted.data) == {parse_mac(B)} and maps.config.data[MODE_KEY][:4] == (0).to_bytes(4, "little")
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
    assert maps.config.data[MODE_KEY][:4] == (1).to_bytes(4, "little")
    families = [m.name for m in ctx.registry.collect()]
    assert families.count("x0tta_guard_enforcing") == 1  # registered once


# -- detection ------------------------------------------------------------------------------------

R = "02:00:00:00:00:66"


class Mesh:
    """What the wiring's observer would report: a rogue MAC whose denied frames grow, and B."""

    def __init__(self) -> None:
        self.looks = 0
        self.fail = False

    def __call__(self, now: float) -> Observation:
        self.looks += 1
        if self.fail:
            raise OSError("netlink went away")
        frames = 100 * self.looks
        rogue, honest = Heard("wlan0", R, frames, 0.0, now, frames), Heard("wlan0", B, frames, 0.0, now)
        return Observation(now, heard=(rogue, honest))


@pytest.fixture
async def looking():
    """A running guard whose own loop does not look (detection off): the tests call ``look``."""
    async with guard_running(GuardSettings(mode="enforce", detect=DetectSettings(enabled=False))) as both:
        both[0].identity_ready = lambda: True  # this node has its identity: it admits by handshake
        yield both


async def test_a_look_records_each_new_threat_once_per_hold(looking):
    from structlog.testing import capture_logs

    svc, ctx = looking
    svc.observe = Mesh()
    svc._wall = lambda: 1_796_528_506.0
    svc.guard.admit(B)
    with capture_logs() as logs:
        assert svc.look(ctx, 100.0) == []  # one look: no counter to grow yet
        [record] = svc.look(ctx, 170.0)
        assert svc.look(ctx, 175.0) == []  # the same threat within the hold
    assert record["batman"]["macs"] == [R] and record["alert"]["signature_id"] == 1430501
    assert record["host"] == ctx.node_id and record["timestamp"] == "2026-12-06T03:41:46.000000+0000"
    # enforce is configured but the maps are not in the kernel: nothing was blocked
    assert record["alert"]["action"] == "allowed" and record["alert"]["severity"] == 2
    assert [e["threat"] for e in logs if e["event"] == "guard_threat"] == [record]
    assert ctx.registry.get_sample_value("x0tta_guard_threats_total", {"signature": "unadmitted_frames"}) == 1
    assert await ctx.admin.handlers["guard.threats"]({}) == [record]
    assert await ctx.admin.handlers["guard.threats"]({"limit": 0}) == []
    with pytest.raises(GuardCommandError):
        await ctx.admin.handlers["guard.threats"]({"limit": "all"})


async def test_a_node_that_can_admit_nobody_records_unadmitted_frames_as_informational(looking):
    """No identity and no allow-list: every neighbour is unadmitted, which tells nobody anything."""
    svc, ctx = looking
    svc.observe = Mesh()
    svc.guard.admit(B)
    svc.identity_ready = lambda: False
    svc.look(ctx, 100.0)
    [record] = svc.look(ctx, 170.0)
    assert record["alert"]["severity"] == 4 and record["batman"]["evidence"]["admitting"] is False
    # recorded and counted by severity, but not among the threats the alert rules page on
    assert ctx.registry.get_sample_value("x0tta_guard_threats_total", {"signature": "unadmitted_frames"}) == 0
    assert ctx.registry.get_sample_value("x0tta_guard_threats_by_severity_total", {"severity": "info"}) == 1
    # an identity, but no peer subsystem to admit by handshake: nobody can be admitted either
    svc.identity_ready, svc.handshakes_admit = (lambda: True), False
    svc._reported.clear()
    [record] = svc.look(ctx, 175.0)
    assert record["alert"]["severity"] == 4
    svc.handshakes_admit = True
    svc.identity_ready = None  # no identity subsystem, but an allow-list: admission is possible
    svc._apply(replace(svc.settings, admitted_macs=(A,)))
    svc._reported.clear()
    [record] = svc.look(ctx, 240.0)
    assert record["alert"]["severity"] == 2 and record["batman"]["evidence"]["admitting"] is True


async def test_while_enforcing_in_the_kernel_unadmitted_frames_are_blocked_and_low(looking):
    svc, ctx = looking
    svc.observe = Mesh()
    svc.guard.admit(B)
    svc.kernel_maps(KernelMaps(DictMap(), DictMap()))
    svc.look(ctx, 100.0)
    [record] = svc.look(ctx, 170.0)
    assert record["alert"]["action"] == "blocked" and record["alert"]["severity"] == 3


async def test_a_failing_observer_is_logged_and_the_guard_goes_on(looking):
    from structlog.testing import capture_logs

    svc, ctx = looking
    svc.observe = mesh = Mesh()
    mesh.fail = True
    with capture_logs() as logs:
        assert svc.look(ctx, 100.0) == []
        assert await svc.look_async(ctx, 100.5) == []  # the loop's way: examined in a thread
    assert [e["event"] for e in logs] == ["guard_look_failed"] * 2 and "netlink" in logs[0]["error"]
    mesh.fail = False
    svc.look(ctx, 101.0)
    assert [o.at for o in svc.history] == [101.0]


async def test_the_guard_looks_every_interval_while_an_observer_is_wired():
    async with guard_running(GuardSettings(detect=DetectSettings(interval=0.5))) as (svc, ctx):
        svc.observe = mesh = Mesh()
        svc.kernel_maps(None)  # any change wakes the loop, which now has an observer
        for _ in range(100):
            if mesh.looks >= 2:
                break
            await asyncio.sleep(0.05)
        assert mesh.looks >= 2
        # detection off by a reload: no more looks
        assert await svc.reload(ctx, AgentSettings(guard=GuardSettings(detect=DetectSettings(enabled=False))))
        await settle()
        looks = mesh.looks
        await asyncio.sleep(0.7)
        assert mesh.looks == looks


async def test_a_refused_handshake_brings_the_next_look_forward():
    """An interval of a minute, and a look asked for: it comes about EARLY_LOOK_GAP after the last
    one, not a minute later; asking again before it comes asks once."""
    async with guard_running(GuardSettings(detect=DetectSettings(interval=60.0))) as (svc, _ctx):
        svc.observe = mesh = Mesh()
        svc.kernel_maps(None)  # wakes the loop, which now has an observer: the first look
        for _ in range(100):
            if mesh.looks:
                break
            await asyncio.sleep(0.05)
        assert mesh.looks == 1
        svc.look_soon()
        svc.look_soon()
        for _ in range(200):
            if mesh.looks > 1:
                break
            await asyncio.sleep(0.05)
        assert mesh.looks == 2
        await asyncio.sleep(0.2)
        assert mesh.looks == 2 and not svc._soon


async def test_originators_known_within_the_memory_are_familiar(looking):
    from x0tta.guard.core.detect import Route

    svc, ctx = looking
    tables = {"routes": tuple(Route(f"02:00:00:00:01:{i:02x}", A, "wlan0", tq=200) for i in range(100))}
    svc.observe = lambda now: Observation(now, **tables)
    svc.look(ctx, 0.0)
    tables["routes"] = tables["routes"][:2]  # a partition: most of the mesh purged from the tables
    svc.look(ctx, 300.0)
    svc.look(ctx, 600.0)
    tables["routes"] = tuple(Route(f"02:00:00:00:01:{i:02x}", A, "wlan0", tq=200) for i in range(100))
    assert svc.look(ctx, 660.0) == []  # back: no flood
    assert len(svc.history[-1].familiar) == 100



async def test_a_look_reads_the_kernels_ogm_map_and_reports_a_takeover(looking):
    """The OGM map the probes load, handed over with the guard's other maps: each look reads it
    (the events no earlier observation holds) and seqno_takeover judges them."""
    from dataclasses import replace

    from x0tta.guard.core.ogm import OgmEntry, OgmStream, encode_ogm_entry

    svc, ctx = looking
    c, ns, nowhere = "02:00:00:00:00:0c", 1_000_000_000, 999_999  # an interface index no host has
    honest = OgmStream(10 * ns, 40 * ns, 31, 1000, 1030, nowhere, B)
    ogms = DictMap(dict([encode_ogm_entry(OgmEntry(c, (honest,), 0, "BATMAN_IV"))]))
    svc.kernel_maps(KernelMaps(DictMap(), DictMap(), ogms))
    svc.observe = lambda now: Observation(now)
    assert svc.look(ctx, 41.0) == [] and svc.look(ctx, 42.0) == []
    assert sum(len(o.ogms) for o in svc.history) == 2  # an unchanged entry reads the same: kept once
    rogue = OgmStream(44 * ns, 47 * ns, 4, 800_000, 800_003, nowhere, R)
    ogms.update(*encode_ogm_entry(OgmEntry(c, (replace(honest, last_ns=48 * ns, seqno=1038), rogue), 1,
                                           "BATMAN_IV")))
    ogms.update(b"\x02" * 8, b"not an entry")
    [record] = svc.look(ctx, 49.0)
    assert record["batman"]["detector"] == "seqno_takeover" and record["batman"]["macs"] == [R]
    assert record["in_iface"] == str(nowhere)  # an index without a name (gone) stays a number
    assert (svc.ogm_originators, svc.ogm_jumps, svc.ogm_undecodable) == (1, 1, 1)
    assert ctx.registry.get_sample_value("x0tta_guard_ogm_undecodable_total") == 1
    svc.kernel_maps(None)  # the probes let the maps go: nothing to read, no error
    assert svc.look(ctx, 50.0) == [] and svc.ogm_originators == 0


async def test_a_neighbour_an_operator_released_is_not_put_back_by_the_evidence_from_before(looking):
    """The detectors keep a finding for their whole window: right after a release the heal loop
    would read the same old evidence and quarantine the neighbour again (the attack lab saw every
    release undone at the next look). For one window after an operator's release the MAC is left
    out of the active threats; past it, a threat that is still found counts again."""
    svc, ctx = looking
    svc.observe = Mesh()
    svc.guard.admit(B)
    svc.look(ctx, 100.0)
    svc.look(ctx, 170.0)
    assert [r["batman"]["macs"] for r in svc.active_threats()] == [[R]]
    clock = {"now": 170.0}
    svc._clock = lambda: clock["now"]
    assert svc.quarantine(R, 600.0, "unadmitted_frames") == ""
    assert svc.release(R) == [R]
    assert svc.active_threats() == []
    clock["now"] += svc.settings.detect.window + svc.settings.detect.interval - 1.0
    assert svc.active_threats() == []
    clock["now"] += 1.0
    assert [r["batman"]["macs"] for r in svc.active_threats()] == [[R]]
