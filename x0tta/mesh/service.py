"""The mesh subsystem: keeps batman-adv as ``[mesh]`` says, and shows what it sees.

Lifecycle (``run``):

1. open the batadv client (``CapabilityMissing(BATMAN_ADV_MISSING)`` on a kernel without
   batman-adv: the agent stays up, ``x0tta status`` shows mesh degraded with the reason);
2. reconcile: read the mesh and its hard interfaces, plan with the pure
   :func:`x0tta.mesh.core.reconcile.plan`, apply the actions; at start, on reload, every
   ``reconcile_interval`` and whenever batman-adv emits a ``config`` event (batctl or anyone else
   changed a setting). A correction after the first successful apply is drift: logged
   (``mesh_drift_corrected`` with each value's before/after) and counted;
3. observe every ``observe_interval``: originators, neighbours (link quality per neighbour),
   gateways and table sizes into Prometheus metrics, with neighbour labels capped by
   ``metrics.max_label_values`` (the rest counted in ``x0tta_mesh_label_overflow_total``).

Admin commands (JSON): ``mesh.originators``, ``mesh.neighbors``, ``mesh.gateways``,
``mesh.interfaces``, ``mesh.settings``, ``mesh.translocal``, ``mesh.transglobal`` (args:
``meshif``), and ``mesh.reconcile`` (run one reconcile now, return its actions).

Wakes: ``reconcile_interval``, reload, batadv ``config`` events, and RTNLGRP_LINK events about the
mesh interface or a listed hard interface (a re-created or detached one is attached again).

Operator controls (fleet commands, through the wiring): ``drain`` / ``undrain`` a hard interface,
``set_setting`` / ``release_setting`` a mesh setting; held like heal's overrides, written to
``<state_dir>/mesh-operator.sqlite3`` (:mod:`x0tta.mesh.held`) before they are applied, and in
force again when the subsystem starts.

API for other subsystems (the wiring hands them this instance): ``client`` (the
:class:`~x0tta.mesh.client.MeshClient`, once running), ``reconcile_now()``, ``last_actions``,
the operator's controls ``drain``/``undrain``/``set_drained`` and ``set_setting``/``release_setting``
(fleet commands and rollouts go through them),
``last_observation`` (:class:`Observation`: originators, neighbours, gateways, table sizes, and
when they were read).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from x0tta.clock import SYSTEM
from x0tta.common.errors import CapabilityMissing, DecodeError, TemporaryError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.mesh import MeshSettings
from x0tta.config.schema import AgentSettings
from x0tta.mesh.client import LinkControl, MeshClient
from x0tta.mesh.conditions import MESH_ALGO_MISMATCH, MESH_MISSING, MESH_RECONCILE_FAILED
from x0tta.mesh.core import batadv, views
from x0tta.mesh.core.batadv import Cmd
from x0tta.mesh.core.reconcile import Action, desired_mesh, plan
from x0tta.mesh.genl import MeshError
from x0tta.mesh.held import FILENAME as HELD_FILENAME
from x0tta.mesh.held import HeldStateError, HeldStore

# Events come in bursts (one batctl command, an interface flapping): wait this long, then reconcile once.
DEBOUNCE = 0.05
# Actions after which the state is read and planned again in the same reconcile.
# Tables whose sizes the metrics report, and everything ``observe`` reads (in one thread hop).
SIZED = {
    "translocal": Cmd.GET_TRANSTABLE_LOCAL, "transglobal": Cmd.GET_TRANSTABLE_GLOBAL,
    "dat_cache": Cmd.GET_DAT_CACHE, "bla_claim": Cmd.GET_BLA_CLAIM, "bla_backbone": Cmd.GET_BLA_BACKBONE,
}
OBSERVED = (Cmd.GET_ORIGINATORS, Cmd.GET_NEIGHBORS, Cmd.GET_GATEWAYS, *SIZED.values())
STRUCTURAL = frozenset({"create_mesh", "attach", "up"})


class _Metrics:
    def __init__(self, registry: CollectorRegistry, cap: int) -> None:
        self.cap = cap
        self.originators = Gauge("x0tta_mesh_originators", "Originators with a best route", registry=registry)
        self.neighbors = Gauge("x0tta_mesh_neighbors", "One-hop neighbours", registry=registry)
        self.gateways = Gauge("x0tta_mesh_gateways", "Gateways announced in the mesh", registry=registry)
        self.link_quality = Gauge(
            "x0tta_mesh_neighbor_link_quality",
            "Link quality to a neighbour: TQ 0-255 (BATMAN_IV) or throughput kbit/s (BATMAN_V)",
            ["neighbor", "hardif", "metric"],
            registry=registry,
        )
        self.table_entries = Gauge(
            "x0tta_mesh_table_entries", "Entries of a batman-adv table", ["table"], registry=registry
        )
        self.actions = Counter(
            "x0tta_mesh_reconcile_actions_total", "Reconcile actions applied", ["kind"], registry=registry
        )
        self.drift = Counter(
            "x0tta_mesh_drift_total", "Settings found changed from the desired value and put back", ["setting"],
            registry=registry,
        )
        self.errors = Counter("x0tta_mesh_reconcile_errors_total", "Reconcile actions that failed", registry=registry)
        self.overflow = Counter(
            "x0tta_mesh_label_overflow_total",
            "Samples not exported because a label reached metrics.max_label_values",
            ["metric"],
            registry=registry,
        )
        self._neigh_labels: set[tuple[str, str, str]] = set()

    def set_neighbors(self, samples: dict[tuple[str, str, str], float]) -> None:
        for gone in self._neigh_labels - set(samples):
            with contextlib.suppress(KeyError):
                self.link_quality.remove(*gone)
        kept: set[tuple[str, str, str]] = set()
        for labels in sorted(samples, key=lambda k: (k not in self._neigh_labels, k)):
            if len(kept) >= self.cap:
                self.overflow.labels("x0tta_mesh_neighbor_link_quality").inc()
                continue
            self.link_quality.labels(*labels).set(samples[labels])
            kept.add(labels)
        for dropped in (self._neigh_labels - kept) & set(samples):
            with contextlib.suppress(KeyError):
                self.link_quality.remove(*dropped)
        self._neigh_labels = kept


def _freeze(value: Any) -> Any:
    """A comparable snapshot of the (mutable, shared) overrides."""
    if isinstance(value, dict):
        return tuple(sorted(((str(k), _freeze(v)) for k, v in value.items()), key=repr))
    if isinstance(value, (set, frozenset, list, tuple)):
        return tuple(sorted((_freeze(v) for v in value), key=repr))
    return value


@dataclass(frozen=True)
class Observation:
    """What the last observe read (``at``: the event loop's clock, i.e. ``time.monotonic()``)."""

    at: float
    originators: list[batadv.Originator]
    neighbors: list[batadv.Neighbor]
    gateways: list[batadv.Gateway]
    sizes: dict[str, int] = field(default_factory=dict)


class MeshService(Subsystem):
    name = "mesh"

    def __init__(self, settings: MeshSettings | None = None, *, overrides: dict[str, Any] | None = None) -> None:
        self.settings = settings or MeshSettings()
        # Shared with the healing loop (x0tta.heal): what it changed on purpose, which reconcile
        # leaves alone (see x0tta.mesh.core.reconcile.plan). Read at every reconcile.
        self.overrides = overrides
        self._last_overrides: Any = _freeze(overrides)
        self._expected = False
        self.client: MeshClient | None = None
        self.last_actions: list[Action] = []
        self.last_observation: Observation | None = None
        self.link_events = 0
        self.applied_once = False
        self._wake = asyncio.Event()
        self._metrics: _Metrics | None = None
        self._registry_id: int | None = None
        self._reconcile_lock = asyncio.Lock()
        self._ctx: Context | None = None
        self._links: LinkControl | None = None
        # What an operator changed by a fleet command (docs/fleet.md): hard interfaces drained and
        # mesh settings set, held like heal's overrides until given back (undrain, release_mesh);
        # kept in ``held`` (x0tta.mesh.held) across restarts once ``run`` opened it.
        self.operator: dict[str, Any] = {"detached": set(), "mesh": {}}
        self.held: HeldStore | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        self._ctx = ctx
        self.settings = ctx.settings.mesh
        if self._registry_id != id(ctx.registry):
            self._metrics = _Metrics(ctx.registry, ctx.settings.metrics.max_label_values)
            self._registry_id = id(ctx.registry)
            self._register_admin(ctx)
        client = MeshClient()
        try:
            await client.open()
        except CapabilityMissing:
            await client.close()
            raise
        self.client = client
        self._links = LinkControl()
        if self.held is None:
            self.held = HeldStore(Path(ctx.state_dir) / HELD_FILENAME)
        watchers = [
            asyncio.create_task(self._watch_events(client), name="mesh-config-events"),
            asyncio.create_task(self._watch_links(ctx), name="mesh-link-events"),
        ]
        try:
            await self._restore_held(ctx)
            await self._loop(ctx)
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            self.client = None
            await client.close()
            links, self._links = self._links, None
            if links is not None:
                await links.close()

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        self.settings = settings.mesh
        self.applied_once = False  # the next corrections are the new config, not drift
        if self._metrics is not None:
            self._metrics.cap = settings.metrics.max_label_values
        self._wake.set()
        return True

    async def _loop(self, ctx: Context) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = 0.0
        next_observe = 0.0
        observe_error = ""
        while True:
            now = loop.time()
            if self._wake.is_set() or now >= next_reconcile:
                if self._wake.is_set():
                    await asyncio.sleep(DEBOUNCE)  # one reconcile for a burst of events
                self._wake.clear()
                await self._reconcile_reporting(ctx)
                next_reconcile = loop.time() + self.settings.reconcile_interval
            if now >= next_observe:
                try:
                    await self.observe()
                    observe_error = ""
                except (MeshError, TemporaryError, DecodeError) as exc:
                    if str(exc) != observe_error:  # once per distinct failure, not every interval
                        ctx.log.warning("mesh_observe_failed", error=str(exc))
                    observe_error = str(exc)
                next_observe = loop.time() + self.settings.observe_interval
            timeout = max(0.0, min(next_reconcile, next_observe) - loop.time())
            with contextlib.suppress(TimeoutError):
                await SYSTEM.wait_for(self._wake.wait(), timeout)

    async def _watch_events(self, client: MeshClient) -> None:
        """batman-adv's config events wake the reconcile (ours too: they then plan nothing)."""
        async for event in client.config_events():
            if event is None or self._concerns(event):
                self._wake.set()

    async def _watch_links(self, ctx: Context) -> None:
        """RTNLGRP_LINK events about the mesh interface or a listed hard interface (it appeared,
        went down, lost its master) wake the reconcile too: a re-created wlan0 is re-attached."""
        links = self._links
        if links is None:
            return
        try:
            async for ev in links.events():
                self.link_events += 1
                s = self.settings
                if ev.ifname == s.interface or ev.ifname in s.hard_interfaces or ev.ifname in s.hardif:
                    self._wake.set()
        except Exception as exc:  # link events are a speed-up; the periodic reconcile still runs
            ctx.log.warning("mesh_link_events_unavailable", error=str(exc))

    def _concerns(self, event: batadv.Record) -> bool:
        name = getattr(event, "mesh_ifname", None)
        return name is None or name == self.settings.interface

    # -- reconcile ----------------------------------------------------------------------------

    async def _reconcile_reporting(self, ctx: Context) -> None:
        try:
            actions = await self.reconcile_now()
        except (MeshError, TemporaryError, DecodeError) as exc:
            ctx.log.warning("mesh_reconcile_failed", error=str(exc))
            ctx.health.set(MESH_RECONCILE_FAILED(str(exc)))
            return
        warns = [a for a in actions if a.kind == "warn"]
        if warns:
            ctx.health.set(
                *((MESH_ALGO_MISMATCH if a.drift else MESH_MISSING)(a.reason)
                  for a in warns)
            )
        else:
            ctx.health.ok()

    async def reconcile_now(self) -> list[Action]:
        """Read, plan, apply; returns the actions taken (warn actions only reported).

        Creating the interface or attaching a hard interface changes what can be planned next
        (per-hardif settings need the interface attached), so such a pass is followed at once by
        another, at most three in all.
        """
        client = self.client
        if client is None:
            raise TemporaryError("mesh client not running", delay=1.0)
        async with self._reconcile_lock:
            s = self.settings
            overrides = self._in_force()
            snapshot = _freeze(overrides)
            # heal just took or released an override: what that changes is intended, not drift
            self._expected = snapshot != self._last_overrides
            self._last_overrides = snapshot
            taken: list[Action] = []
            for _pass in range(3):
                mesh, hardifs, up = await self._read_state(client, s)
                actions = plan(s, mesh, hardifs, up, overrides)
                if not s.manage:
                    actions = [a for a in actions if a.kind == "warn"]
                for action in actions:
                    await self._apply(client, action)
                taken.extend(a for a in actions if a not in taken)
                if not any(a.kind in STRUCTURAL for a in actions):
                    break
            self.last_actions = taken
            self.applied_once = True
            return taken

    def _in_force(self) -> dict[str, Any]:
        """Heal's overrides and the operator's together; heal's temporary remedies win while they hold."""
        heal = self.overrides or {}
        return {**heal, "detached": set(heal.get("detached") or ()) | self.operator["detached"],
                "mesh": {**self.operator["mesh"], **(heal.get("mesh") or {})}}

    # -- operator controls (fleet commands, handed over by the wiring) ------------------------------

    async def _restore_held(self, ctx: Context) -> None:
        """What operators held when the agent stopped, back in force before the first reconcile:
        drained interfaces detached again if something attached them, held settings applied by the
        reconcile. What no longer fits the settings is logged and left out; an unreadable file is
        logged and nothing is held (the mesh runs as configured)."""
        if self.held is None:
            return
        try:
            held, problems = await self.held.load(self.settings)
        except HeldStateError as exc:
            ctx.log.error("mesh_operator_state_unreadable", error=str(exc))
            return
        for problem in problems:
            ctx.log.warning("mesh_operator_state_dropped", problem=problem)
        self.operator = held
        if not held["detached"] and not held["mesh"]:
            return
        ctx.log.warning("mesh_operator_restored", drained=sorted(held["detached"]), settings=held["mesh"])
        for hardif in sorted(held["detached"]):
            try:
                await self._detach_if_attached(hardif)
            except (MeshError, TemporaryError, OSError) as exc:  # the reconcile still leaves it out
                ctx.log.warning("mesh_drain_restore_failed", hardif=hardif, error=str(exc))

    async def _save_held(self) -> None:
        if self.held is not None:
            await self.held.save(self.operator)

    async def _detach_if_attached(self, hardif: str) -> bool:
        links = self._links
        if links is None or self.client is None:
            raise TemporaryError("the mesh subsystem is not running", delay=1.0)
        async with self._reconcile_lock:
            hardifs = {h.hard_ifname for h in await self.client.hardifs(self.settings.interface)}
            if hardif in hardifs:
                await links.detach(hardif)
        return hardif in hardifs

    async def drain(self, hardif: str) -> dict[str, Any]:
        """Take a hard interface of ``mesh.hard_interfaces`` out of batman-adv until :meth:`undrain`,
        across restarts (on disk before it is detached)."""
        if hardif not in self.settings.hard_interfaces:
            raise MeshError(f"{hardif} is not one of mesh.hard_interfaces {list(self.settings.hard_interfaces)}")
        if self._links is None or self.client is None:
            raise TemporaryError("the mesh subsystem is not running", delay=1.0)
        fresh = hardif not in self.operator["detached"]
        self.operator["detached"].add(hardif)
        try:
            await self._save_held()
        except HeldStateError:
            if fresh:
                self.operator["detached"].discard(hardif)  # not kept: not held either
            raise
        was_attached = await self._detach_if_attached(hardif)
        if self._ctx is not None:
            self._ctx.log.warning("mesh_drained", hardif=hardif, by="operator")
        return {"interface": hardif, "drained": True, "was_attached": was_attached}

    async def undrain(self, hardif: str) -> dict[str, Any]:
        """Give a drained hard interface back: the reconcile attaches it again."""
        if hardif not in self.operator["detached"]:
            raise MeshError(f"{hardif} is not drained (drained: {sorted(self.operator['detached'])})")
        self.operator["detached"].discard(hardif)
        try:
            await self._save_held()
        except HeldStateError:
            self.operator["detached"].add(hardif)
            raise
        taken = await self.reconcile_now()
        if self._ctx is not None:
            self._ctx.log.info("mesh_undrained", hardif=hardif, by="operator")
        return {"interface": hardif, "drained": False, "actions": [a.kind + ":" + a.target for a in taken]}

    async def set_drained(self, patterns: list[str]) -> dict[str, Any]:
        """Hold out of batman-adv exactly the hard interfaces of ``mesh.hard_interfaces`` that match
        one of ``patterns`` (shell patterns: ``"to-*"``): drain those not drained yet, give back
        the drained ones that no longer match. What was drained before is in the answer (``was``)."""
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise MeshError(f"drained takes a list of hard interface names or patterns, not {patterns!r}")
        want = {h for h in self.settings.hard_interfaces if any(fnmatch.fnmatchcase(h, p) for p in patterns)}
        unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(h, p) for h in self.settings.hard_interfaces)]
        if unknown:
            raise MeshError(f"{unknown} match none of mesh.hard_interfaces {list(self.settings.hard_interfaces)}")
        was = sorted(self.operator["detached"])
        for hardif in sorted(want - set(was)):
            await self.drain(hardif)
        back = set(was) - want
        if back:
            self.operator["detached"] -= back
            try:
                await self._save_held()
            except HeldStateError:
                self.operator["detached"] |= back
                raise
            await self.reconcile_now()
            if self._ctx is not None:
                self._ctx.log.info("mesh_undrained", hardifs=sorted(back), by="operator")
        return {"drained": sorted(want), "was": was}

    async def set_setting(self, name: str, value: Any) -> dict[str, Any]:
        """Hold one batman-adv mesh setting (a SET_MESH attribute of ``desired_mesh``) at ``value``."""
        known = desired_mesh(self.settings)
        if name not in known:
            raise MeshError(f"{name} is not a mesh setting x0tta manages: one of {sorted(known)}")
        if type(value) is not type(known[name]):  # bool for a flag, int for a number: never one for the other
            raise MeshError(f"{name} takes a {type(known[name]).__name__}, not {value!r}")
        held = dict(self.operator["mesh"])
        before = held.get(name, known[name])
        self.operator["mesh"][name] = value
        try:
            await self._save_held()  # on disk before it is applied: a restart keeps holding it
            taken = await self.reconcile_now()
        except Exception:
            self.operator["mesh"] = held  # not applied: not held either
            with contextlib.suppress(HeldStateError):
                await self._save_held()
            raise
        if self._ctx is not None:
            self._ctx.log.warning("mesh_setting_held", setting=name, value=value, by="operator")
        return {"setting": name, "value": value, "was": before, "held": name in held,
                "actions": [a.kind for a in taken]}

    async def release_setting(self, name: str) -> dict[str, Any]:
        """Stop holding a mesh setting :meth:`set_setting` held: the value of ``[mesh]`` applies again
        (heal's override, if it has one, still wins while it holds). Releasing what is not held
        changes nothing (``released`` False): a rollout's rollback releases what it did not find held."""
        known = desired_mesh(self.settings)
        if name not in known:
            raise MeshError(f"{name} is not a mesh setting x0tta manages: one of {sorted(known)}")
        held = dict(self.operator["mesh"])
        if name not in held:
            return {"setting": name, "released": False, "value": known[name], "actions": []}
        del self.operator["mesh"][name]
        try:
            await self._save_held()  # off the disk first: a restart must not hold it again
            taken = await self.reconcile_now()
        except Exception:
            self.operator["mesh"] = held  # not put back: still held
            with contextlib.suppress(HeldStateError):
                await self._save_held()
            raise
        if self._ctx is not None:
            self._ctx.log.warning("mesh_setting_released", setting=name, value=known[name], was=held[name])
        return {"setting": name, "released": True, "value": known[name], "was": held[name],
                "actions": [a.kind for a in taken]}

    async def _read_state(self, client: MeshClient, s: MeshSettings) -> tuple[Any, list[batadv.HardIf], bool]:
        try:
            mesh = await client.mesh_info(s.interface)
        except MeshError as exc:
            if exc.errno in (19, 22):  # ENODEV / EINVAL: no such (batadv) interface
                return None, [], False
            raise
        hardifs = await client.hardifs(s.interface)
        up = True
        if s.create and self._links is not None:
            up = (await self._links.link(s.interface)).up
        return mesh, hardifs, up

    async def _apply(self, client: MeshClient, action: Action) -> None:
        log = self._ctx.log if self._ctx is not None else None
        m = self._metrics
        if action.kind == "warn":
            if log is not None:
                log.warning("mesh_not_as_configured", target=action.target, reason=action.reason,
                            drift={k: list(v) for k, v in action.drift.items()})
            return
        try:
            if action.kind in ("set_mesh", "set_hardif"):
                if action.kind == "set_mesh":
                    await client.set_mesh(action.target, action.values)
                else:
                    await client.set_hardif(self.settings.interface, action.target, action.values)
            else:
                links = self._links
                if links is None:
                    raise TemporaryError("mesh subsystem stopping", delay=1.0)
                if action.kind == "create_mesh":
                    await links.create_mesh(action.target, str(action.values["routing_algo"]))
                elif action.kind == "attach":
                    await links.set_up(action.target, True)
                    await links.attach(self.settings.interface, action.target)
                elif action.kind == "up":
                    await links.set_up(action.target, True)
        except Exception as exc:
            if m is not None:
                m.errors.inc()
            if log is not None:
                log.warning("mesh_action_failed", kind=action.kind, target=action.target, error=str(exc))
            if isinstance(exc, (MeshError, TemporaryError)):
                return
            raise MeshError(f"{action.kind} {action.target}: {exc}") from exc
        if m is not None:
            m.actions.labels(action.kind).inc()
        if log is not None:
            drift = {k: list(v) for k, v in action.drift.items()}
            if action.drift and self.applied_once and not self._expected:
                for key in action.drift:
                    if m is not None:
                        m.drift.labels(f"{action.kind}.{key}" if action.kind != "set_mesh" else key).inc()
                log.warning("mesh_drift_corrected", kind=action.kind, target=action.target, drift=drift)
            else:
                log.info("mesh_applied", kind=action.kind, target=action.target, values=dict(action.values),
                         drift=drift, reason=action.reason)

    # -- observe ------------------------------------------------------------------------------

    async def observe(self) -> dict[str, int]:
        client, m = self.client, self._metrics
        if client is None or m is None:
            return {}
        got = await client.tables(self.settings.interface, OBSERVED)
        origs = [r for r in got[Cmd.GET_ORIGINATORS] if isinstance(r, batadv.Originator)]
        neighs = [r for r in got[Cmd.GET_NEIGHBORS] if isinstance(r, batadv.Neighbor)]
        gws = [r for r in got[Cmd.GET_GATEWAYS] if isinstance(r, batadv.Gateway)]
        sizes = {"originators": len(origs), **{name: len(got[cmd]) for name, cmd in SIZED.items()}}
        m.originators.set(len({o.orig_address for o in origs if o.flag_best}))
        m.neighbors.set(len(neighs))
        m.gateways.set(len(gws))
        for table, n in sizes.items():
            m.table_entries.labels(table).set(n)
        samples: dict[tuple[str, str, str], float] = {}
        # Link quality per neighbour: BATMAN_V neighbours carry throughput; with BATMAN_IV the
        # TQ of the originator entry of the neighbour itself through itself is the link's TQ.
        for n in neighs:
            if n.throughput is not None:
                samples[(n.neigh_address, n.hard_ifname or str(n.hard_ifindex), "throughput")] = n.throughput
        for o in origs:
            if o.tq is not None and o.orig_address == o.neigh_address:
                samples[(o.neigh_address, o.hard_ifname or str(o.hard_ifindex), "tq")] = o.tq
        m.set_neighbors(samples)
        self.last_observation = Observation(
            at=asyncio.get_running_loop().time(), originators=origs, neighbors=neighs, gateways=gws, sizes=sizes
        )
        return sizes

    # -- admin --------------------------------------------------------------------------------

    def _register_admin(self, ctx: Context) -> None:
        for view in views.VIEWS:
            ctx.admin.register(f"mesh.{view}", self._view_handler(view))

        async def reconcile(_args: dict[str, Any]) -> list[dict[str, Any]]:
            return [a.to_json() for a in await self.reconcile_now()]

        ctx.admin.register("mesh.reconcile", reconcile)

    def _view_handler(self, view: str) -> Any:
        async def handler(args: dict[str, Any]) -> Any:
            client = self.client
            if client is None:
                raise TemporaryError("mesh subsystem not running (see x0tta status)")
            meshif = str(args.get("meshif") or self.settings.interface)
            if view == "settings":
                return views.to_json(await client.mesh_info(meshif))
            return views.to_json(await client.dump(views.VIEWS[view], meshif))

        return handler


__all__ = ["STRUCTURAL", "MeshService", "Observation"]
