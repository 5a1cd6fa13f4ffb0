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
   are turned off. Nothing is dropped then: without the programs there is no guard in the kernel;
4. keep the mode in force: ``mode = "auto"`` (the default) observes until this node has an
   identity (:attr:`GuardService.identity_ready`, handed over by the wiring) and ``enforce_grace``
   has passed since the start or since it got one, then enforces
   (:func:`~x0tta.guard.core.binding.effective_mode`); ``guard.mode`` from an operator holds until
   the next reload;
5. end what ran out: bindings whose last session closed ``session_grace`` ago (their admission
   with them) and quarantines whose TTL is over.

Admin commands: ``guard.list`` (mode, admissions, MAC-to-SPIFFE-ID bindings, quarantines),
``guard.admit {"mac", "reason"?}``, ``guard.revoke {"mac"}``, ``guard.mode {"mode"}``,
``guard.threats {"limit"?, "since"?, "severity"?}`` (the latest threat records, newest last),
``guard.release {"who"}`` (end a quarantine: a MAC or a SPIFFE ID) (``x0tta guard``, ``x0tta
threats``). Metrics: ``x0tta_guard_enforcing``, ``x0tta_guard_in_kernel``,
``x0tta_guard_admitted{origin}``, ``x0tta_guard_bindings``, ``x0tta_guard_quarantined``,
``x0tta_guard_quarantines_total``, ``x0tta_guard_threats_total{signature}`` and
``x0tta_guard_threats_by_severity_total{severity}`` (threat records above informational by detector,
and all of them by severity,
every label exported from zero so that the alert rules' ``increase`` sees the first one). The
frames the kernel dropped are counted by the probes' program and exported with the probes' metrics
(``x0tta_probes_guard_dropped_total``, ``x0tta_probes_guard_would_drop_total``).

Detection (``[guard.detect]``, docs/guard.md): when the composition root hands it an observer
(:attr:`GuardService.observe`: ``now -> Observation`` of what the probes, the mesh tables and the
peer handshakes show), every ``interval`` the guard, in a worker thread, adds this node's
admissions and mode to a new observation and runs the pure detectors (``x0tta.guard.core.detect``)
over the observations of the last two windows and the originators it knew within
``originator_memory``; for each new finding (once per ``report_hold``) it logs ``guard_threat``
with the threat record (``x0tta.guard.core.threats``), counts it and keeps it for
``guard.threats``. A refused handshake asks for a look sooner (:meth:`GuardService.look_soon`, at
most one every :data:`EARLY_LOOK_GAP`): a burst of them is judged as it builds, not up to an
interval later. An observer that raises is logged and tried again at the next interval:
detection never stops the guard. The OGM sequence numbers ``seqno_takeover`` needs come from the
guard's own kernel map (``ogms``, :mod:`x0tta.guard.core.ogm`), read in the same worker thread at
each look: the events since the window began that no earlier observation holds.

API for other subsystems (the wiring hands them this instance): :attr:`GuardService.guard`, the
:class:`~x0tta.guard.enforce.Guard` (``admit``/``revoke``); the peer subsystem admits and revokes
through it with :class:`~x0tta.guard.enforce.PeerAdmission`. The heal loop reads
:meth:`GuardService.active_threats` and quarantines through :meth:`GuardService.quarantine`;
:attr:`GuardService.on_quarantine` callbacks (the wiring's: close the peer sessions) hear of each.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from x0tta.clock import SYSTEM
from x0tta.common.errors import X0ttaError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.guard import GuardSettings
from x0tta.config.schema import AgentSettings
from x0tta.guard.conditions import GUARD_NOT_ENFORCED
from x0tta.guard.core import MODES, ORIGIN_NAMES, BadMac, format_mac, parse_mac
from x0tta.guard.core.binding import effective_mode
from x0tta.guard.core.detect import (
    SEVERITY_INFO,
    SEVERITY_NAMES,
    SIGNATURES,
    Claim,
    Finding,
    Observation,
    Ogm,
    detect,
    fresh,
)
from x0tta.guard.core.ogm import decode_ogm_entries, ogm_claims, ogm_records
from x0tta.guard.core.threats import pardoned, threat_record
from x0tta.guard.enforce import Guard, KernelMaps

NOT_ENFORCED = (
    "not enforced: the probes have not loaded the guard's eBPF maps (see probes); "
    "admissions are kept and written when they do"
)


KEEP_RECORDS = 256  # threat records kept for guard.threats (the log has them all)
IDENTITY_POLL = 1.0  # seconds between two looks at whether this node has its identity yet (mode auto)
FAMILIAR_MAX = 65_536  # originators remembered, the most recently seen (far above any x0tta mesh)
IFNAMES_MAX = 1024  # interface names kept for the OGM records' ifindexes
# The soonest a refused handshake brings the next look after the last one: a look costs tens of
# milliseconds in a worker thread, so a flood of refusals makes at most two a second.
EARLY_LOOK_GAP = 0.5


class GuardCommandError(X0ttaError):
    """A bad admin request to the guard."""


class GuardService(Subsystem):
    name = "guard"

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        # auto starts in observe: run() brings the mode in force
        initial = "observe" if self.settings.mode == "auto" else self.settings.mode
        self.guard = Guard(initial, self.settings.admitted_macs)
        self.guard.set_ogm_window(self.settings.detect.seqno_margin, self.settings.detect.seqno_rate)
        self.threats: Counter[str] = Counter()  # threat records by signature name, since start
        self.by_severity: Counter[int] = Counter()  # threat records by severity, since start
        self.quarantines = 0  # quarantines started, since start
        # Set by the composition root: whether this node has its identity now (mode auto enforces
        # only then). None: no identity subsystem, never enforce by itself.
        self.identity_ready: Callable[[], bool] | None = None
        # Set by the composition root: whether a handshake can admit a neighbour here (the peer
        # subsystem admits; without it an identity admits nobody).
        self.handshakes_admit = True
        # Called with (MAC, SPIFFE ID or None) when a neighbour is quarantined (the wiring closes
        # its peer sessions).
        self.on_quarantine: list[Callable[[bytes, str | None], None]] = []
        # Called with the MACs whose quarantine ended (released, or its TTL over).
        self.on_release: list[Callable[[list[bytes]], None]] = []
        self.current: list[dict[str, Any]] = []  # the threat records of every finding at the last look
        self._override: str | None = None  # guard.mode from an operator, until the next reload
        self._identity_since: float | None = None
        self._started = 0.0
        self.records: deque[dict[str, Any]] = deque(maxlen=KEEP_RECORDS)
        # Set by the composition root: what the probes and the mesh tables show now (monotonic
        # ``now`` in, an Observation without admissions out). None: no detection.
        self.observe: Callable[[float], Observation] | None = None
        self.history: list[Observation] = []
        self.familiar: dict[str, float] = {}  # originator -> last look it was in the tables
        self._reported: dict[tuple[int, str], float] = {}
        self._pardoned: dict[str, float] = {}  # MAC an operator released -> until (monotonic)
        # the kernel's ogms map at the last look: originators, OGMs that jumped out of their
        # stream (cumulative per entry), entries that did not decode (since start)
        self.ogm_originators = self.ogm_jumps = self.ogm_undecodable = 0
        self.ogm_claims: list[Claim] = []  # the full-quality claims the map held at the last look
        self._ifnames: dict[int, str] = {}
        self._changed = asyncio.Event()
        self._soon = False  # a look was asked for before the interval is over
        self._registered = False
        self._clock = time.monotonic
        self._wall = time.time
        self._ctx: Context | None = None

    def kernel_maps(self, maps: KernelMaps | None) -> None:
        """The probes loaded the guard's maps (enforce through them now) or let them go (None)."""
        self.guard.attach(maps)
        self._changed.set()

    def look_soon(self) -> None:
        """Look again :data:`EARLY_LOOK_GAP` after the last look rather than a whole interval after
        it (the wiring calls this for every refused handshake); on the loop thread."""
        if not self._soon:
            self._soon = True
            self._changed.set()

    def count_threats(self, findings: Iterable[Finding]) -> None:
        """Count threat records (``x0tta_guard_threats_total{signature}``: those above informational,
        what the alert rules page on; ``..._by_severity_total``: all of them)."""
        findings = list(findings)
        self.threats.update(f.signature.name for f in findings if f.level < SEVERITY_INFO)
        self.by_severity.update(f.level for f in findings)

    def active_threats(self) -> list[dict[str, Any]]:
        """The threat records of what the detectors found at their last look (reported or not):
        what the heal loop answers with a quarantine while it lasts. A MAC an operator released is
        left out of them for one detection window (:func:`pardoned`)."""
        now = self._clock()
        self._pardoned = {m: until for m, until in self._pardoned.items() if until > now}
        return pardoned(self.current, set(self._pardoned))

    def quarantine(self, mac: str | bytes, ttl: float, reason: str) -> str:
        """Quarantine ``mac`` for ``ttl`` s: its binding and admission end, its sessions are closed
        and refused. Returns "" or why not (``quarantine_share``, a MAC the config admits)."""
        now = self._clock()
        heard = {h.mac for h in self.history[-1].heard} if self.history else set()
        neighbours = {bytes(m) for m in heard if isinstance(m, (bytes, bytearray))}
        neighbours |= {_mac_or_none(m) for m in heard if isinstance(m, str)} - {None}  # type: ignore[arg-type]
        neighbours |= set(self.guard.bindings.bound)
        why = self.guard.quarantine(mac, now, ttl, reason, neighbours, self.settings.quarantine_share)
        if why:
            return why
        raw = parse_mac(mac)
        q = self.guard.bindings.quarantined[raw]
        self.quarantines += 1
        if self._ctx is not None:
            self._ctx.log.warning("guard_quarantined", mac=format_mac(raw), spiffe_id=q.spiffe_id, ttl=ttl,
                                  reason=reason)
        for cb in list(self.on_quarantine):
            try:
                cb(raw, q.spiffe_id)
            except Exception:  # one broken consumer must not stop the quarantine
                if self._ctx is not None:
                    self._ctx.log.exception("guard_quarantine_listener_failed", listener=repr(cb))
        self._changed.set()
        return ""

    def bound_macs(self, who: str) -> list[bytes]:
        """A MAC, or every MAC bound to a SPIFFE ID (what an operator's quarantine names)."""
        return self.guard.bindings.bound_macs(who)

    def revoked(self, spiffe_id: str) -> list[str]:
        """``spiffe_id`` is revoked: end its bindings and admissions at once, also those whose
        sessions are gone and would otherwise pass frames for the rest of ``session_grace``."""
        unbound = [format_mac(m) for m in self.guard.unbind_identity(spiffe_id)]
        if unbound and self._ctx is not None:
            self._ctx.log.warning("guard_unbound_revoked", spiffe_id=spiffe_id, macs=unbound)
        return unbound

    def quarantines_held(self) -> list[dict[str, Any]]:
        """The quarantines in force: ``mac``, ``spiffe_id`` (None when none was bound), ``reason``,
        ``until`` (when it ends, in unix seconds)."""
        mono, wall = self._clock(), self._wall()
        return [{"mac": format_mac(m), "spiffe_id": q.spiffe_id, "reason": q.reason, "until": wall + q.until - mono}
                for m, q in sorted(self.guard.bindings.quarantined.items())]

    def quarantined_macs(self) -> list[str]:
        """The MACs quarantined now (aa:bb:cc:dd:ee:ff)."""
        return [format_mac(m) for m in self.guard.bindings.quarantined]

    def release(self, who: str, by: str = "admin") -> list[str]:
        """End the quarantine of a MAC, or of every MAC quarantined with a SPIFFE ID."""
        raw = self.guard.release(who)
        released = [format_mac(m) for m in raw]
        # the evidence from before the release stays in the detectors' window for up to a window:
        # it must not put the neighbour straight back (the attack lab saw every release undone at
        # the next look); an attack that goes on past the window does
        until = self._clock() + self.settings.detect.window + self.settings.detect.interval
        self._pardoned.update(dict.fromkeys(released, until))
        if released and self._ctx is not None:
            self._ctx.log.info("guard_released", macs=released, by=by)
        self._released(raw)
        return released

    def _released(self, macs: list[bytes]) -> None:
        if not macs:
            return
        for cb in list(self.on_release):
            try:
                cb(macs)
            except Exception:  # one broken consumer must not stop the release
                if self._ctx is not None:
                    self._ctx.log.exception("guard_release_listener_failed", listener=repr(cb))

    def mode_now(self, now: float) -> str:
        """The mode the kernel guard should run in at ``now``."""
        if self._override is not None:
            return self._override
        ready = self.identity_ready is not None and self.identity_ready()
        if not ready:
            self._identity_since = None
        elif self._identity_since is None:
            self._identity_since = now
        return effective_mode(self.settings.mode, self._identity_since, self._started, self.settings.enforce_grace,
                              now)

    def tick(self, ctx: Context, now: float) -> float | None:
        """Bring the mode in force and end what ran out at ``now``; returns when to look again."""
        mode = self.mode_now(now)
        if mode != self.guard.mode:
            self.guard.set_mode(mode)
            ctx.log.info("guard_mode_set", mode=mode, by="override" if self._override else self.settings.mode,
                         in_kernel=self.guard.bound)
        lost, released = self.guard.expire(now, self.settings.session_grace)
        if lost:
            ctx.log.info("guard_unbound", macs=[format_mac(m) for m in lost], reason="no session",
                         grace=self.settings.session_grace)
        if released:
            ctx.log.info("guard_released", macs=[format_mac(m) for m in released], by="ttl")
            self._released(released)
        due = [self.guard.bindings.next_due(self.settings.session_grace)]
        if self.settings.mode == "auto" and self._override is None:
            # the end of the grace, or the next look at the identity (it may come, or go: an expired
            # SVID authenticates no one, so the guard goes back to observing)
            since = self._identity_since
            due.append(max(since, self._started) + self.settings.enforce_grace if since is not None and
                       mode == "observe" else now + IDENTITY_POLL)
        return min((d for d in due if d is not None), default=None)

    # -- the subsystem ------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        self._ctx = ctx
        self._started = self._clock()
        self._apply(ctx.settings.guard)
        if not self._registered:
            self._register(ctx)
        g = self.guard
        ctx.log.info("guard_started", mode=g.mode, configured=self.settings.mode, admitted=len(g.state.entries),
                     in_kernel=g.bound, detecting=self._detecting())
        next_look = last_look = self._clock()
        while True:
            self._changed.clear()
            now = self._clock()
            due = self.tick(ctx, now)
            self._report(ctx)
            if self._detecting():
                if self._soon:
                    next_look = min(next_look, last_look + EARLY_LOOK_GAP)
                if now >= next_look:
                    self._soon = False
                    await self.look_async(ctx, now)
                    last_look = now
                    next_look = self._clock() + self.settings.detect.interval
                    continue
                due = next_look if due is None else min(due, next_look)
            else:
                next_look = now
            try:
                await SYSTEM.wait_for(self._changed.wait(), None if due is None else max(0.0, due - now))
            except TimeoutError:
                pass

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
        new_ogms = tuple(self._new_ogms(now - s.window))  # the map's read also takes its claims
        seen = replace(seen, at=now, admitted=frozenset(format_mac(m) for m in g.state.entries),
                       enforcing=g.mode == "enforce" and g.bound, familiar=frozenset(familiar),
                       admitting=bool(self.settings.admitted_macs) or (
                           self.handshakes_admit and self.identity_ready is not None and self.identity_ready()),
                       ogms=seen.ogms + new_ogms, claims=tuple(self.ogm_claims))
        # the detectors' counters start from the last look before their window: keep two windows
        history = [o for o in self.history if o.at >= now - 2 * s.window] + [seen]
        return history, familiar, seen, detect(history, s, now)

    def read_ogms(self, since: float) -> list[Ogm]:
        """The OGM events since ``since`` that the kernel's ``ogms`` map shows (blocking: a map
        read; the look runs it in its worker thread). Entries that do not decode are counted in
        ``x0tta_guard_ogm_undecodable_total`` and left out. The same read leaves the map's
        full-quality claims in :attr:`ogm_claims`."""
        entries, bad = decode_ogm_entries(self.guard.ogm_entries())
        self.ogm_originators, self.ogm_jumps = len(entries), sum(e.jumps for e in entries)
        self.ogm_undecodable += bad
        indexes = {st.ifindex for e in entries for st in e.streams} | {e.claim.ifindex for e in entries if e.claim}
        for index in indexes - self._ifnames.keys():
            try:
                self._ifnames[index] = socket.if_indextoname(index)
            except OSError:  # gone since: its index stays the name
                self._ifnames[index] = str(index)
        self.ogm_claims = ogm_claims(entries, self._ifnames)
        if len(self._ifnames) > IFNAMES_MAX:
            self._ifnames.clear()  # a recreated interface gets a new index: names are looked up again
        return ogm_records(entries, self._ifnames, since)

    def _new_ogms(self, since: float) -> list[Ogm]:
        """:meth:`read_ogms`, less the records an earlier observation of the history holds: an
        entry that did not change reads the same, and the history keeps each OGM event once."""
        known = {m for o in self.history for m in o.ogms}
        return [m for m in self.read_ogms(since) if m not in known]

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
        wall = self._wall()

        def record_of(f: Finding) -> dict[str, Any]:
            blocked = f.signature.name == "unadmitted_frames" and seen.enforcing
            return threat_record(f, timestamp=wall, host=ctx.node_id, action="blocked" if blocked else "allowed")

        self.current = [record_of(f) for f in found]
        out = []
        for f in new:
            record = record_of(f)
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
        """A new [guard]: its mode and static set replace the old ones (an operator's guard.mode
        with them), dynamic admissions stay."""
        self.settings = s
        self._override = None
        self.guard.set_ogm_window(s.detect.seqno_margin, s.detect.seqno_rate)
        self.guard.reconfigure(self.mode_now(self._clock()), s.admitted_macs)

    def _report(self, ctx: Context) -> None:
        if self.guard.bound:
            ctx.health.ok()
        else:
            ctx.health.set(GUARD_NOT_ENFORCED(NOT_ENFORCED))

    # -- admin --------------------------------------------------------------------------------

    def _register(self, ctx: Context) -> None:
        self._registered = True
        ctx.registry.register(_Collector(self))
        g = self.guard

        async def admit(args: dict[str, Any]) -> dict[str, Any]:
            mac = _arg(args, "mac")
            return {"mac": mac, "changed": g.admit(mac, str(args.get("reason", "admin")))}

        async def revoke(args: dict[str, Any]) -> dict[str, Any]:
            mac = _arg(args, "mac")
            return {"mac": mac, "changed": g.revoke(mac)}

        async def listing(_: dict[str, Any]) -> dict[str, Any]:
            return {**g.to_json(self._clock()), "configured_mode": self.settings.mode,
                    "operator_mode": self._override}

        async def threats(args: dict[str, Any]) -> list[dict[str, Any]]:
            return select_threats(list(self.records), args)

        async def mode(args: dict[str, Any]) -> dict[str, Any]:
            value = _arg(args, "mode")
            if value not in MODES:
                raise GuardCommandError(f"mode must be observe or enforce, not {value!r}")
            self._override = value
            g.set_mode(value)
            ctx.log.info("guard_mode_set", mode=value, by="admin", in_kernel=g.bound)
            return {"mode": value}

        async def release(args: dict[str, Any]) -> dict[str, Any]:
            who = _arg(args, "who")
            return {"who": who, "released": self.release(who)}

        for command, handler in {
            "guard.admit": admit,
            "guard.revoke": revoke,
            "guard.list": listing,
            "guard.mode": mode,
            "guard.threats": threats,
            "guard.release": release,
        }.items():
            ctx.admin.register(command, handler)


def _arg(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise GuardCommandError(f"argument {key!r} (a string) is required")
    return value


def select_threats(records: list[dict[str, Any]], args: dict[str, Any]) -> list[dict[str, Any]]:
    """The records ``guard.threats`` answers with: ``since`` (an EVE timestamp or a prefix of one,
    ``2026-12-06T03:40``: at or after it), ``severity`` (at most this number: 1 high only, 2 medium
    and high...), then the newest ``limit``."""
    limit, since, severity = args.get("limit", KEEP_RECORDS), args.get("since"), args.get("severity")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise GuardCommandError("limit must be a non-negative integer")
    if since is not None and not isinstance(since, str):
        raise GuardCommandError("since must be a timestamp such as 2026-12-06T03:40:00")
    if severity is not None and (not isinstance(severity, int) or isinstance(severity, bool)
                                 or severity not in SEVERITY_NAMES):
        raise GuardCommandError(f"severity must be one of {sorted(SEVERITY_NAMES)} (1 high ... 4 informational)")
    out = [r for r in records
           if (since is None or r["timestamp"][:len(since)] >= since)
           and (severity is None or r["alert"]["severity"] <= severity)]
    return out[-limit:] if limit else []


def _mac_or_none(text: str) -> bytes | None:
    try:
        return parse_mac(text)
    except BadMac:
        return None


class _Collector:
    """The guard's state at scrape time (no kernel access during a scrape). No ``describe``: a
    registry that auto-describes learns the names from ``collect``, which is as cheap."""

    def __init__(self, service: GuardService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        svc = self.service
        g = svc.guard
        yield GaugeMetricFamily("x0tta_guard_enforcing", "1: enforce, 0: observe", value=float(g.mode == "enforce"))
        yield GaugeMetricFamily(
            "x0tta_guard_in_kernel", "1 while the guard's maps are bound (the probes loaded them)", value=float(g.bound)
        )
        admitted = GaugeMetricFamily("x0tta_guard_admitted", "MACs admitted, by origin", labels=["origin"])
        for origin, name in sorted(ORIGIN_NAMES.items()):
            admitted.add_metric([name], float(sum(1 for a in g.state.entries.values() if a.origin == origin)))
        yield admitted
        yield GaugeMetricFamily("x0tta_guard_bindings", "MACs bound to the SPIFFE ID that authenticated on their link",
                                value=float(len(g.bindings.bound)))
        yield GaugeMetricFamily("x0tta_guard_quarantined", "Neighbours quarantined now",
                                value=float(len(g.bindings.quarantined)))
        yield CounterMetricFamily("x0tta_guard_quarantines", "Quarantines started", value=float(svc.quarantines))
        threats = CounterMetricFamily("x0tta_guard_threats", "Threat records above informational, by signature",
                                      labels=["signature"])
        for name in sorted(SIGNATURES):
            threats.add_metric([name], float(svc.threats[name]))
        yield threats
        severity = CounterMetricFamily("x0tta_guard_threats_by_severity", "Threat records by severity",
                                       labels=["severity"])
        for level, name in sorted(SEVERITY_NAMES.items()):
            severity.add_metric([name], float(svc.by_severity[level]))
        yield severity
        yield GaugeMetricFamily("x0tta_guard_ogm_originators", "Originators in the kernel's OGM map at the last look",
                                value=float(svc.ogm_originators))
        yield GaugeMetricFamily("x0tta_guard_ogm_jumps", "OGMs whose seqno jumped out of their originator's "
                                "streams, summed over the OGM map at the last look", value=float(svc.ogm_jumps))
        yield CounterMetricFamily("x0tta_guard_ogm_undecodable", "OGM map entries that did not decode",
                                  value=float(svc.ogm_undecodable))

