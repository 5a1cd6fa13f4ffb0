"""The guard subsystem: this node's admissions, the admin commands that change them, their metrics.

The guard enforces through two maps of the eBPF object the probes load (``admitted``: MAC ->
origin; ``config``: the mode): it loads nothing itself and never imports the probes. The
composition root (``x0tta/agent/wiring.py``) hands the maps over, as
:class:`~x0tta.guard.enforce.KernelMaps`, to :meth:`GuardService.kernel_maps` when the probes have
loaded them, and None when the probes let them go. Admissions made meanwhile are kept and written
as soon as the maps come back (docs/ebpf.md, "admission").

Lifecycle (``run``):

1. take ``[guard]``: mode and static MACs (dynamic admissions stay, also across a restart of this
   subsystem: the state lives in :attr:`GuardService.guard`);
2. register the admin commands and the metrics (once per agent);
3. report health whenever the maps come or go: ok while bound, ``guard_not_enforced`` (degraded)
   while not - the probes are not loaded (their own condition in ``x0tta status`` says why) or
   are turned off. Nothing is dropped then: without the programs there is no guard in the kernel.

Admin commands: ``guard.list``, ``guard.admit {"mac", "reason"?}``, ``guard.revoke {"mac"}``,
``guard.mode {"mode"}``, ``guard.threats {"limit"?}`` (the latest threat records, newest last)
(``x0tta guard``). Metrics: ``x0tta_guard_enforcing``, ``x0tta_guard_in_kernel``,
``x0tta_guard_admitted{origin}``, ``x0tta_guard_threats_total{signature}`` (threat records by
detector, every signature exported from zero so that the alert rules' ``increase`` sees the first
one). The frames the kernel dropped are counted by the probes' program and exported with the
probes' metrics (``x0tta_probes_guard_dropped_total``, ``x0tta_probes_guard_would_drop_total``).

Detection (``[guard.detect]``, docs/guard.md): when the composition root hands it an observer
(:attr:`GuardService.observe`: ``now -> Observation`` of what the probes, the mesh tables and the
peer handshakes show), every ``interval`` the guard, in a worker thread, adds this node's
admissions and mode to a new observation and runs the pure detectors (``x0tta.guard.core.detect``)
over the observations of the last two windows and the originators it knew within
``originator_memory``; for each new finding (once per ``report_hold``) it logs ``guard_threat``
with the threat record (``x0tta.guard.core.threats``), counts it and keeps it for
``guard.threats``. An observer that raises is logged and tried again at the next interval:
detection never stops the guard.

API for other subsystems (the wiring hands them this instance): :attr:`GuardService.guard`, the
:class:`~x0tta.guard.enforce.Guard` (``admit``/``revoke``); the peer subsystem admits and revokes
through it with :class:`~x0tta.guard.enforce.PeerAdmission`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from x0tta.common.errors import X0ttaError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.guard import GuardSettings
from x0tta.config.schema import AgentSettings
from x0tta.guard.conditions import GUARD_NOT_ENFORCED
from x0tta.guard.core import MODES, ORIGIN_NAMES, format_mac
from x0tta.guard.core.detect import SIGNATURES, Finding, Observation, detect, fresh
from x0tta.guard.core.threats import threat_record
from x0tta.guard.enforce import Guard, KernelMaps

NOT_ENFORCED = (
    "not enforced: the probes have not loaded the guard's eBPF maps (see probes); "
    "admissions are kept and written when they do"
)


KEEP_RECORDS = 256  # threat records kept for guard.threats (the log has them all)
FAMILIAR_MAX = 65_536  # originators remembered, the most recently seen (far above any x0tta mesh)


class GuardCommandError(X0ttaError):
    """A bad admin request to the guard."""


class GuardService(Subsystem):
    name = "guard"

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.guard = Guard(self.settings.mode, self.settings.admitted_macs)
        self.threats: Counter[str] = Counter()  # threat records by signature name, since start
        self.records: deque[dict[str, Any]] = deque(maxlen=KEEP_RECORDS)
        # Set by the composition root: what the probes and the mesh tables show now (monotonic
        # ``now`` in, an Observation without admissions out). None: no detection.
        self.observe: Callable[[float], Observation] | None = None
        self.history: list[Observation] = []
        self.familiar: dict[str, float] = {}  # originator -> last look it was in the tables
        self._reported: dict[tuple[int, str], float] = {}
        self._changed = asyncio.Event()
        self._registered = False
        self._clock = time.monotonic
        self._wall = time.time

    def kernel_maps(self, maps: KernelMaps | None) -> None:
        """The probes loaded the guard's maps (enforce through them now) or let them go (None)."""
        self.guard.attach(maps)
        self._changed.set()

    def count_threats(self, findings: Iterable[Finding]) -> None:
        """Count threat records (``x0tta_guard_threats_total{signature}``)."""
        self.threats.update(f.signature.name for f in findings)

    # -- the subsystem ------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        self._apply(ctx.settings.guard)
        if not self._registered:
            self._register(ctx)
        g = self.guard
        ctx.log.info("guard_started", mode=g.mode, admitted=len(g.state.entries), in_kernel=g.bound,
                     detecting=self._detecting())
        next_look = self._clock()
        while True:
            self._changed.clear()
            self._report(ctx)
            if not self._detecting():
                await self._changed.wait()
                next_look = self._clock()
                continue
            wait = next_look - self._clock()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), wait)
                    continue
                except TimeoutError:
                    pass
            await self.look_async(ctx, self._clock())
            next_look = self._clock() + self.settings.detect.interval

    def _detecting(self) -> bool:
        return self.observe is not None and self.settings.detect.enabled

    def look(self, ctx: Context, now: float) -> list[dict[str, Any]]:
        """One round of detection at ``now``: observe, detect, record what is new; returns the
        new threat records. (The loop runs the examining part in a thread: :meth:`look_async`.)"""
        try:
            examined = self._examine(now)
        except Exception as exc:
            return self._failed(ctx, exc)
        return self._record(ctx, now, *examined)

    async def look_async(self, ctx: Context, now: float) -> list[dict[str, Any]]:
        """:meth:`look`, with observing and detecting (tens of milliseconds over a full flow map)
        in a worker thread so that the event loop is not held. The observer reads snapshots the
        other subsystems replace whole, and this loop starts no other look meanwhile."""
        try:
            examined = await asyncio.to_thread(self._examine, now)
        except Exception as exc:
            return self._failed(ctx, exc)
        return self._record(ctx, now, *examined)

    def _examine(self, now: float) -> tuple[list[Observation], dict[str, float], Observation, list[Finding]]:
        s, g = self.settings.detect, self.guard
        seen = self.observe(now) if self.observe is not None else Observation(now)
        familiar = {o: t for o, t in self.familiar.items() if now - t <= s.originator_memory}
        seen = replace(seen, at=now, admitted=frozenset(format_mac(m) for m in g.state.entries),
                       enforcing=g.mode == "enforce" and g.bound, familiar=frozenset(familiar))
        # the detectors' counters start from the last look before their window: keep two windows
        history = [o for o in self.history if o.at >= now - 2 * s.window] + [seen]
        return history, familiar, seen, detect(history, s, now)

    def _failed(self, ctx: Context, exc: Exception) -> list[dict[str, Any]]:
        """A source that fails (or a detector bug) must not stop the guard: logged, next look."""
        ctx.log.warning("guard_look_failed", error=f"{type(exc).__name__}: {exc}")
        return []

    def _record(self, ctx: Context, now: float, history: list[Observation], familiar: dict[str, float],
                seen: Observation, found: list[Finding]) -> list[dict[str, Any]]:
        self.history = history
        self.familiar = familiar | {r.orig.lower(): now for r in seen.routes}
        if len(self.familiar) > FAMILIAR_MAX:  # a flood of made-up originators must not grow it without end
            newest = sorted(self.familiar.items(), key=lambda kv: kv[1])[-FAMILIAR_MAX:]
            self.familiar = dict(newest)
        new, self._reported = fresh(found, self._reported, self.settings.detect.report_hold, now)
        out = []
        for f in new:
            blocked = f.signature.name == "unadmitted_frames" and seen.enforcing
            record = threat_record(f, timestamp=self._wall(), host=ctx.node_id,
                                   action="blocked" if blocked else "allowed")
            ctx.log.warning("guard_threat", threat=record)
            self.records.append(record)
            out.append(record)
        self.count_threats(new)
        return out

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        if settings.guard.enabled != self.settings.enabled:
            return False
        self._apply(settings.guard)
        self._changed.set()
        return True

    def _apply(self, s: GuardSettings) -> None:
        """A new [guard]: its mode and static set replace the old ones, dynamic admissions stay."""
        self.settings = s
        self.guard.reconfigure(s.mode, s.admitted_macs)

    def _report(self, ctx: Context) -> None:
        if self.guard.bound:
            ctx.health.ok()
        else:
            ctx.health.set(GUARD_NOT_ENFORCED(NOT_ENFORCED))

    # -- admin --------------------------------------------------------------------------------

    def _register(self, ctx: Context) -> None:
        self._registered = True
        ctx.registry.register(_Collector(self.guard, self.threats))
        g = self.guard

        async def admit(args: dict[str, Any]) -> dict[str, Any]:
            mac = _arg(args, "mac")
            return {"mac": mac, "changed": g.admit(mac, str(args.get("reason", "admin")))}

        async def revoke(args: dict[str, Any]) -> dict[str, Any]:
            mac = _arg(args, "mac")
            return {"mac": mac, "changed": g.revoke(mac)}

        async def listing(_: dict[str, Any]) -> dict[str, Any]:
            return g.to_json()

        async def threats(args: dict[str, Any]) -> list[dict[str, Any]]:
            limit = args.get("limit", KEEP_RECORDS)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                raise GuardCommandError("limit must be a non-negative integer")
            return list(self.records)[-limit:] if limit else []

        async def mode(args: dict[str, Any]) -> dict[str, Any]:
            value = _arg(args, "mode")
            if value not in MODES:
                raise GuardCommandError(f"mode must be observe or enforce, not {value!r}")
            g.set_mode(value)
            ctx.log.info("guard_mode_set", mode=value, by="admin", in_kernel=g.bound)
            return {"mode": value}

        for command, handler in {
            "guard.admit": admit,
            "guard.revoke": revoke,
            "guard.list": listing,
            "guard.mode": mode,
            "guard.threats": threats,
        }.items():
            ctx.admin.register(command, handler)


def _arg(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise GuardCommandError(f"argument {key!r} (a string) is required")
    return value


class _Collector:
    """The guard's state at scrape time (no kernel access during a scrape). No ``describe``: a
    registry that auto-describes learns the names from ``collect``, which is as cheap."""

    def __init__(self, guard: Guard, threats: Counter[str]) -> None:
        self.guard = guard
        self.threats = threats

    def collect(self) -> Iterator[Any]:
        g = self.guard
        yield GaugeMetricFamily("x0tta_guard_enforcing", "1: enforce, 0: observe", value=float(g.mode == "enforce"))
        yield GaugeMetricFamily(
            "x0tta_guard_in_kernel", "1 while the guard's maps are bound (the probes loaded them)", value=float(g.bound)
        )
        admitted = GaugeMetricFamily("x0tta_guard_admitted", "MACs admitted, by origin", labels=["origin"])
        for origin, name in sorted(ORIGIN_NAMES.items()):
            admitted.add_metric([name], float(sum(1 for a in g.state.entries.values() if a.origin == origin)))
        yield admitted
        threats = CounterMetricFamily("x0tta_guard_threats", "Threat records by signature", labels=["signature"])
        for name in sorted(SIGNATURES):
            threats.add_metric([name], float(self.threats[name]))
        yield threats
