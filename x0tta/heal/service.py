"""The heal subsystem: runs the MAPE-K loop on this node.

One cycle (:meth:`HealService.cycle`):

1. **Monitor** - read the mesh (generic netlink dumps of hard interfaces, originators, neighbours,
   gateways and mesh settings; rtnetlink for carrier and membership of each hard interface), the
   liveness probe stats and the other subsystems' health into one immutable
   :class:`~x0tta.heal.core.model.Observation`. Polling is adaptive: ``poll_interval`` while all
   is well, ``fast_poll_interval`` while a symptom is pending or active or an action awaits
   verification; a link event (RTNLGRP_LINK) or a probe loss runs a cycle at once.
2. **Analyze, Plan** - :func:`x0tta.heal.core.loop.step`.
3. **Knowledge first** - the incident and every decided action are written to the store
   *before* the executor runs them.
4. **Execute** - :class:`~x0tta.heal.executor.Executor` (breakers, rate limits, dry run); the
   results go back into the knowledge (:func:`~x0tta.heal.core.loop.settle`) and to the store.

Observability: ``x0tta_heal_*`` metrics (cycle duration, symptoms by kind, actions by kind and
outcome, verifications, breaker states, time to detect and to heal), one OpenTelemetry trace per
incident (root span ``heal.incident``; a child span per phase: detect, decide, execute, verify,
undo, close), and one ``heal_decision`` log line per decision with its reasons and the
alternatives it rejected.

Admin commands: ``heal.incidents`` (args ``limit``, ``status``), ``heal.incident`` (``id``),
``heal.state`` (active symptoms, open incidents, breakers, probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from x0tta.clock import SYSTEM, Clock
from x0tta.common.errors import CapabilityMissing, PermanentError, TemporaryError
from x0tta.common.health import Condition
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.heal import HealSettings
from x0tta.config.schema import AgentSettings
from x0tta.heal.alerts import Alerter
from x0tta.heal.breakers import Breakers
from x0tta.heal.conditions import (
    HEAL_MONITOR_FAILING,
    HEAL_PROBE_ECHO_UNAVAILABLE,
    HEAL_PROBE_INTERFACE_CORROBORATION,
    HEAL_PROBES_UNAUTHENTICATED,
    HEAL_PROBES_WITHOUT_SESSIONS,
    HEAL_STRAINED,
)
from x0tta.heal.core import loop
from x0tta.heal.core.alert import Board
from x0tta.heal.core.linkkeys import LinkKeys
from x0tta.heal.core.liveness import Tracker
from x0tta.heal.core.model import (
    Action,
    ActionKind,
    AlertHeard,
    Decision,
    Drift,
    Event,
    Gateway,
    HardIf,
    Neighbour,
    Observation,
    Op,
    Originator,
    ProbeStats,
    SubsystemState,
    ThreatSeen,
    evidence,
)
from x0tta.heal.core.plan import UNDO, mesh_values, only_way_since
from x0tta.heal.core.strain import Strain
from x0tta.heal.core.verify import effect
from x0tta.heal.datagrams import HOST, Datagrams
from x0tta.heal.executor import Executor, MeshActuator
from x0tta.heal.links import Links
from x0tta.heal.liveness import BY_INTERFACE, Prober
from x0tta.heal.store import FILENAME, AsyncStore
from x0tta.telemetry.logging import get_logger
from x0tta.telemetry.tracing import traceparent_of

if TYPE_CHECKING:  # imported where it runs (run()): the mesh client is not needed before
    from x0tta.mesh.client import MeshClient

GW_MODES = {0: "off", 1: "client", 2: "server"}
# Symptoms of this node's links that alert the mesh: confirmed failures only. A suspect link gets
# faster OGMs from this node alone; a false suspicion (a peer's agent stalled for 150 ms) must not
# make every node of the mesh act.
ALERT_ON = ("silent_loss", "link_down")
BREAKER_STATE = {"closed": 0, "half-open": 1, "open": 2}


class _Metrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.cycle = Histogram(
            "x0tta_heal_cycle_duration_seconds", "Duration of one MAPE-K cycle (monitor to execute)",
            registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.symptoms = Counter("x0tta_heal_symptoms_total", "Symptoms raised, by kind", ["kind"], registry=r)
        self.harm = Counter(
            "x0tta_heal_harm_total", "Actions judged harmful (a link of this node failed right after) and rolled back",
            ["kind"], registry=r,
        )
        self.actions = Counter(
            "x0tta_heal_actions_total", "Decisions executed, by action kind, operation and outcome",
            ["kind", "op", "outcome"], registry=r,
        )
        self.verified = Counter(
            "x0tta_heal_verifications_total", "Action effects judged, by action kind and result",
            ["kind", "result"], registry=r,
        )
        self.breaker = Gauge(
            "x0tta_heal_breaker_state", "Breaker per action kind and target: 0 closed, 1 half-open, 2 open",
            ["breaker"], registry=r,
        )
        self.incidents_open = Gauge("x0tta_heal_incidents_open", "Incidents not yet closed", registry=r)
        self.ttd = Histogram(
            "x0tta_heal_time_to_detect_seconds", "From a symptom's onset to its incident", ["kind"], registry=r,
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
        )
        self.tth = Histogram(
            "x0tta_heal_time_to_heal_seconds", "From a symptom's onset to the action that healed it",
            ["kind"], registry=r, buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0),
        )
        self.alerts = Counter(
            "x0tta_heal_alerts_total", "Mesh alerts, by direction (sent, received, rejected, relayed)",
            ["direction"], registry=r,
        )
        self.probes = Counter(
            "x0tta_heal_probes_total",
            "Liveness probes, by direction (sent, received, rejected, dropped: by the kernel on a full probe socket)",
            ["direction"], registry=r,
        )
        self.refused = Counter(
            "x0tta_heal_probes_refused_total",
            "Liveness probes refused, by reason (malformed, unauthenticated, not_for_us, bad_tag, wrong_sender, "
            "replayed)", ["reason"], registry=r,
        )
        self.alerts_refused = Counter(
            "x0tta_heal_alerts_refused_total", "Mesh alerts refused, by reason (as for probes)", ["reason"], registry=r,
        )
        self.load_budget = Counter(
            "x0tta_heal_load_budget_total",
            "Load-raising remedies refused or undone by the load budget, by kind and op", ["kind", "op"], registry=r,
        )
        self.link_keys = Gauge("x0tta_heal_link_keys", "Probe keys from neighbour sessions in force", registry=r)
        self.strained = Gauge(
            "x0tta_heal_strained", "1 while this agent is itself late or over its CPU share and backs off", registry=r,
        )
        self.cpu = Gauge("x0tta_heal_agent_cpu_ratio", "The agent's own CPU, as a share of one CPU (smoothed)",
                         registry=r)
        self.node_cpu = Gauge("x0tta_heal_node_cpu_ratio",
                              "The node's CPU time spent busy, as a share of all its CPUs (smoothed)", registry=r)


class HealService(Subsystem):
    name = "heal"

    def __init__(
        self,
        settings: HealSettings | None = None,
        *,
        subsystem_health: Callable[[], list[dict[str, Any]]] | None = None,
        restart_subsystem: Callable[[str], Awaitable[None]] | None = None,
        overrides: dict[str, Any] | None = None,
        clock: Clock = SYSTEM,
        datagrams: Datagrams = HOST,
    ) -> None:
        self.settings = settings or HealSettings()
        self.clock = clock  # every time read, sleep and poll wait of the loop goes through it
        self.datagrams = datagrams  # where the probes' and alerts' endpoints come from (x0tta.heal.datagrams)
        self._subsystem_health = subsystem_health
        self._restart = restart_subsystem
        # Shared with the mesh reconcile when the wiring provides it: what heal changed on
        # purpose ({"detached": set of hard interfaces, "mesh": {attr: value}}), not drift.
        self.overrides = overrides
        self.knowledge: loop.Knowledge | None = None
        self.store: AsyncStore | None = None
        self.executor: Executor | None = None
        self._mesh: MeshClient | None = None  # while running: its read counters for heal.state
        self.prober: Prober | None = None
        self.alerter: Alerter | None = None
        # Probe keys from the neighbours' PQ mTLS sessions; the wiring feeds it (peer_changed) and
        # sets ``required`` when this node has an identity and a peer subsystem.
        self.link_keys = LinkKeys()
        self.identity_ready: Callable[[], bool] | None = None  # the wiring's: has this node an SVID yet
        # the wiring's: the probes subsystem's last_rx(ifindex, mac), per-neighbour eBPF figures
        self.neighbour_rx: Callable[[int, str], float | None] | None = None
        # the wiring's, from the guard: the threat records of its last look, the MACs it holds in
        # quarantine, and its quarantine(mac, ttl, reason) -> "" or why not (docs/guard.md)
        self.threats: Callable[[], list[dict[str, Any]]] | None = None
        self.quarantined: Callable[[], Iterable[str]] | None = None
        self.quarantine: Callable[[str, float, str], str] | None = None
        # the wiring's, from the mesh subsystem: the mesh settings operators hold by fleet command
        # (set_mesh, docs/fleet.md). Their values are the desired ones: not drift to put back.
        self.operator_mesh: Callable[[], Mapping[str, Any]] | None = None
        self._counted: dict[str, dict[str, int]] = {}  # what _add has counted so far, per counter
        self._wake = asyncio.Event()
        self._metrics: _Metrics | None = None
        self._registry_id: int | None = None
        self._known_hardifs: set[str] = set()
        self._spans: dict[str, Any] = {}
        self._tracer: Any = None
        self.cycles = 0
        self.strain = _strain(self.settings)
        # Called with (name, incident, data) for every event of the loop; the wiring adds the fleet's.
        self.listeners: list[Callable[[str, str, Mapping[str, Any]], None]] = []
        # Actions run on an operator's request (operator_action), awaiting their verdict: by decision id.
        self.operator_checks: dict[str, OperatorCheck] = {}
        self.log: Any = get_logger("heal")  # the context's, once running

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        from x0tta.mesh.client import MeshClient

        s = self.settings = ctx.settings.heal
        self.log = ctx.log
        self.strain = _strain(s)
        self._tracer = ctx.tracer
        if self._registry_id != id(ctx.registry):
            self._metrics = _Metrics(ctx.registry)
            self._registry_id = id(ctx.registry)
            self._register_admin(ctx)
        mesh = self._mesh = MeshClient()
        try:
            await mesh.open()
        except CapabilityMissing:
            await mesh.close()
            raise
        store = AsyncStore(Path(ctx.state_dir) / FILENAME)
        links = Links()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._start(ctx, store, mesh, links)
            links.watch(self._wake.set)
            if s.probe_enabled and self.prober is not None:
                tasks.append(asyncio.create_task(self.prober.run(self._probe_ifaces), name="heal-probes"))
            await self._loop(ctx, mesh, links)
        finally:
            for chk in self.operator_checks.values():
                if not chk.verdict.done():
                    chk.verdict.set_result((None, "the heal loop stopped before it could verify it"))
            self.operator_checks.clear()
            await self._give_back(ctx, mesh)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self.alerter is not None:
                self.alerter.close()
            for span in self._spans.values():
                span.end()
            self._spans.clear()
            await links.close()
            await mesh.close()
            await store.close()
            self.store = None

    async def _give_back(self, ctx: Context, mesh: Any) -> None:
        """On a stop, put back the mesh settings heal holds (the faster OGM interval, the paused
        aggregation): an agent stopped for good must not leave its node sending 20 OGMs a second.
        A restarted agent resumes its incidents, and while one still needs a setting the mesh
        reconcile applies it again from the overrides. Steer-offs stay: attaching a link known
        to be dead would be worse, and the restarted agent restores it when its probes are clean."""
        if self.executor is not None and self.executor.holds:  # no re-attached link held for ever
            try:
                released = await self.clock.wait_for(self.executor.release_holds(everything=True), 2.0)
                ctx.log.info("heal_stop_holds_released", holds=[{**h.to_json(), "error": e} for h, e in released])
            except Exception as exc:
                ctx.log.warning("heal_stop_holds_release_failed", hardifs=sorted(self.executor.holds),
                                error=str(exc))
        values: dict[str, Any] = {}
        for r in self._in_effect():
            if r.action.kind in UNDO:  # a steer-off's undo sets no mesh setting: it stays
                values.update(mesh_values(dataclasses.replace(r.action, kind=UNDO[r.action.kind])))
        if not values:
            return
        if self.overrides is not None:
            self.overrides["mesh"] = {}
        try:
            await self.clock.wait_for(mesh.set_mesh(ctx.settings.mesh.interface, values), 2.0)
            ctx.log.info("heal_stop_restored", settings=values)
        except Exception as exc:  # stopping anyway: say what is left behind
            ctx.log.warning("heal_stop_restore_failed", settings=values, error=str(exc))

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        return False  # thresholds live in the knowledge; a restart resumes incidents from the store

    async def _start(self, ctx: Context, store: AsyncStore, mesh: Any, links: Any) -> None:
        s = self.settings
        if self._restart is None and "restart_subsystem" not in s.disabled_actions:
            # nothing here can restart another subsystem: say so once, instead of failing each time
            s = self.settings = dataclasses.replace(s, disabled_actions=(*s.disabled_actions, "restart_subsystem"))
        await store.open()
        self.store = store
        now = self.clock.time()
        k = loop.initial(s, f"{int(now * 1000):x}", await store.load_stats())
        open_incidents = await store.load_open()
        if open_incidents:
            k = loop.resume(k, open_incidents, now)
            ctx.log.info("heal_resumed", incidents=[i["id"] for i in open_incidents])
            await self._record(ctx, k, [])
        # this agent's restores just before the restart: the first observation cannot tell them
        # (both times in the loop's clock, time(): the records' times are the loop's ``now``)
        undone = await store.load_undone_steer_offs(now - s.reattach_guard)
        k = loop.remember_reattached(k, undone, now)
        if k.memory.reattached:
            ctx.log.info("heal_reattach_guard_resumed", hardifs=sorted(k.memory.reattached))
        self.knowledge = k
        pruned = await store.prune(now, s.retention_days, s.retention_max_incidents)
        if pruned:
            ctx.log.info("heal_pruned", incidents=pruned)
        meshif = ctx.settings.mesh.interface
        self._known_hardifs = set(ctx.settings.mesh.hard_interfaces)

        def desired() -> dict[str, Any]:
            return self._desired_mesh(ctx) if ctx.settings.mesh.manage else {}

        actuator = MeshActuator(mesh, links, meshif, desired=desired, restart=self._restart,
                                quarantine=self.quarantine)
        metrics = self._metrics

        def on_breaker(name: str, state: str) -> None:
            ctx.log.warning("heal_breaker", breaker=name, state=state)
            if metrics is not None:
                metrics.breaker.labels(name).set(BREAKER_STATE.get(state, 0))

        breakers = Breakers(s.breaker_fail_max, s.breaker_reset_timeout, self.clock.monotonic, on_change=on_breaker)
        self.executor = Executor(
            actuator, dry_run=s.dry_run, breakers=breakers, rate_burst=s.rate_burst,
            rate_per_minute=s.rate_per_minute, clock=self.clock.monotonic,
            reattach_hop_penalty=s.reattach_hop_penalty, on_holds=self._update_overrides,
        )
        await self._resume_holds(ctx, mesh, undone)
        key = None
        if s.probe_key_file and (s.probe_enabled or s.alert_enabled):
            key = (await asyncio.to_thread(Path(s.probe_key_file).read_bytes)).strip() or None
        if s.alert_enabled:
            self.alerter = Alerter(Board(s.alert_hold_max), meshif, s.alert_port, s.alert_hold, key=key,
                                   wake=self._wake.set, log=ctx.log, link_keys=self.link_keys, tracer=ctx.tracer,
                                   datagrams=self.datagrams, clock=self.clock)
        if s.probe_enabled:
            tracker = Tracker(s.probe_interval, s.probe_window, s.probe_peer_expiry, key=key, link_keys=self.link_keys)
            self.prober = Prober(tracker, s.probe_port, s.probe_interval, wake=self._wake.set,
                                 suspect_run=min(s.silent_loss_run, s.suspect_run or s.silent_loss_run), log=ctx.log,
                                 neighbour_rx=self.neighbour_rx, datagrams=self.datagrams, clock=self.clock)
            if self.alerter is not None:  # once keyed by sessions, alerts go hop by hop over these sockets
                self.alerter.hops = self.prober
                self.prober.on_alert = self.alerter.hop_receive

    async def _resume_holds(self, ctx: Context, mesh: Any, undone: list[dict[str, Any]]) -> None:
        """A re-attached link's hold that an agent killed during it left behind (its restore in the
        store, ``undone``, and the interface still at the held penalty) ends at the first cycle."""
        if self.executor is None or not self.settings.reattach_hop_penalty:
            return  # holds off: nothing to read at start
        from x0tta.heal.core.records import record_from_json

        restored: dict[str, int] = {}
        for data in undone:
            with contextlib.suppress(Exception):  # a record the store cannot give back whole
                rec = record_from_json(data)
                if rec.action.param("method") == "detach" and rec.undo_op == Op.RESTORE:
                    restored[rec.action.param("hardif")] = rec.action.param("previous_hop_penalty") or 0
        if not restored:
            return
        try:
            hardifs = await mesh.hardifs(ctx.settings.mesh.interface)
        except Exception as exc:
            ctx.log.warning("heal_holds_resume_failed", hardifs=sorted(restored), error=str(exc))
            return
        resumed = self.executor.resume_holds(restored, {h.hard_ifname: h.hop_penalty for h in hardifs})
        if resumed:
            ctx.log.info("heal_holds_resumed", holds=[h.to_json() for h in resumed])

    def _probe_ifaces(self) -> set[str]:
        return set(self._known_hardifs)

    async def _loop(self, ctx: Context, mesh: Any, links: Any) -> None:
        s = self.settings
        failures = 0
        while True:
            k = self.knowledge
            busy = k is not None and (k.busy or bool(self.executor and self.executor.trials)
                                      or bool(self.operator_checks))
            fast = s.strained_poll_interval if self.strain.strained else s.fast_poll_interval
            timeout = fast if busy else s.poll_interval
            if self.executor is not None and self.executor.holds:  # a re-attached link's hold ends
                due = min(h.due for h in self.executor.holds.values()) - self.clock.monotonic()
                timeout = max(0.0, min(timeout, due))
            with contextlib.suppress(TimeoutError):
                await self.clock.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                await self.cycle(ctx, mesh, links)
                failures = 0
                ctx.health.set(*self.notes())
            except (TemporaryError, OSError) as exc:
                failures += 1
                ctx.log.warning("heal_cycle_failed", error=str(exc))
                if failures >= 3:
                    ctx.health.set(HEAL_MONITOR_FAILING(str(exc)))
                await self.clock.sleep(min(5.0, s.poll_interval * failures))

    def session_keys_due(self, log: Any = None) -> bool:
        """Take probe keys from sessions from now on, if this node just got its identity; True then."""
        if self.link_keys.required or self.identity_ready is None or not self.identity_ready():
            return False
        self.link_keys.required = True
        if self.prober is not None:  # what was learnt from unauthenticated probes is no evidence now
            self.prober.tracker.start_over()
        if log is not None:
            log.info("heal_probes_session_keyed", sessions=self.link_keys.count(self.clock.monotonic()))
        return True

    def peer_changed(self, change: Any) -> None:
        """A neighbour session came up or went (``x0tta.peer.service.PeerChange``, duck-typed: heal
        does not import peer). A session over a hard interface's link-local address keys the
        probes on that interface; any other session (a routed address) keys nothing."""
        host, key = str(getattr(change, "host", "")), bytes(getattr(change, "link_key", b""))
        addr, _, hardif = host.strip("[]").partition("%")
        if not hardif or not addr.lower().startswith("fe80:") or len(key) < 16:
            return
        now = self.clock.monotonic()
        if getattr(change, "up", False):
            self.link_keys.up(hardif, host, key, now)
        else:
            self.link_keys.down(hardif, key, now)

    def notes(self) -> tuple[Condition, ...]:
        """What an operator should know about how far the loop can be trusted (``x0tta status``)."""
        out = []
        s = self.settings
        if s is not None and (s.probe_enabled or s.alert_enabled):
            if self.link_keys.required:
                if not self.link_keys.count(self.clock.monotonic()):
                    out.append(HEAL_PROBES_WITHOUT_SESSIONS(
                        "liveness probes are keyed by the neighbours' PQ mTLS sessions and none is up yet: "
                        "no probe is taken, so the loop acts on batman-adv's tables alone",
                    ))
            elif not s.probe_key_file:
                out.append(HEAL_PROBES_UNAUTHENTICATED(
                    "liveness probes and mesh alerts carry no tag (no node identity and peer sessions to key "
                    "them, and [heal] probe_key_file is empty): anyone on a mesh link can fake or hide loss on "
                    "that link (the loop steers traffic, never admits anyone) or make the nodes forward OGMs "
                    "unaggregated for alert_hold_max",
                ))
        if self.strain.strained:
            out.append(HEAL_STRAINED(
                f"this agent is itself short of CPU ({self.strain.reason}): one late probe does not make a "
                "link suspect and the fast cycle runs every strained_poll_interval, until it has been on "
                "time for strain_hold",
            ))
        if self.prober is not None and not self.prober.echo:
            out.append(HEAL_PROBE_ECHO_UNAVAILABLE(
                f"no raw ICMPv6 socket for the kernel echo ({self.prober.echo_error}; the unit grants "
                "CAP_NET_RAW): a neighbour whose agent is starved of CPU could be taken for a dead link, so "
                "silent loss takes twice silent_loss_run and no link is suspect on one late probe",
            ))
        if self.prober is not None and self.prober.corroboration == BY_INTERFACE:
            out.append(HEAL_PROBE_INTERFACE_CORROBORATION(
                "a late neighbour's silence is checked against its interface's receive counter (no eBPF "
                "per-neighbour counters: the probes subsystem is off or not loaded, or has no entry for it): "
                "another neighbour's frames on that interface can hide a dead link until batman-adv notices",
            ))
        return tuple(out)

    # -- one cycle ----------------------------------------------------------------------------

    async def observe(self, ctx: Context, mesh: Any, links: Any) -> Observation:
        meshif = ctx.settings.mesh.interface
        snap = await mesh.snapshot(meshif)
        info, hard, origs, neighs, gws = snap.info, snap.hardifs, snap.originators, snap.neighbors, snap.gateways
        batadv_hard = {h.hard_ifname: h for h in hard}
        self._known_hardifs |= set(batadv_hard)
        state = await links.state()
        hardifs = []
        for name in sorted(self._known_hardifs):
            link = state.get(name)
            if link is None:  # the interface vanished
                continue
            b = batadv_hard.get(name)
            hardifs.append(HardIf(
                name=name,
                oper_up=link.up and link.running,
                attached=link.master == info.mesh_ifindex,
                active=bool(b.active) if b else False,
                hop_penalty=b.hop_penalty if b else None,
            ))
        wall, mono = self.clock.time(), self.clock.monotonic()
        self.strain.sample(mono, time.process_time(), self.prober.take_lag() if self.prober is not None else 0.0,
                           node_cpu_times())
        if self.alerter is not None:
            await self.alerter.ensure(mono)  # the mesh interface may have appeared since
        probes: tuple[ProbeStats, ...] = ()
        if self.prober is not None:
            probes = tuple(
                dataclasses.replace(p, last_rx=None if p.last_rx is None else wall - (mono - p.last_rx))
                for p in self.prober.stats({h.name: h.oper_up for h in hardifs})
            )
        return Observation(
            at=wall,
            originators=tuple(
                Originator(o.orig_address, o.neigh_address, o.hard_ifname or str(o.hard_ifindex), o.tq, o.throughput,
                           o.last_seen_msecs)
                for o in origs if o.flag_best
            ),
            other_routes=tuple(
                Originator(o.orig_address, o.neigh_address, o.hard_ifname or str(o.hard_ifindex), o.tq, o.throughput,
                           o.last_seen_msecs)
                for o in origs if not o.flag_best
            ),
            neighbours=tuple(
                Neighbour(n.neigh_address, n.hard_ifname or str(n.hard_ifindex), n.tq, n.throughput, n.last_seen_msecs)
                for n in neighs
            ),
            hardifs=tuple(hardifs),
            gateways=tuple(Gateway(g.orig_address, g.flag_best, g.bandwidth_down, g.bandwidth_up) for g in gws),
            probes=probes,
            subsystems=self._subsystems(),
            drift=self._drift(ctx, info),
            orig_interval_ms=info.orig_interval,
            gw_mode=GW_MODES.get(info.gw_mode) if info.gw_mode is not None else None,
            aggregation=info.aggregated_ogms_enabled,
            alerts=tuple(AlertHeard(h.origin, h.kind, self.alerter.keyed or h.origin == self.alerter.origin)
                         for h in self.alerter.board.active(mono))
            if self.alerter is not None else (),
            strained=self.strain.strained,
            node_busy=self.strain.node_busy,
            echo_missing=self.prober is not None and not self.prober.echo,
            threats=threats_seen(self.threats() if self.threats is not None else [],
                                 {n.neigh_address.lower() for n in neighs}),
            quarantined=frozenset(m.lower() for m in self.quarantined()) if self.quarantined is not None
            else frozenset(),
        )

    def _subsystems(self) -> tuple[SubsystemState, ...]:
        source = self._subsystem_health
        if source is None:
            return ()
        try:
            rows = source()
        except Exception:
            return ()
        return tuple(
            SubsystemState(r["subsystem"], r["state"], "; ".join(c.get("message", "") for c in r.get("conditions", ())))
            for r in rows if r.get("subsystem") != self.name
        )

    def _desired_mesh(self, ctx: Context) -> dict[str, Any]:
        """The mesh settings as ``[mesh]`` wants them, with those operators hold at their value."""
        from x0tta.mesh.core.reconcile import desired_mesh

        return {**desired_mesh(ctx.settings.mesh), **(self.operator_mesh() if self.operator_mesh else {})}

    def _drift(self, ctx: Context, info: Any) -> tuple[Drift, ...]:
        ms = ctx.settings.mesh
        if not ms.manage:
            return ()  # the operator said nobody corrects this mesh
        from x0tta.mesh.core.reconcile import diff

        ours = set(self._held_mesh(include_undoing=True))
        return tuple(
            Drift(key, want, cur) for key, (cur, want) in sorted(diff(info.settings(), self._desired_mesh(ctx)).items())
            if key not in ours
        )

    async def cycle(self, ctx: Context, mesh: Any, links: Any) -> None:
        started = self.clock.monotonic()
        self.session_keys_due(ctx.log)
        assert self.executor is not None
        for hold, error in await self.executor.release_holds():
            if error:
                ctx.log.warning("heal_hold_release_failed", **hold.to_json(), error=error)
            else:
                ctx.log.info("heal_hold_released", **hold.to_json())
        obs = await self.observe(ctx, mesh, links)
        self.judge_operator_actions(ctx, obs)
        k = self.knowledge
        assert k is not None and self.executor is not None
        k, decisions = loop.step(k, obs, self.clock.time())
        self.knowledge = k
        self._alert(ctx, k, obs)
        # before acting: the mesh reconcile reacts to batman-adv's config event of our own change
        # at once, and must already know it is intended (and that an undone one no longer is)
        self._update_overrides()
        await self._record(ctx, k, decisions)
        if decisions:
            results = []
            for d in decisions:
                with self._phase(d.incident, "execute", op=d.op.value, kind=d.action.kind.value,
                                 target=d.action.target):
                    results.append(await self.executor.execute(d))
            k = loop.settle(self.knowledge, results, self.clock.time())
            self.knowledge = k
            for res, d in zip(results, decisions, strict=True):
                ctx.log.info("heal_executed", incident=d.incident, id=d.id, op=d.op.value, action=d.action.kind.value,
                             target=d.action.target, outcome=res.outcome, detail=res.detail)
                if self._metrics:
                    self._metrics.actions.labels(d.action.kind.value, d.op.value, res.outcome).inc()
            await self._record(ctx, k, [])
        self._update_overrides()
        self.cycles += 1
        if self._metrics:
            self._metrics.cycle.observe(self.clock.monotonic() - started)
            self._metrics.incidents_open.set(len(k.incidents))
            self._metrics.strained.set(int(self.strain.strained))
            self._metrics.cpu.set(round(self.strain.cpu_share, 4))
            self._metrics.node_cpu.set(round(self.strain.node_share, 4))
            m = self._metrics
            if self.prober is not None:
                p = self.prober
                self._add(m.probes, "probes", {"sent": p.sent, "received": p.received, "rejected": p.tracker.rejected,
                                                "dropped": p.overruns})
                self._add(m.refused, "probes_refused", p.tracker.rejects)
                m.link_keys.set(self.link_keys.count(self.clock.monotonic()))
            if self.alerter is not None:
                a = self.alerter
                self._add(m.alerts, "alerts", {"sent": a.sent, "received": a.received, "rejected": a.rejected,
                                               "relayed": a.relayed})
                self._add(m.alerts_refused, "alerts_refused", a.rejects)

    def _add(self, counter: Any, name: str, totals: Mapping[str, int]) -> None:
        """Bring a labelled counter up to the adapter's running ``totals`` (label -> count)."""
        seen = self._counted.setdefault(name, {})
        for label, total in totals.items():
            if total > seen.get(label, 0):
                counter.labels(label).inc(total - seen.get(label, 0))
            seen[label] = total

    def _alert(self, ctx: Context, k: loop.Knowledge, obs: Observation) -> None:
        """A link of this node was just confirmed silent or went down: tell the mesh - unless the
        link is the only way to everything it carries (a line): then no node can route around it,
        and the alert would only make every node forward its OGMs unaggregated for nothing."""
        if self.alerter is None:
            return
        for ev in k.events:
            if ev.name == "incident_opened":
                self._start_trace(ev.incident, dict(ev.data))  # its alert carries the trace
            if ev.name != "symptom_raised":
                continue
            kind = ev.data["symptom"]["kind"]
            if kind not in ALERT_ON:
                continue
            target = ev.data["symptom"]["target"]
            way = only_way_since(target, obs, k.memory.moved_off, float(ev.data["symptom"].get("onset") or 0.0))
            if way:
                ctx.log.info("heal_alert_not_sent", incident=ev.incident, kind=kind, target=target, reason=way)
                continue
            with self._phase(ev.incident, "alert", kind=kind) as span:  # the receivers' spans join it
                tp = traceparent_of(span) if span is not None else None
                alert = self.alerter.raise_alert(kind, self.clock.monotonic(), traceparent=tp)
                if span is not None:
                    span.set_attribute("heal.alert.sent", alert is not None)
                ctx.log.info("heal_alert_sent", incident=ev.incident, kind=kind, target=target,
                             seq=alert.seq if alert else None, sent=alert is not None)
            if alert is not None:
                self._wake.set()  # this node hears its own alert too

    def _update_overrides(self) -> None:
        if self.overrides is None or self.knowledge is None:
            return
        steers = [r for r in self._in_effect() if r.action.kind == ActionKind.STEER_OFF]
        self.overrides["detached"] = {r.action.param("hardif") for r in steers if r.action.param("method") == "detach"}
        self.overrides["mesh"] = self._held_mesh()
        # hop penalties heal holds: a steer-off by penalty, a re-attached link's hold (the mesh
        # reconcile would otherwise put back a configured [mesh.hardif.X] hop_penalty)
        hardif: dict[str, dict[str, Any]] = {
            r.action.param("hardif"): {"hop_penalty": r.action.param("hop_penalty")}
            for r in steers if r.action.param("method") == "penalty"
        }
        if self.executor is not None:
            for h in self.executor.holds.values():
                hardif.setdefault(h.hardif, {"hop_penalty": h.value})
        self.overrides["hardif"] = hardif

    def _in_effect(self, include_undoing: bool = False) -> list[loop.Record]:
        """Records whose remedy heal holds in the kernel now. Without ``include_undoing``, not
        those whose undo is on its way (it releases the override before it runs) nor dry runs."""
        return [
            r for r in (self.knowledge.records.values() if self.knowledge is not None else ())
            if r.holds and (include_undoing or (r.state != loop.State.DRY_RUN and r.undo_state is None))
        ]

    def _held_mesh(self, include_undoing: bool = False) -> dict[str, Any]:
        """Mesh settings heal holds on purpose: ``{attribute: value}`` of its remedies in effect."""
        mesh: dict[str, Any] = {}
        for r in self._in_effect(include_undoing):
            mesh.update(mesh_values(r.action))
        return mesh

    # -- knowledge, logs, metrics, traces ------------------------------------------------------

    async def _record(self, ctx: Context, k: loop.Knowledge, decisions: tuple[Decision, ...] | list[Decision]) -> None:
        """Store, log, count and trace what the last step/settle produced, before acting on it."""
        ops: list[tuple[str, Any]] = []
        touched: set[str] = set()
        m = self._metrics
        for ev in k.events:
            self._on_event(ctx, ev, ops, m)
            if ev.incident and ev.name != "incident_closed":
                touched.add(ev.incident)
        for d in decisions:
            touched.add(d.incident)
            with self._phase(d.incident, "decide", op=d.op.value, kind=d.action.kind.value, target=d.action.target):
                pass
            trace_id = self._trace_id(d.incident)
            ctx.log.info(
                "heal_decision", incident=d.incident, id=d.id, op=d.op.value, action=d.action.kind.value,
                target=d.action.target, params=dict(d.action.params), reasons=list(d.reasons),
                alternatives=[f"{c.action.kind.value}: {c.rejected}" for c in d.alternatives],
                dry_run=self.settings.dry_run, trace_id=trace_id,
            )
            ops.append(("event", (d.incident, self.clock.time(), "decision", d.to_json())))
        for inc_id in sorted(touched):
            data = k.incident_json(inc_id)
            if data is not None:
                ops.append(("incident", data))
        if any(ev.name == "verified" for ev in k.events):
            ops.append(("stats", dict(k.stats)))
        if ops and self.store is not None:
            await self.store.write(ops)

    def _on_event(self, ctx: Context, ev: Event, ops: list[tuple[str, Any]], m: _Metrics | None) -> None:
        data = dict(ev.data)
        name = ev.name
        if name == "incident_opened":
            self._start_trace(ev.incident, data)
            if m:
                m.ttd.labels(data["kind"]).observe(data["time_to_detect"])
            ctx.log.warning("heal_incident_opened", incident=ev.incident, **data, trace_id=self._trace_id(ev.incident))
        elif name == "symptom_raised":
            sym = data["symptom"]
            if m and not data.get("reopened"):
                m.symptoms.labels(sym["kind"]).inc()
            with self._phase(ev.incident, "detect", kind=sym["kind"], target=sym["target"]):
                pass
        elif name == "symptom_cleared":
            sym = data["symptom"]
            ctx.log.info("heal_symptom_cleared", incident=ev.incident, kind=sym["kind"], target=sym["target"])
        elif name == "verified":
            if m:
                m.verified.labels(data["kind"], "effective" if data["ok"] else "failed").inc()
            if self.executor is not None:
                self.executor.verified(data["id"], bool(data["ok"]), str(data.get("reason", "")))
            with self._phase(ev.incident, "verify" if data.get("op") == "apply" else "undo", ok=bool(data["ok"]),
                             kind=data["kind"], reason=str(data.get("reason", ""))):
                pass
            ctx.log.info("heal_verified", incident=ev.incident, **data)
        elif name == "handed_over" and "to" in data:
            ctx.log.info("heal_handed_over", incident=ev.incident, **data)
        elif name == "transition_refused":  # a move the lifecycle does not allow: a bug, the loop runs on
            ctx.log.error("heal_transition_refused", incident=ev.incident, **data)
        elif name == "harm":
            if m:
                m.harm.labels(data["kind"]).inc()
            ctx.log.warning("heal_harm", incident=ev.incident, **data)
        elif name == "load_budget":
            if m:
                m.load_budget.labels(data["kind"], data["op"]).inc()
            ctx.log.warning("heal_load_budget", incident=ev.incident, **data)
        elif name == "healed":
            kind = ev.incident and self._incident_kind(ev.incident)
            if m and kind:
                m.tth.labels(kind).observe(data["time_to_heal"])
            ctx.log.info("heal_healed", incident=ev.incident, **data)
        elif name == "incident_closed":
            inc = data["incident"]
            ops.append(("incident", {**inc, "actions": data["actions"]}))
            if self.executor is not None:
                self.executor.forget([a["id"] for a in data["actions"]] + [a["id"] + "/undo" for a in data["actions"]])
            with self._phase(ev.incident, "close", resolution=inc["resolution"]):
                pass
            span = self._spans.pop(ev.incident, None)
            if span is not None:
                span.set_attribute("heal.resolution", inc["resolution"])
                span.end()
            ctx.log.info("heal_incident_closed", incident=ev.incident, resolution=inc["resolution"],
                         duration=round(data["duration"], 3))
        ops.append(("event", (ev.incident, self.clock.time(), name, data)))
        self._notify(ctx.log, name, ev.incident, data)

    def _notify(self, log: Any, name: str, incident: str | None, data: Mapping[str, Any]) -> None:
        """Tell the listeners (the fleet plane) of one event."""
        for listener in self.listeners:
            try:
                listener(name, incident, data)  # type: ignore[arg-type]
            except Exception as exc:  # a listener's bug must not stop the loop
                log.error("heal_listener_failed", listener=repr(listener), error=repr(exc))

    # -- actions run on an operator's request ------------------------------------------------------

    def expect_verdict(self, d: Decision, ref: str) -> asyncio.Future[tuple[bool | None, str]]:
        """Have the loop verify ``d`` (applied on request ``ref``) once its ``verify_after`` passed;
        the future gets ``(ok, why)``. Until then its breaker trial stays open and the loop polls fast."""
        verdict: asyncio.Future[tuple[bool | None, str]] = asyncio.get_running_loop().create_future()
        self.operator_checks[d.id] = OperatorCheck(d, ref, self.clock.time() + d.action.verify_after, verdict)
        self._wake.set()  # the next wait is the fast one
        return verdict

    def judge_operator_actions(self, ctx: Context, obs: Observation) -> None:
        """Judge the operator-requested actions whose time came, against this cycle's observation,
        as the loop judges its own (:func:`x0tta.heal.core.verify.effect`): the verdict closes the
        breaker trial (an action that did not help counts against its breaker), is counted, logged,
        and told to the listeners as a ``verified`` event with ``op`` ``operator``."""
        now = self.clock.time()
        for did, chk in list(self.operator_checks.items()):
            if now < chk.verify_at:
                continue
            del self.operator_checks[did]
            a = chk.decision.action
            ok, why = effect(a, (), obs, self.settings)
            if self.executor is not None:
                self.executor.verified(did, ok, why)
            if self._metrics:
                self._metrics.verified.labels(a.kind.value, "effective" if ok else "failed").inc()
            data = {"id": did, "ok": ok, "op": "operator", "kind": a.kind.value, "target": a.target, "reason": why,
                    "command": chk.ref}
            (ctx.log.info if ok else ctx.log.warning)("heal_verified", incident=None, **data)
            self._notify(ctx.log, "verified", None, data)
            if not chk.verdict.done():
                chk.verdict.set_result((ok, why))

    def _incident_kind(self, inc_id: str) -> str | None:
        k = self.knowledge
        inc = k.incidents.get(inc_id) if k else None
        return inc.key[0] if inc else None

    def _start_trace(self, inc_id: str, data: dict[str, Any]) -> None:
        tracer = self._tracer
        if tracer is None or inc_id in self._spans:  # started already when its alert went out
            return
        self._spans[inc_id] = tracer.start_span(
            "heal.incident", attributes={"heal.incident": inc_id, "heal.kind": data["kind"],
                                         "heal.target": data["target"]},
        )

    @contextlib.contextmanager
    def _phase(self, inc_id: str, phase: str, **attrs: Any) -> Any:
        tracer = self._tracer
        parent = self._spans.get(inc_id)
        if tracer is None or parent is None:
            yield None
            return
        from opentelemetry import trace

        ctx = trace.set_span_in_context(parent)
        with tracer.start_as_current_span(f"heal.{phase}", context=ctx,
                                          attributes={f"heal.{k}": v for k, v in attrs.items()}) as span:
            yield span

    def _trace_id(self, inc_id: str) -> str | None:
        span = self._spans.get(inc_id)
        if span is None:
            return None
        return f"{span.get_span_context().trace_id:032x}"

    # -- admin --------------------------------------------------------------------------------

    def _auth_json(self) -> dict[str, Any]:
        """How probes and alerts are authenticated, and what was refused (``heal.state``)."""
        now = self.clock.monotonic()
        mode = ("sessions" if self.link_keys.required else
                "shared_key" if self.settings.probe_key_file else "none")
        return {
            "mode": mode,
            "link_keys": {h: len([k for k in ks.values() if k.closed_at is None])
                          for h, ks in self.link_keys.keys.items()} if self.link_keys.count(now) else {},
            "probes_refused": dict(self.prober.tracker.rejects) if self.prober else {},
            "alerts_refused": dict(self.alerter.rejects) if self.alerter else {},
            "alerts_relayed": self.alerter.relayed if self.alerter else 0,
        }

    def _register_admin(self, ctx: Context) -> None:
        async def incidents(args: dict[str, Any]) -> Any:
            if self.store is None:
                raise TemporaryError("the heal loop is not running")
            return await self.store.incidents(int(args.get("limit", 50)), args.get("status"))

        async def incident(args: dict[str, Any]) -> Any:
            if self.store is None:
                raise TemporaryError("the heal loop is not running")
            found = await self.store.incident(str(args["id"]))
            if found is None:
                raise PermanentError(f"no incident {args['id']}")
            return found

        async def state(_: dict[str, Any]) -> Any:
            k = self.knowledge
            if k is None:  # starting: open incidents are not loaded yet, and "none" would be a lie
                raise TemporaryError("the heal loop is starting")
            return {
                "dry_run": self.settings.dry_run,
                "cycles": self.cycles,
                "active": [s.to_json() for s in k.active.values()],
                "incidents": [k.incident_json(i) for i in k.incidents],
                "breakers": self.executor.breakers.states() if self.executor else {},
                "probes": [_probe_json(p) for p in (self.prober.stats() if self.prober else ())],
                "probe_stalls": self.prober.tracker.stalls if self.prober else 0,
                # probes the kernel dropped on full probe sockets (a flood), and the holds they caused
                "probe_overruns": self.prober.overruns if self.prober else 0,
                "probe_holds": self.prober.tracker.holds if self.prober else 0,
                "probe_corroboration": self.prober.corroboration if self.prober else None,
                "authentication": self._auth_json(),
                # the periodic table reads: on the loop, or in the thread (an answer not queued yet)
                "mesh_reads": ({"loop": self._mesh.quick_reads, "thread": self._mesh.slow_reads}
                               if self._mesh is not None else None),
                "link_rx_age": ({k: round(self.clock.monotonic() - v, 3) for k, v in self.prober.link_rx().items()}
                                if self.prober else {}),
                "stats": [{"symptom": s, "action": a, "ok": ok, "failed": bad}
                          for (s, a), (ok, bad) in k.stats.items()],
            }

        ctx.admin.register("heal.incidents", incidents)
        ctx.admin.register("heal.incident", incident)
        ctx.admin.register("heal.state", state)


def threats_seen(records: Iterable[Mapping[str, Any]], neighbours: set[str]) -> tuple[ThreatSeen, ...]:
    """The guard's threat records (EVE-style, docs/guard.md) as the loop's :class:`ThreatSeen`: one
    per neighbour MAC a record names (a MAC batman-adv lists as this node's neighbour; the
    quarantine shuts out neighbours, not originators far away). A record not in that shape is
    skipped."""
    out = []
    for r in records:
        try:
            alert, batman = r["alert"], r["batman"]
            severity, signature, macs = int(alert["severity"]), str(batman["detector"]), batman["macs"]
            spiffe_id = batman.get("spiffe_id")
        except (KeyError, TypeError, ValueError):
            continue
        for mac in macs or ():
            if isinstance(mac, str) and mac.lower() in neighbours:
                out.append(ThreatSeen(mac.lower(), signature, severity, spiffe_id))
    return tuple(out)


# Healing actions an operator may run by name (a fleet command, docs/fleet.md): those that need no
# incident's evidence to aim them, with the target they act on.
@dataclasses.dataclass(frozen=True)
class OperatorCheck:
    """An action run on an operator's request, awaiting the loop's verdict."""

    decision: Decision
    ref: str  # the command id
    verify_at: float  # the clock's time()
    verdict: asyncio.Future[tuple[bool | None, str]]


VERDICT_WAIT = 10.0  # s past verify_after: cycles enough for the verdict, even on a strained node
OPERATOR_ACTIONS = {
    ActionKind.RESELECT_GATEWAY: "gw",
    ActionKind.REAPPLY_SETTINGS: "mesh",
    ActionKind.RESTART_SUBSYSTEM: "subsystem",
}


async def operator_action(service: HealService, name: str, target: str | None, ref: str) -> dict[str, Any]:
    """Run healing action ``name`` on an operator's request (``ref``: the command id) through the heal
    loop's executor: its circuit breaker and rate limit per (action, target), dry run, and
    ``heal.disabled_actions`` apply, and it is refused while the loop holds a remedy on the same
    target (or, for ``reapply_settings``, any mesh setting it would undo). Once applied, it waits
    for the loop's verdict (:meth:`HealService.judge_operator_actions`, ``verify_after`` later).
    Raises PermanentError when it is refused, fails, or did not help."""
    ex = service.executor
    if ex is None:
        raise TemporaryError("the heal loop is not running")
    try:
        kind = ActionKind(name)
    except ValueError:
        raise PermanentError(f"no healing action {name!r}") from None
    if kind not in OPERATOR_ACTIONS:
        raise PermanentError(f"{name} needs an incident to aim it; on request: {sorted(OPERATOR_ACTIONS)}")
    if name in service.settings.disabled_actions:
        raise PermanentError(f"{name} is disabled on this node (heal.disabled_actions)")
    params = ()
    aim = OPERATOR_ACTIONS[kind]
    if kind == ActionKind.RESTART_SUBSYSTEM:
        if not target or target in ("heal", "fleet"):
            raise PermanentError("restart_subsystem needs a target subsystem other than heal and fleet")
        params, aim = evidence(subsystem=target), f"subsystem:{target}"
    # Do no harm: never against a remedy the loop holds for an open incident.
    holding = next((r for r in service._in_effect(include_undoing=True) if r.action.target == aim), None)
    if holding is not None:
        raise PermanentError(f"{name} on {aim} refused: the heal loop holds {holding.action.kind.value} there for "
                             f"incident {holding.incident}")
    if kind == ActionKind.REAPPLY_SETTINGS and service._held_mesh(include_undoing=True):
        raise PermanentError(f"reapply_settings refused: it would undo {sorted(service._held_mesh(True))}, which the "
                             "heal loop holds for an open incident")
    d = Decision(f"operator-{ref}", f"operator:{ref}", Op.APPLY,
                 Action(kind, aim, params, verify_after=service.settings.verify_after),
                 ("operator", ref), ("requested by an operator command",))
    res = await ex.execute(d)
    service._notify(service.log, "operator_action", None,
                    {"action": name, "target": aim, "outcome": res.outcome, "detail": res.detail, "command": ref})
    if res.outcome not in ("applied", "dry_run"):
        raise PermanentError(f"{name} on {aim}: {res.outcome}" + (f" ({res.detail})" if res.detail else ""))
    out = {"action": name, "target": aim, "outcome": res.outcome, "detail": res.detail}
    if res.outcome != "applied":
        return out  # a dry run changed nothing: nothing to verify
    # Verified by the loop like its own actions (see HealService.judge_operator_actions). None of
    # OPERATOR_ACTIONS has an undo (plan.UNDO): a gateway re-selection, settings put back and a
    # restart leave nothing to put back, so one that did not help fails here and counts against
    # its breaker, as the loop's own do.
    verdict = service.expect_verdict(d, ref)
    try:
        ok, why = await service.clock.wait_for(asyncio.shield(verdict), d.action.verify_after + VERDICT_WAIT)
    except TimeoutError:
        ok, why = None, "not judged yet: the heal loop reports its verdict as a verified event"
    if ok is False:
        raise PermanentError(f"{name} on {aim} was applied but did not help: {why}")
    return {**out, "verified": ok, "verification": why}


def _probe_json(p: ProbeStats) -> dict[str, Any]:
    return {"hardif": p.hardif, "peer": p.peer, "loss": p.loss, "lost_run": p.lost_run, "scattered": p.scattered,
            "rtt_ms": p.rtt_ms}


def _strain(s: HealSettings) -> Strain:
    return Strain(lag_limit=s.strain_lag, cpu_limit=s.strain_cpu, window=s.strain_window, hold=s.strain_hold,
                  node_limit=s.strain_node_cpu)


def node_cpu_times(path: str = "/proc/stat") -> tuple[float, float] | None:
    """The node's busy and total CPU time so far (clock ticks), from the first line of
    ``/proc/stat``; None where it cannot be read. One small procfs read (no disk): fine in the loop."""
    try:
        with open(path, "rb") as f:
            fields = f.readline().split()
        ticks = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    if len(ticks) < 8 or fields[0] != b"cpu":
        return None
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total
