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
``guard.mode {"mode"}`` (``x0tta guard``). Metrics: ``x0tta_guard_enforcing``,
``x0tta_guard_in_kernel``, ``x0tta_guard_admitted{origin}``, ``x0tta_guard_threats_total{signature}``
(threat records by detector, every signature exported from zero so that the alert rules' ``increase``
sees the first one; counted by :meth:`GuardService.count_threats` - nothing feeds the detectors yet,
docs/guard.md). The frames the kernel dropped are
counted by the probes' program and exported with the probes' metrics
(``x0tta_probes_guard_dropped_total``, ``x0tta_probes_guard_would_drop_total``).

API for other subsystems (the wiring hands them this instance): :attr:`GuardService.guard`, the
:class:`~x0tta.guard.enforce.Guard` (``admit``/``revoke``); the peer subsystem admits and revokes
through it with :class:`~x0tta.guard.enforce.PeerAdmission`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from x0tta.common.errors import X0ttaError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.guard import GuardSettings
from x0tta.config.schema import AgentSettings
from x0tta.guard.conditions import GUARD_NOT_ENFORCED
from x0tta.guard.core import MODES, ORIGIN_NAMES
from x0tta.guard.core.detect import SIGNATURES, Finding
from x0tta.guard.enforce import Guard, KernelMaps

NOT_ENFORCED = (
    "not enforced: the probes have not loaded the guard's eBPF maps (see probes); "
    "admissions are kept and written when they do"
)


class GuardCommandError(X0ttaError):
    """A bad admin request to the guard."""


class GuardService(Subsystem):
    name = "guard"

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.guard = Guard(self.settings.mode, self.settings.admitted_macs)
        self.threats: Counter[str] = Counter()  # threat records by signature name, since start
        self._changed = asyncio.Event()
        self._registered = False

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
        ctx.log.info("guard_started", mode=g.mode, admitted=len(g.state.entries), in_kernel=g.bound)
        while True:
            self._changed.clear()
            self._report(ctx)
            await self._changed.wait()

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
