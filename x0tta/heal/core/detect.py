"""Analyze: detectors turn observations into symptoms, with evidence and hysteresis.

A detector looks at one :class:`~x0tta.heal.core.model.Observation` (and the little it remembers
of earlier ones, in :class:`Memory`) and states *conditions*: ``(kind, target) -> (severity,
evidence)``. A condition is not yet a symptom. :func:`hysteresis` raises a symptom only after its
condition has held for the kind's ``raise_after`` and clears it only after the condition has been
absent for its ``clear_after`` - so one lost probe, one bad OGM or one missed dump is never an
incident, and a link that comes back for a moment is not trusted at once.

Detectors and their conditions:

* ``link_down`` (``hardif:IF``): carrier lost on a hard interface. Its clear time grows with the
  number of recent carrier losses (flap dampening), capped at ``flap_hold_max``.
* ``silent_loss`` (``link:IF/PEER``): the link is up but liveness probes to a neighbouring agent
  are lost - ``silent_loss_run`` in a row, or ``silent_loss_ratio`` of the window. While IF's
  carrier is down it is not a condition, and its hysteresis restarts (an active one clears at
  once: ``link_down`` says it better), so a link that comes back up starts with a clean window.
* ``link_suspect`` (``link:IF/PEER``): ``suspect_run`` probes (1) lost in a row on a link that lost
  none before them in its window: not yet an outage, but cheap to prepare for (faster OGMs).
  Not while this agent is strained (``Observation.strained``), nor without the kernel echo
  (``Observation.echo_missing``, when ``silent_loss`` also takes twice ``silent_loss_run``: a
  starved agent over there cannot be told from a dead link), nor on every probed link at once
  (two or more: one late moment of this node, not a failing link). Cleared like ``silent_loss``.
  On a node busier than ``strain_node_cpu`` (``Observation.node_busy``) ``silent_loss`` takes twice
  ``silent_loss_run`` too: there the kernel echo's answer is read late as well.
* ``link_degraded`` (``link:IF/PEER``): neighbour link quality (throughput, else TQ) below
  ``degraded_drop`` of its own long-run average, or TQ below ``degraded_tq_floor``.
* ``neighbour_lost`` (``neigh:IF/PEER``): a neighbour absent from the table (or not seen) for
  ``neighbour_lost_after`` while its hard interface is up.
* ``gateway_lost`` (``gw``): in gateway client mode, no gateway selected for ``gateway_lost_after``
  while one was selected before.
* ``gateway_changed`` (``gw``): the selected gateway changed within the flap window.
* ``route_flapping`` (``mesh``): originators whose router changed ``flap_count`` times within the
  flap window, not counting batman-adv alternating between equal paths: the changes count when the
  route's quality fell by more than ``flap_quality_band`` within the window, or one by one when a
  router of the change was silent for ``flap_router_silence`` or gone (:func:`_routes`).
* ``partition`` (``mesh``): at least ``partition_min_lost`` originators and ``partition_fraction``
  of the peak count of the partition window vanished.
* ``config_drift`` (``mesh``): mesh settings differ from the desired ones.
* ``subsystem_unhealthy`` (``subsystem:NAME``): another subsystem is failing.
* ``mesh_alert`` (``mesh``): a node of the mesh (this one included) reported a failing link of its
  own within its alert's hold (:mod:`~x0tta.heal.core.alert`).
* ``threat`` (``peer:MAC``): the guard's detectors find, at their last look, a threat of severity
  ``quarantine_severity`` or more urgent about the neighbour MAC (``Observation.threats``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from x0tta.config.heal import HealSettings
from x0tta.heal.core.model import Evidence, Observation, Originator, Severity, Symptom, SymptomKind, evidence

Key = tuple[str, str]
Conditions = dict[Key, tuple[Severity, Evidence]]

# EWMA weights of the link quality trend: the baseline follows ~100 samples, the fast one ~3.
_SLOW = 0.01
_FAST = 0.3

RouteChange = tuple[float, bool]  # (when, a router of the change was silent or gone)
# (start, lowest, highest, fall) of a route's quality: fall is the largest drop of a sample below the
# best before it (within the window), as a fraction of that best
Buckets = tuple[tuple[float, float, float, float], ...]
# A route's quality over the flap window is kept as this many buckets of it.
_QUALITY_BUCKETS = 12
# A router is silent after this many originator intervals unheard, at least (flap_router_silence).
_SILENT_OGMS = 3


@dataclass(frozen=True, slots=True)
class Hyst:
    """Hysteresis of one (kind, target): when its condition turned true/false, and whether raised."""

    active: bool = False
    true_since: float | None = None
    false_since: float | None = None
    severity: Severity = Severity.WARNING
    evidence: Evidence = ()
    raised: float = 0.0


@dataclass(frozen=True)
class Memory:
    """What the detectors remember between observations; every map is bounded by what exists."""

    hyst: dict[Key, Hyst] = field(default_factory=dict)
    carrier: dict[str, bool] = field(default_factory=dict)  # hardif -> oper_up last seen
    attached: dict[str, bool] = field(default_factory=dict)  # hardif -> in the mesh interface, last seen (gone: False)
    reattached: dict[str, float] = field(default_factory=dict)  # hardif -> seen attached again after a detach
    moved_off: dict[str, tuple[str, float]] = field(default_factory=dict)  # orig -> (hardif its route left, when)
    carrier_losses: dict[str, tuple[float, ...]] = field(default_factory=dict)  # within flap_window
    neigh_seen: dict[tuple[str, str], float] = field(default_factory=dict)  # last time present
    quality: dict[tuple[str, str], tuple[float, float, int]] = field(default_factory=dict)  # slow, fast, n
    routers: dict[str, Originator] = field(default_factory=dict)  # orig -> its best entry last seen
    route_changes: dict[str, tuple[RouteChange, ...]] = field(default_factory=dict)  # within flap_window
    route_quality: dict[str, Buckets] = field(default_factory=dict)  # of the originators in route_changes
    heard: frozenset[tuple[str, str]] = frozenset()  # (hardif, neighbour) heard at the last observation
    orig_counts: tuple[tuple[float, int], ...] = ()
    gateway: str | None = None
    gateway_seen: float | None = None  # last time a gateway was selected
    gateway_changes: tuple[float, ...] = ()


def _recent(times: tuple[float, ...], now: float, window: float) -> tuple[float, ...]:
    return tuple(t for t in times if now - t <= window)


def analyze(mem: Memory, obs: Observation, s: HealSettings, now: float) -> tuple[Memory, Conditions]:
    """Run every enabled detector over ``obs``; returns the updated memory and the conditions."""
    off = set(s.disabled_detectors)
    out: Conditions = {}
    carrier, losses = _links(mem, obs, s, now, out)
    attached, reattached = _attachments(mem, obs, s, now)
    moved_off = _moved_off(mem, obs, s, now)
    neigh_seen, quality = _neighbours(mem, obs, s, now, out)
    _probes(obs, s, out)
    routers, changes, route_quality, heard = _routes(mem, obs, s, now, out)
    counts = _partition(mem, obs, s, now, out)
    gw, gw_seen, gw_changes = _gateways(mem, obs, s, now, out)
    if obs.drift:
        out[(SymptomKind.CONFIG_DRIFT, "mesh")] = (
            Severity.WARNING,
            evidence(settings={d.key: {"desired": d.desired, "actual": d.actual} for d in obs.drift}),
        )
    for sub in obs.subsystems:
        if sub.state == "failing":
            out[(SymptomKind.SUBSYSTEM_UNHEALTHY, f"subsystem:{sub.name}")] = (
                Severity.WARNING,
                evidence(state=sub.state, message=sub.message),
            )
    if obs.alerts:
        out[(SymptomKind.MESH_ALERT, "mesh")] = (
            Severity.INFO,
            evidence(origins=tuple(a.origin for a in obs.alerts), kinds=tuple(sorted({a.kind for a in obs.alerts}))),
        )
    _threats(obs, s, out)
    if off:
        out = {k: v for k, v in out.items() if k[0] not in off}
    mem = replace(
        mem,
        carrier=carrier,
        carrier_losses=losses,
        attached=attached,
        reattached=reattached,
        moved_off=moved_off,
        neigh_seen=neigh_seen,
        quality=quality,
        routers=routers,
        route_changes=changes,
        route_quality=route_quality,
        heard=heard,
        orig_counts=counts,
        gateway=gw,
        gateway_seen=gw_seen,
        gateway_changes=gw_changes,
    )
    return mem, {(str(k[0]), k[1]): v for k, v in out.items()}


# The guard's detectors that read what a neighbour forwards - batman-adv's tables, the OGMs it
# relays - rather than what the neighbour itself is or does: an honest neighbour one hop from the
# attacker shows the same evidence as the attacker (the attack suite in the lab: every node of the
# ring quarantined the neighbour it heard a flood, a takeover or a made-up gateway through).
# ogm_full_claim is not one of them: it reads the OGMs in the neighbour's own frames, at a quality
# no forward keeps.
FORWARDED = ("originator_flood", "seqno_takeover", "gateway_bandwidth", "inflated_link_metric")


def _threats(obs: Observation, s: HealSettings, out: Conditions) -> None:
    by_mac: dict[str, list[Any]] = {}
    for t in obs.threats:
        if t.signature in FORWARDED and not s.quarantine_forwarded:
            continue  # recorded and alerted on by the guard; a human decides
        if t.severity <= s.quarantine_severity:
            by_mac.setdefault(t.mac.lower(), []).append(t)
    for mac, found in sorted(by_mac.items()):
        ids = sorted({t.spiffe_id for t in found if t.spiffe_id})
        out[(SymptomKind.THREAT, f"peer:{mac}")] = (
            Severity.CRITICAL,
            evidence(mac=mac, signatures=tuple(sorted({t.signature for t in found})),
                     severity=min(t.severity for t in found), spiffe_ids=tuple(ids)),
        )


def _links(mem: Memory, obs: Observation, s: HealSettings, now: float, out: Conditions):
    carrier: dict[str, bool] = {}
    losses: dict[str, tuple[float, ...]] = {}
    for h in obs.hardifs:
        carrier[h.name] = h.oper_up
        times = _recent(mem.carrier_losses.get(h.name, ()), now, s.flap_window)
        if mem.carrier.get(h.name, True) and not h.oper_up:
            times = (*times, now)
        if times:
            losses[h.name] = times
        if not h.oper_up:
            out[(SymptomKind.LINK_DOWN, f"hardif:{h.name}")] = (
                Severity.CRITICAL,
                evidence(hardif=h.name, carrier="down", flaps=len(times)),
            )
    return carrier, losses


def _moved_off(mem: Memory, obs: Observation, s: HealSettings, now: float) -> dict[str, tuple[str, float]]:
    """Originators whose best route left a hard interface for another one, and when (seen at this
    observation), kept for ``flap_window``: what a failing link carried until batman-adv moved it.
    Its old entries through the link stay in the table until batman-adv purges them (200 s) - a
    ring cut elsewhere leaves such entries too, so the plan asks only for moves since a fault's
    onset (:func:`x0tta.heal.core.plan.candidates`)."""
    out = {o: (h, t) for o, (h, t) in mem.moved_off.items() if 0.0 <= now - t <= s.flap_window}
    for o in obs.originators:
        prev = mem.routers.get(o.orig)
        if prev is not None and prev.hardif != o.hardif:
            out[o.orig] = (prev.hardif, now)
    return out


def _attachments(mem: Memory, obs: Observation, s: HealSettings, now: float):
    """Each hard interface's membership of the mesh interface, and when one was last seen joining it
    again (by this agent's restore or anyone's), kept for ``reattach_guard`` - also while the
    interface is gone, so a guard outlives a short vanishing.

    Joining again is being seen attached after being seen detached, or after being absent from an
    earlier observation: an interface deleted and created again (a driver reset) joins anew, with
    a new random OGM sequence number. An interface that vanished stays in ``attached`` as not
    attached (which it is not), so it is known to come back even if it was the only one; the
    names are those the service observes, which it keeps as long. Nothing is marked at the first
    observation after a start (``attached`` is empty then): what the store remembers of this
    agent's own restores applies there (:func:`x0tta.heal.core.loop.remember_reattached`)."""
    attached = {name: False for name in mem.attached}
    attached.update((h.name, h.attached) for h in obs.hardifs)
    reattached = {name: t for name, t in mem.reattached.items() if 0.0 <= now - t < s.reattach_guard}
    for h in obs.hardifs:
        if h.attached and mem.attached and not mem.attached.get(h.name, False):
            reattached[h.name] = now
    return attached, reattached


def _neighbours(mem: Memory, obs: Observation, s: HealSettings, now: float, out: Conditions):
    up = {h.name for h in obs.hardifs if h.oper_up and h.attached}
    seen: dict[tuple[str, str], float] = {}
    quality: dict[tuple[str, str], tuple[float, float, int]] = {}
    for n in obs.neighbours:
        key = (n.hardif, n.addr)
        last = now - n.last_seen_ms / 1000.0
        seen[key] = max(last, mem.neigh_seen.get(key, last))
        q = n.quality
        if q is None:
            continue
        slow, fast, count = mem.quality.get(key, (q, q, 0))
        slow, fast = slow + _SLOW * (q - slow), fast + _FAST * (q - fast)
        quality[key] = (slow, fast, count + 1)
        low_tq = n.throughput is None and n.tq is not None and n.tq < s.degraded_tq_floor
        dropped = count >= 10 and fast < slow * s.degraded_drop
        if low_tq or dropped:
            out[(SymptomKind.LINK_DEGRADED, f"link:{n.hardif}/{n.addr}")] = (
                Severity.WARNING,
                evidence(quality=round(fast, 1), baseline=round(slow, 1), tq=n.tq, throughput=n.throughput),
            )
    for key, last in mem.neigh_seen.items():
        # a neighbour on a hard interface that is down or out of the mesh is not "lost": it is
        # unreachable by our own doing or by carrier; forget it until it is heard again
        if key not in seen and key[0] in up and now - last <= s.neighbour_forget_after:
            seen[key] = last
    for key, last in seen.items():
        gone = now - last
        if key[0] in up and gone >= s.neighbour_lost_after:
            out[(SymptomKind.NEIGHBOUR_LOST, f"neigh:{key[0]}/{key[1]}")] = (
                Severity.WARNING,
                evidence(hardif=key[0], neighbour=key[1], onset=last),
            )
    return seen, quality


def _probes(obs: Observation, s: HealSettings, out: Conditions) -> None:
    up = {h.name for h in obs.hardifs if h.oper_up}
    suspects: Conditions = {}
    probed = 0
    for p in obs.probes:
        if p.hardif not in up:
            continue  # link_down says it better
        full = p.window > 0 and p.received + round(p.loss * p.window) >= p.window // 2
        target = f"link:{p.hardif}/{p.peer}"
        # lost before this run, within the window: a link that drops a probe now and then is
        # never suspect on one missing probe, only one that was clean until it went quiet
        before = max(0, round(p.loss * p.window) - p.lost_run)
        # a strained agent reads and sends its probes late: a suspicion is no evidence then, and
        # its remedy (faster OGMs) would load the node more (x0tta.heal.core.strain)
        probed += 1
        if (s.suspect_run and not obs.strained and not obs.echo_missing and p.lost_run >= s.suspect_run
                and before == 0 and p.received >= p.window // 2):
            suspects[(SymptomKind.LINK_SUSPECT, target)] = (
                Severity.INFO,
                evidence(hardif=p.hardif, peer=p.peer, lost_run=p.lost_run, onset=p.last_rx),
            )
        run = s.silent_loss_run * (2 if obs.echo_missing or obs.node_busy else 1)
        if p.lost_run >= run or (full and p.loss >= s.silent_loss_ratio):
            out[(SymptomKind.SILENT_LOSS, target)] = (
                Severity.CRITICAL if p.loss >= 0.99 or p.lost_run >= 2 * s.silent_loss_run else Severity.WARNING,
                evidence(hardif=p.hardif, peer=p.peer, loss=round(p.loss, 3), lost_run=p.lost_run, window=p.window,
                         scattered=p.scattered, onset=p.last_rx),
            )
    # one late moment of this node reads as a late probe on every link at once (a 20-node lab guest
    # had agents suspect all their links in one cycle); one failing link is one link
    if not (probed >= 2 and len(suspects) == probed):
        out.update(suspects)


def _heard(obs: Observation, s: HealSettings) -> frozenset[tuple[str, str]]:
    """Neighbours heard within ``flap_router_silence`` (at least :data:`_SILENT_OGMS` originator
    intervals: a mesh run at 5 s OGMs hears its neighbours every 5 s), on an interface that is up
    and in the mesh."""
    down = {h.name for h in obs.hardifs if not (h.oper_up and h.attached)}
    limit_ms = max(s.flap_router_silence * 1000.0, _SILENT_OGMS * (obs.orig_interval_ms or 0))
    return frozenset((n.hardif, n.addr) for n in obs.neighbours if n.hardif not in down and n.last_seen_ms < limit_ms)


def _quality(o: Originator) -> float | None:
    """The quality of a route: throughput with BATMAN_V, else TQ."""
    return float(o.throughput) if o.throughput is not None else (None if o.tq is None else float(o.tq))


def _track(buckets: Buckets, q: float | None, now: float, window: float) -> Buckets:
    """Add the quality ``q`` to the buckets of a route's quality; buckets older than ``window`` go.
    A rise is no swing (a converging mesh's TQs climb for a minute): only a fall below the best
    seen before it is kept."""
    width = window / _QUALITY_BUCKETS
    kept = buckets if not buckets or now - buckets[0][0] < window else tuple(b for b in buckets if now - b[0] < window)
    if q is None:
        return kept
    peak = max((b[2] for b in kept), default=q)
    fall = max(0.0, (peak - q) / peak) if peak > 0 else 0.0
    if kept and now - kept[-1][0] < width:
        start, lo, hi, worst = kept[-1]
        return (*kept[:-1], (start, min(lo, q), max(hi, q), max(worst, fall)))
    return (*kept, (now, q, q, fall))


def _routes(mem: Memory, obs: Observation, s: HealSettings, now: float, out: Conditions):
    """``route_flapping``: originators whose route moved ``flap_count`` times in the flap window,
    not counting batman-adv alternating between equal paths.

    Why equal paths alternate: BATMAN_IV keeps, per neighbour and originator, the average of the
    last five TQ values heard through that neighbour (zeros left out), and moves the route to a
    neighbour whose average is higher by a single unit - there is no hysteresis. Two paths of equal
    quality carry TQs that drift by a unit or two as the links' 64-OGM windows count their OGMs, so
    the route moves between them for as long as the mesh runs, and loses nothing: either path
    delivers, and the route's quality stays where it was. (BATMAN_V does the same on throughput.)

    Real flapping differs in one of two ways, and a change counts only then:

    * the route's quality swings: a lossy link lowers the TQ of every route through it until the
      route moves elsewhere, then recovers and takes it back. The quality of the best entry is kept
      over the window (:data:`_QUALITY_BUCKETS` buckets, from the last value before the first
      change on); a fall of more than ``flap_quality_band`` below the best seen before it makes
      every change of the window count (a rise does not: a converging mesh's TQs climb);
    * a router of the change was silent: not heard for ``flap_router_silence``, gone from the
      neighbour table or on an interface that is down or out of the mesh, at this observation or
      the one before. BATMAN_IV's average leaves the missing OGMs of a silent router out, so its
      route keeps its quality until it moves: only the router's silence tells. Such changes count
      one by one.
    """
    heard = _heard(obs, s)
    routers: dict[str, Originator] = {}
    changes: dict[str, tuple[RouteChange, ...]] = {}
    quality: dict[str, Buckets] = {}
    found: dict[str, dict[str, Any]] = {}
    alternating = 0
    # every cycle, for every originator: keep the common case (no change, none recent) cheap
    for o in obs.originators:
        routers[o.orig] = o
        prev = mem.routers.get(o.orig)
        times = mem.route_changes.get(o.orig, ())
        if times and now - times[0][0] > s.flap_window:
            times = tuple(c for c in times if now - c[0] <= s.flap_window)
        if prev is not None and prev.router != o.router:
            silent = any(r not in heard or r not in mem.heard
                         for r in ((prev.hardif, prev.router), (o.hardif, o.router)))
            times = (*times, (now, silent))
        if not times:
            continue
        buckets = mem.route_quality.get(o.orig, ())
        if not buckets and prev is not None:  # the quality the route had before it first moved
            buckets = _track((), _quality(prev), now, s.flap_window)
        changes[o.orig] = times
        buckets = quality[o.orig] = _track(buckets, _quality(o), now, s.flap_window)
        if len(times) < s.flap_count:
            continue
        silent_n = sum(1 for _, silent in times if silent)
        fall = max((b[3] for b in buckets), default=0.0)
        swing = fall > s.flap_quality_band
        if swing or silent_n >= s.flap_count:
            found[o.orig] = {
                "changes": len(times),
                "cause": "quality swing" if swing else "router silent",
                "quality": [round(min(b[1] for b in buckets), 1), round(max(b[2] for b in buckets), 1)],
                "fall": round(fall, 3),
                "silent": silent_n,
            }
        else:
            alternating += 1
    if found:
        flapping = sorted(found, key=lambda o: (-found[o]["changes"], o))
        out[(SymptomKind.ROUTE_FLAPPING, "mesh")] = (
            Severity.WARNING,
            evidence(originators=len(flapping), worst={o: found[o] for o in flapping[:5]},
                     alternating=alternating, band=s.flap_quality_band),
        )
    return routers, changes, quality, heard


def _partition(mem: Memory, obs: Observation, s: HealSettings, now: float, out: Conditions):
    count = len(obs.originators)
    counts = tuple((t, c) for t, c in mem.orig_counts if now - t <= s.partition_window)
    if obs.mesh_available:
        counts = (*counts, (now, count))
    peak = max((c for _, c in counts), default=count)
    lost = peak - count
    if obs.mesh_available and lost >= s.partition_min_lost and lost >= peak * s.partition_fraction:
        out[(SymptomKind.PARTITION, "mesh")] = (
            Severity.CRITICAL,
            evidence(originators=count, peak=peak, lost=lost),
        )
    return counts


def _gateways(mem: Memory, obs: Observation, s: HealSettings, now: float, out: Conditions):
    selected = obs.selected_gateway()
    changes = _recent(mem.gateway_changes, now, s.flap_window)
    seen = mem.gateway_seen
    if selected is not None:
        if mem.gateway is not None and selected != mem.gateway:
            changes = (*changes, now)
        seen = now
    elif obs.gw_mode == "client" and seen is not None and now - seen >= s.gateway_lost_after:
        out[(SymptomKind.GATEWAY_LOST, "gw")] = (
            Severity.CRITICAL,
            evidence(last_gateway=mem.gateway, gone_s=round(now - seen, 2), gateways=len(obs.gateways)),
        )
    if changes:
        out[(SymptomKind.GATEWAY_CHANGED, "gw")] = (
            Severity.INFO,
            evidence(changes=len(changes), gateway=selected),
        )
    return (selected if selected is not None else mem.gateway), seen, changes


def timings(kind: str, s: HealSettings, ev: Evidence) -> tuple[float, float]:
    """``(raise_after, clear_after)`` of a symptom kind under ``s``."""
    if kind in (SymptomKind.SILENT_LOSS, SymptomKind.LINK_SUSPECT):
        return (s.silent_loss_raise_after if kind == SymptomKind.SILENT_LOSS else 0.0), s.silent_loss_clear_after
    if kind == SymptomKind.LINK_DOWN:
        flaps = int(dict(ev).get("flaps", 0))
        return s.link_down_raise_after, min(s.flap_hold_max, s.link_down_clear_after * (1 + max(0, flaps - 1)))
    if kind == SymptomKind.LINK_DEGRADED:
        return s.degraded_raise_after, s.degraded_clear_after
    if kind == SymptomKind.CONFIG_DRIFT:
        return s.drift_raise_after, 0.0
    if kind == SymptomKind.SUBSYSTEM_UNHEALTHY:
        return s.subsystem_raise_after, s.clear_after
    if kind == SymptomKind.GATEWAY_CHANGED:
        return 0.0, s.flap_window
    if kind == SymptomKind.MESH_ALERT:
        return 0.0, 0.0  # the alert's own hold is the hysteresis
    if kind == SymptomKind.THREAT:
        # the guard's hysteresis is its own: a finding lasts its detection window and the active
        # threats are those of its last look. A threat gone from them is over - or an operator
        # released the neighbour, which a held-over symptom would quarantine again at once
        return 0.0, 0.0
    return 0.0, s.clear_after


_PROBED = (SymptomKind.SILENT_LOSS, SymptomKind.LINK_SUSPECT)


def carrier_down(obs: Observation) -> frozenset[str]:
    """Hard interfaces without carrier in ``obs``: their link-scoped loss accounting restarts."""
    return frozenset(h.name for h in obs.hardifs if not h.oper_up)


def hysteresis(
    hyst: dict[Key, Hyst], conds: Conditions, s: HealSettings, now: float, restart: frozenset[str] = frozenset()
) -> tuple[dict[Key, Hyst], list[Symptom], list[Symptom], dict[Key, Symptom]]:
    """Advance hysteresis; returns ``(state, raised, cleared, active)``. The ``silent_loss`` of a
    hard interface in ``restart`` (its carrier is down) is forgotten, and cleared if active."""
    new: dict[Key, Hyst] = {}
    raised: list[Symptom] = []
    cleared: list[Symptom] = []
    active: dict[Key, Symptom] = {}
    for key in hyst.keys() | conds.keys():
        h = hyst.get(key, Hyst())
        cond = conds.get(key)
        if restart and key[0] in _PROBED and _link_hardif(key[1]) in restart:
            if h.active:
                cleared.append(_symptom(key, h))
            continue
        if cond is not None:
            sev, ev = cond
            h = replace(h, true_since=h.true_since if h.true_since is not None else now, false_since=None,
                        severity=sev, evidence=ev)
            raise_after, _ = timings(key[0], s, ev)
            if not h.active and now - h.true_since >= raise_after:
                h = replace(h, active=True, raised=now)
                raised.append(_symptom(key, h))
        else:
            if not h.active:
                continue  # nothing pending: forget
            h = replace(h, false_since=h.false_since if h.false_since is not None else now)
            _, clear_after = timings(key[0], s, h.evidence)
            if now - h.false_since >= clear_after:
                cleared.append(_symptom(key, h))
                continue
        new[key] = h
        if h.active:
            active[key] = _symptom(key, h)
    return new, raised, cleared, active


def _link_hardif(target: str) -> str:
    """``link:eth1/aa:..`` -> ``eth1``."""
    return target.split(":", 1)[-1].split("/", 1)[0]


def _symptom(key: Key, h: Hyst) -> Symptom:
    onset = h.true_since if h.true_since is not None else h.raised
    hint = dict(h.evidence).get("onset")  # a detector that knows better (last probe heard)
    if isinstance(hint, (int, float)) and hint < onset:
        onset = float(hint)
    return Symptom(
        kind=SymptomKind(key[0]),
        target=key[1],
        severity=h.severity,
        evidence=h.evidence,
        onset=onset,
        raised=h.raised,
    )
