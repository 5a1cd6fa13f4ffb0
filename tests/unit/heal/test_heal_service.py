"""The heal service's cycle end to end on a scripted kernel: store, metrics, traces, decision logs.

batman-adv does not exist on the host kernel, so the mesh client here is a scripted stand-in
returning the same typed records the real one decodes; the lab tests run the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.kit.clock import ManualClock
from x0tta.common.errors import TemporaryError
from x0tta.config.heal import HealSettings
from x0tta.config.schema import AgentSettings, NodeSettings
from x0tta.heal.core.model import ProbeStats
from x0tta.heal.links import LinkState
from x0tta.heal.service import HealService
from x0tta.heal.store import Store
from x0tta.mesh.core import batadv
from x0tta.telemetry.testing import StandaloneContext

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


class Kernel:
    def __init__(self) -> None:
        self.master = {"eth0": 10, "eth1": 10}
        self.penalty = {"eth0": 0, "eth1": 0}
        self.lossy = False
        self.overrides: dict = {}
        self.overrides_seen: list = []

    # MeshClient
    async def mesh_info(self, meshif):
        return batadv.MeshInfo(mesh_ifindex=10, mesh_ifname="bat0", mesh_address="02:00:00:00:00:01",
                               orig_interval=20, gw_mode=0, hop_penalty=30)

    async def hardifs(self, meshif):
        return [batadv.HardIf(hard_ifindex=i, hard_ifname=n, hard_address=f"02:00:00:00:01:0{i}",
                              active=True, hop_penalty=self.penalty[n])
                for i, n in ((2, "eth0"), (3, "eth1")) if self.master[n] == 10]

    async def originators(self, meshif):
        via_a = self.master["eth0"] == 10
        return [
            batadv.Originator(B, B, 3, 100, hard_ifname="eth1", flag_best=True, tq=250),
            batadv.Originator(A, A if via_a else B, 2 if via_a else 3, 100, hard_ifname="eth0" if via_a else "eth1",
                              flag_best=True, tq=200),
            # a node behind A: the route that says eth0 carries traffic again
            batadv.Originator("02:00:00:00:02:00", A if via_a else B, 2 if via_a else 3, 100,
                              hard_ifname="eth0" if via_a else "eth1", flag_best=True, tq=150),
            # ... heard the other way round too (a ring): the entry a steer-off of eth0 falls back on
            *([batadv.Originator("02:00:00:00:02:00", B, 3, 100, hard_ifname="eth1", flag_best=False, tq=90)]
              if via_a else []),
        ]

    async def neighbors(self, meshif):
        out = [batadv.Neighbor(B, 3, 100, hard_ifname="eth1")]
        if self.master["eth0"] == 10:
            out.append(batadv.Neighbor(A, 2, 100, hard_ifname="eth0"))
        return out

    async def gateways(self, meshif):
        return []

    async def snapshot(self, meshif):
        from x0tta.mesh.client import MeshSnapshot

        return MeshSnapshot(await self.mesh_info(meshif), await self.hardifs(meshif), await self.originators(meshif),
                            await self.neighbors(meshif), await self.gateways(meshif))

    async def set_mesh(self, meshif, values):
        pass

    async def set_hardif(self, meshif, hardif, values):
        assert self.master[hardif] == 10, "batman-adv takes an interface's settings only while attached"
        self.overrides_seen.append(("set_hardif", dict(self.overrides.get("hardif", {}))))
        self.penalty[hardif] = values["hop_penalty"]

    # Links (rtnetlink)
    async def state(self, fresh=False):
        return {name: LinkState(name, idx, True, True, self.master.get(name))
                for name, idx in (("bat0", 10), ("eth0", 2), ("eth1", 3))}

    async def detach(self, name):
        # what the mesh reconcile would see when batman-adv reports this change
        self.overrides_seen.append(("detach", set(self.overrides.get("detached", ()))))
        self.master[name] = None

    async def attach(self, meshif, name):
        self.overrides_seen.append(("attach", set(self.overrides.get("detached", ()))))
        self.master[name] = 10


class Prober:
    def __init__(self, kernel: Kernel, clock: ManualClock) -> None:
        self.kernel = kernel
        self.clock = clock
        self.sent = self.received = self.overruns = 0
        self.tracker = type("T", (), {"rejected": 0, "rejects": {}, "stalls": 0, "holds": 0})()
        self.lag = 0.0
        self.corroboration = "ebpf_neighbour"
        self.echo = True

    def take_lag(self):
        lag, self.lag = self.lag, 0.0
        return lag

    def link_rx(self):
        return {}

    def stats(self, carrier=None):
        run = 5 if self.kernel.lossy else 0
        now = self.clock.monotonic()
        return (ProbeStats("eth0", A, 20, 20 - run, run / 20, run, 0.3, now - 0.1 * run, scattered=1 if run else 0),
                ProbeStats("eth1", B, 20, 20, 0.0, 0, 0.3, now))


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event, **kw):
        self.lines.append((event, kw))

    info = warning = error = debug = _add


async def test_cycle_detects_acts_verifies_restores_and_records(tmp_path):
    heal = HealSettings(probe_enabled=False, verify_after=0.05, silent_loss_raise_after=0.0,
                        silent_loss_clear_after=0.1, restore_verify_after=0.1, reattach_hop_penalty=240,
                         suspect_run=0)
    settings = AgentSettings(node=NodeSettings(state_dir=str(tmp_path)), heal=heal)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ctx = StandaloneContext(settings, name="heal", state_dir=tmp_path, log=Log(), tracer=provider.get_tracer("heal"))
    kernel = Kernel()
    clock = ManualClock()  # the verification and restore delays pass without sleeping
    svc = HealService(heal, overrides=kernel.overrides, clock=clock)
    svc.settings = heal
    svc._tracer = ctx.tracer
    from x0tta.heal.service import _Metrics
    from x0tta.heal.store import AsyncStore

    svc._metrics = _Metrics(ctx.registry)
    svc._register_admin(ctx)
    # before the store is loaded, the state is "not yet known", never "no incidents": a caller
    # waiting for incidents to close must not be told they are closed while they are being resumed
    with pytest.raises(TemporaryError, match="starting"):
        await ctx.admin.handlers["heal.state"]({})
    store = AsyncStore(tmp_path / "heal.sqlite3")
    await svc._start(ctx, store, kernel, kernel)
    svc.prober = Prober(kernel, clock)

    async def cycle():
        await svc.cycle(ctx, kernel, kernel)

    await cycle()
    kernel.lossy = True
    await cycle()
    assert kernel.master["eth0"] is None, "steered off"
    assert svc.overrides == {"detached": {"eth0"}, "mesh": {}, "hardif": {}}
    clock.advance(0.06)
    await cycle()  # verified
    kernel.lossy = False
    await cycle()
    clock.advance(0.11)
    await cycle()  # symptom cleared -> restore, with the hop penalty held while the link is rated
    assert kernel.master["eth0"] == 10 and kernel.penalty["eth0"] == 240
    clock.advance(0.11)
    await cycle()  # restore held -> closed
    assert not svc.knowledge.incidents
    assert kernel.penalty["eth0"] == 240 and svc.overrides["hardif"] == {"eth0": {"hop_penalty": 240}}
    clock.advance(80 * 0.020)  # 80 OGMs at the mesh's 20 ms
    await cycle()
    assert kernel.penalty["eth0"] == 0 and svc.overrides["hardif"] == {}
    assert ("heal_hold_released", {"hardif": "eth0", "value": 240, "lower_to": 0}) in ctx.log.lines
    # the shared overrides name the detached interface before it is detached, drop it before it is
    # attached again, and name the held penalty while it lasts: the mesh reconcile never takes
    # any of these changes for drift
    assert kernel.overrides_seen == [("detach", {"eth0"}), ("attach", set()),
                                     ("set_hardif", {"eth0": {"hop_penalty": 240}}), ("set_hardif", {})]

    rows = await svc.store.incidents()
    assert len(rows) == 1 and rows[0]["status"] == "closed" and rows[0]["resolution"] == "healed: steer_off"
    full = await ctx.admin.handlers["heal.incident"]({"id": rows[0]["id"]})
    names = [e["name"] for e in full["events"]]
    for want in ("incident_opened", "decision", "executed", "verified", "healed", "symptom_cleared", "incident_closed"):
        assert want in names, want
    decision = next(e for e in full["events"] if e["name"] == "decision")
    assert any("silent_loss on link:eth0/" in r for r in decision["data"]["reasons"])
    # the prober's whole figure reaches the symptom (the losses before the run tell partial loss)
    assert any("scattered=1" in r for r in decision["data"]["reasons"]), decision["data"]["reasons"]
    state = await ctx.admin.handlers["heal.state"]({})
    assert state["stats"] == [{"symptom": "silent_loss", "action": "steer_off", "ok": 1, "failed": 0}]
    # which corroboration of a late neighbour's silence is in use, in the state and in status
    assert state["probe_corroboration"] == "ebpf_neighbour"
    assert "heal_probe_interface_corroboration" not in {c.code for c in svc.notes()}
    svc.prober.corroboration = "interface_counter"
    assert "heal_probe_interface_corroboration" in {c.code for c in svc.notes()}
    svc.prober.corroboration = "ebpf_neighbour"

    # one structured log line per decision, with its reasons
    decisions = [kw for ev, kw in ctx.log.lines if ev == "heal_decision"]
    assert [d["op"] for d in decisions] == ["apply", "restore"] and all(d["reasons"] for d in decisions)
    # metrics
    reg = ctx.registry
    assert reg.get_sample_value("x0tta_heal_symptoms_total", {"kind": "silent_loss"}) == 1
    assert reg.get_sample_value("x0tta_heal_actions_total",
                                {"kind": "steer_off", "op": "apply", "outcome": "applied"}) == 1
    assert reg.get_sample_value("x0tta_heal_actions_total",
                                {"kind": "restore_hardif", "op": "restore", "outcome": "applied"}) == 1
    assert reg.get_sample_value("x0tta_heal_time_to_heal_seconds_count", {"kind": "silent_loss"}) == 1
    assert reg.get_sample_value("x0tta_heal_time_to_detect_seconds_count", {"kind": "silent_loss"}) == 1
    assert reg.get_sample_value("x0tta_heal_cycle_duration_seconds_count") == 7
    # one trace per incident, a span per phase
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "heal.incident"]
    assert len(roots) == 1
    phases = {s.name for s in spans if s.context.trace_id == roots[0].context.trace_id} - {"heal.incident"}
    assert phases == {"heal.detect", "heal.alert", "heal.decide", "heal.execute", "heal.verify", "heal.undo",
                      "heal.close"}
    # the confirmed loss alerted the mesh in the incident's trace (not sent: no mesh interface here)
    (alert,) = [s for s in spans if s.name == "heal.alert"]
    assert alert.parent.span_id == roots[0].context.span_id
    assert alert.attributes["heal.kind"] == "silent_loss" and alert.attributes["heal.alert.sent"] is False
    await store.close()
    s = Store(tmp_path / "heal.sqlite3", readonly=True)
    assert s.integrity_check() == "ok"
    s.close()


def test_a_move_the_lifecycle_refuses_is_logged_and_kept_in_the_incident_timeline():
    from x0tta.heal.core.model import Event

    svc = HealService(HealSettings())
    ctx = StandaloneContext(AgentSettings(), name="heal", state_dir=Path("."), log=Log())
    ops: list = []
    data = {"id": "p-a1", "state": "planned", "move": "helped",
            "reason": "p-a1: helped is not allowed in state planned"}
    svc._on_event(ctx, Event("transition_refused", "p-i1", data), ops, None)
    assert ctx.log.lines == [("heal_transition_refused", {"incident": "p-i1", **data})]
    assert [(op, row[0], row[2]) for op, row in ops] == [("event", "p-i1", "transition_refused")]


def test_every_event_goes_to_the_listeners_and_a_failing_one_does_not_stop_the_loop():
    from x0tta.heal.core.model import Event

    svc = HealService(HealSettings())
    ctx = StandaloneContext(AgentSettings(), name="heal", state_dir=Path("."), log=Log())
    heard: list = []

    def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    svc.listeners += [broken, lambda *ev: heard.append(ev)]
    ops: list = []
    sym = {"symptom": {"kind": "link_down", "target": "eth1"}}
    svc._on_event(ctx, Event("symptom_cleared", "p-i1", sym), ops, None)
    assert heard == [("symptom_cleared", "p-i1", sym)]
    assert [(op, row[2]) for op, row in ops] == [("event", "symptom_cleared")]
    assert [name for name, _ in ctx.log.lines][-1] == "heal_listener_failed"


def test_the_load_budget_is_logged_counted_and_kept_in_the_incident_timeline():
    from x0tta.heal.core.model import Event
    from x0tta.heal.service import _Metrics

    svc = HealService(HealSettings())
    ctx = StandaloneContext(AgentSettings(), name="heal", state_dir=Path("."), log=Log())
    m = _Metrics(ctx.registry)
    ops: list = []
    data = {"op": "undone", "id": "p-a1", "kind": "tune_orig_interval",
            "reason": "load budget spent: tune_orig_interval in force 300.0 s of the last 600 s (load_budget 300 s)"}
    svc._on_event(ctx, Event("load_budget", "p-i1", data), ops, m)
    assert ctx.log.lines == [("heal_load_budget", {"incident": "p-i1", **data})]
    assert ctx.registry.get_sample_value("x0tta_heal_load_budget_total",
                                         {"kind": "tune_orig_interval", "op": "undone"}) == 1
    assert [(op, row[0], row[2]) for op, row in ops] == [("event", "p-i1", "load_budget")]


async def test_the_cycle_judges_an_action_an_operator_asked_for(tmp_path):
    """A ``heal`` fleet command's action is judged by the next cycle past its verify_after, against
    that cycle's observation: here no gateway is selected after a re-selection, so it did not help."""
    import asyncio

    from x0tta.common.errors import PermanentError
    from x0tta.heal.service import _Metrics, operator_action
    from x0tta.heal.store import AsyncStore

    heal = HealSettings(probe_enabled=False, alert_enabled=False, verify_after=0.05)
    settings = AgentSettings(node=NodeSettings(state_dir=str(tmp_path)), heal=heal)
    ctx = StandaloneContext(settings, name="heal", state_dir=tmp_path, log=Log())
    kernel, clock = Kernel(), ManualClock()
    svc = HealService(heal, overrides=kernel.overrides, clock=clock)
    svc._metrics = _Metrics(ctx.registry)
    store = AsyncStore(tmp_path / "heal.sqlite3")
    await svc._start(ctx, store, kernel, kernel)
    try:
        task = asyncio.create_task(operator_action(svc, "reselect_gateway", None, "cmd1"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert "operator-cmd1" in svc.operator_checks and svc.executor.trials
        await svc.cycle(ctx, kernel, kernel)  # too early: not judged
        assert not task.done()
        clock.advance(0.06)
        await svc.cycle(ctx, kernel, kernel)
        with pytest.raises(PermanentError, match="did not help: no gateway selected"):
            await task
        assert not svc.operator_checks and not svc.executor.trials
        assert ctx.registry.get_sample_value("x0tta_heal_verifications_total",
                                             {"kind": "reselect_gateway", "result": "failed"}) == 1
        (line,) = [kw for ev, kw in ctx.log.lines if ev == "heal_verified"]
        assert (line["op"], line["ok"], line["command"]) == ("operator", False, "cmd1")
    finally:
        await store.close()


async def test_the_service_heals_a_silent_link_its_own_probes_find_on_the_fake_net(tmp_path):
    """The real prober of the service, and one on each neighbour, exchange probes over the test
    kit's fake net on the manual clock: a link that goes silent (carrier up) is found by the
    probes, steered off, and put back once its probes are clean again - the whole incident from
    datagrams, not from scripted stats."""
    import asyncio

    from tests.kit.datanet import FakeNet
    from x0tta.config.mesh import MeshSettings
    from x0tta.heal.core.liveness import Tracker
    from x0tta.heal.liveness import Prober as RealProber
    from x0tta.heal.service import _Metrics
    from x0tta.heal.store import AsyncStore

    heal = HealSettings(verify_after=0.05, silent_loss_raise_after=0.0, silent_loss_clear_after=0.1,
                        restore_verify_after=0.1, alert_enabled=False)
    settings = AgentSettings(node=NodeSettings(state_dir=str(tmp_path)), heal=heal,
                             mesh=MeshSettings(hard_interfaces=("eth0", "eth1")))
    ctx = StandaloneContext(settings, name="heal", state_dir=tmp_path, log=Log())
    clock = ManualClock()
    net = FakeNet(clock)
    net.interface("me/eth0", mac="02:00:00:00:01:02")
    net.interface("me/eth1", mac="02:00:00:00:01:03")
    net.interface("a/eth0", mac=A)
    net.interface("b/eth0", mac=B)
    net.connect("me/eth0", "a/eth0")
    net.connect("me/eth1", "b/eth0")
    kernel = Kernel()
    svc = HealService(heal, overrides=kernel.overrides, clock=clock, datagrams=net.node("me"))
    svc.settings = heal
    svc._metrics = _Metrics(ctx.registry)
    svc._register_admin(ctx)
    store = AsyncStore(tmp_path / "heal.sqlite3")
    await svc._start(ctx, store, kernel, kernel)
    assert isinstance(svc.prober, RealProber)
    peers = [RealProber(Tracker(heal.probe_interval, heal.probe_window, heal.probe_peer_expiry), heal.probe_port,
                        heal.probe_interval, datagrams=net.node(n), clock=clock) for n in "ab"]
    tasks = [asyncio.create_task(svc.prober.run(svc._probe_ifaces))]
    tasks += [asyncio.create_task(p.run(lambda: ["eth0"])) for p in peers]

    async def cycles(seconds: float) -> None:
        """The loop's cycles every 50 ms of manual time, the probes running in between."""
        end = clock.monotonic() + seconds
        while clock.monotonic() < end:
            await clock.pass_time(0.05, 0.005)
            await svc.cycle(ctx, kernel, kernel)

    try:
        await cycles(3.0)
        assert kernel.master == {"eth0": 10, "eth1": 10} and not svc.knowledge.incidents  # healthy: nothing
        assert {(s.hardif, s.peer) for s in svc.prober.stats()} == {("eth0", A), ("eth1", B)}
        net.cut("me/eth0", "a/eth0")  # silent, its carrier up
        await cycles(1.0)
        assert kernel.master["eth0"] is None, "steered off"
        assert kernel.master["eth1"] == 10
        net.restore("me/eth0", "a/eth0")  # probes flow on the detached link: it sees the link heal
        await cycles(5.0)
        assert kernel.master["eth0"] == 10, "restored"
        assert not svc.knowledge.incidents
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    rows = await svc.store.incidents()
    # the run of lost probes was first a suspect (faster OGMs), then confirmed as silent loss
    assert {r["kind"]: (r["target"], r["status"], r["resolution"]) for r in rows} == {
        "link_suspect": (f"link:eth0/{A}", "closed", "cleared by itself"),
        "silent_loss": (f"link:eth0/{A}", "closed", "healed: steer_off")}
    (loss,) = [r for r in rows if r["kind"] == "silent_loss"]
    full = await ctx.admin.handlers["heal.incident"]({"id": loss["id"]})
    decision = next(e for e in full["events"] if e["name"] == "decision")
    assert any(f"silent_loss on link:eth0/{A}" in r for r in decision["data"]["reasons"]), decision
    assert ctx.registry.get_sample_value("x0tta_heal_symptoms_total", {"kind": "silent_loss"}) == 1
    await store.close()


async def started(tmp_path: Path, heal: HealSettings) -> tuple[HealService, Any, Kernel, ManualClock, Any]:
    """A heal service started on the fake kernel, with a manual clock and a store in ``tmp_path``."""
    from x0tta.heal.store import AsyncStore

    settings = AgentSettings(node=NodeSettings(state_dir=str(tmp_path)), heal=heal)
    ctx = StandaloneContext(settings, name="heal", state_dir=tmp_path, log=Log())
    kernel, clock = Kernel(), ManualClock()
    svc = HealService(heal, overrides=kernel.overrides, clock=clock)
    svc.settings = heal
    store = AsyncStore(tmp_path / "heal.sqlite3")
    await svc._start(ctx, store, kernel, kernel)
    return svc, ctx, kernel, clock, store


async def test_a_restarted_service_keeps_the_reattach_guard_of_its_last_restore(tmp_path):
    """Killed a few seconds after it restored a detached link, the next agent rebuilds the guard
    from the store, in the loop's own clock: the link is not detached again within reattach_guard."""
    from x0tta.heal.store import AsyncStore

    heal = HealSettings(probe_enabled=False, verify_after=0.05, silent_loss_raise_after=0.0,
                        silent_loss_clear_after=0.1, restore_verify_after=0.1, reattach_hop_penalty=240,
                        suspect_run=0)
    svc, ctx, kernel, clock, store = await started(tmp_path, heal)
    svc.prober = Prober(kernel, clock)
    restored = None
    for step in range(12):
        kernel.lossy = step in (1, 2)
        await svc.cycle(ctx, kernel, kernel)
        if restored is None and ("attach", set()) in kernel.overrides_seen:
            restored = clock.time()
        clock.advance(0.06)
    assert restored is not None and not svc.knowledge.incidents, "steered off, restored and closed"
    assert kernel.penalty["eth0"] == 240, "still held (1.6 s at 20 ms OGMs)"
    await store.close()  # the agent stops (a kill -9 leaves the same store: every write is a commit)

    clock.advance(5.0)
    svc = HealService(heal, overrides=kernel.overrides, clock=clock)
    svc.settings = heal
    store = AsyncStore(tmp_path / "heal.sqlite3")
    await svc._start(ctx, store, kernel, kernel)
    assert svc.knowledge.memory.reattached == {"eth0": restored}
    assert ("heal_reattach_guard_resumed", {"hardifs": ["eth0"]}) in ctx.log.lines
    # the hold of that restore was cut short by the kill: the new agent ends it at once
    assert ("heal_holds_resumed", {"holds": [{"hardif": "eth0", "value": 240, "lower_to": 0}]}) in ctx.log.lines
    assert kernel.penalty["eth0"] == 240
    await svc.cycle(ctx, kernel, kernel)  # the first observation keeps it
    assert svc.knowledge.memory.reattached == {"eth0": restored}
    assert kernel.penalty["eth0"] == 0 and not svc.executor.holds
    await store.close()


class LineKernel(Kernel):
    """The same node on a line: the node behind A is heard through eth0 only."""

    async def originators(self, meshif):
        return [o for o in await super().originators(meshif) if o.flag_best]


class Alerter:
    """What the service asks of its alert sender (x0tta/heal/alerts.py), recording the alerts."""

    def __init__(self) -> None:
        from x0tta.heal.core.alert import Board

        self.raised: list[str] = []
        self.board = Board(hold_max=10.0)
        self.rejects: dict = {}
        self.relayed = 0

    async def ensure(self, now):
        pass

    def raise_alert(self, kind, now, traceparent=None):
        self.raised.append(kind)

    def close(self):
        pass


@pytest.mark.parametrize(("kernel", "alerted"), [(Kernel, ["silent_loss"]), (LineKernel, [])], ids=["ring", "line"])
async def test_a_silent_link_alerts_the_mesh_unless_it_is_the_only_way(tmp_path, kernel, alerted):
    """The alert makes every node forward its OGMs unaggregated so the far end's reach the mesh
    around the dead link; on a line there is no around, so it is not sent (and said why)."""
    from x0tta.heal.store import AsyncStore

    heal = HealSettings(probe_enabled=False, silent_loss_raise_after=0.0, suspect_run=0)
    ctx = StandaloneContext(AgentSettings(node=NodeSettings(state_dir=str(tmp_path)), heal=heal), name="heal",
                            state_dir=tmp_path, log=Log())
    k, clock = kernel(), ManualClock()
    svc = HealService(heal, overrides=k.overrides, clock=clock)
    svc.settings = heal
    store = AsyncStore(tmp_path / "heal.sqlite3")
    await svc._start(ctx, store, k, k)
    svc.prober, svc.alerter = Prober(k, clock), Alerter()
    await svc.cycle(ctx, k, k)
    k.lossy = True
    await svc.cycle(ctx, k, k)
    assert svc.alerter.raised == alerted
    skipped = [kw for ev, kw in ctx.log.lines if ev == "heal_alert_not_sent"]
    assert bool(skipped) == (not alerted), skipped
    if skipped:
        assert "another router" in skipped[0]["reason"] and skipped[0]["kind"] == "silent_loss"
    await store.close()


async def test_a_stopping_agent_lowers_the_penalty_it_holds_on_a_reattached_link(tmp_path):
    """The hold after a re-attach ends with the agent: a node stopped for good must not keep its
    link penalised."""
    from x0tta.heal.core.model import Action, ActionKind, Decision, Op, evidence

    heal = HealSettings(probe_enabled=False, reattach_hop_penalty=240)
    svc, ctx, kernel, _clock, store = await started(tmp_path, heal)
    kernel.master["eth0"] = None
    undo = Action(ActionKind.RESTORE_HARDIF, "hardif:eth0", evidence(hardif="eth0", method="detach",
                                                                     previous_hop_penalty=0))
    assert (await svc.executor.execute(Decision("a1/undo", "i1", Op.RESTORE, undo, ("silent_loss", "x")))).ok
    assert kernel.penalty["eth0"] == 240 and svc.executor.holds
    await svc._give_back(ctx, kernel)
    assert kernel.penalty["eth0"] == 0 and not svc.executor.holds
    assert ("heal_stop_holds_released", {"holds": [{"hardif": "eth0", "value": 240, "lower_to": 0, "error": ""}]}
            ) in ctx.log.lines
    await store.close()
