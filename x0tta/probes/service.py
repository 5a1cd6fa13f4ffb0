"""The probes subsystem: keeps the eBPF programs attached, reads their maps, exports what they saw.

Lifecycle (``run``):

1. load the object with libbpf (in a thread): maps sized from ``[probes]`` (and the admitted map
   from ``[guard]``), pinned under ``pin_path`` (counters and admissions survive a restart); the
   maps are then offered to whoever :meth:`ProbesService.share_maps` asked for them - the guard,
   through the composition root, binds its ``admitted``/``config`` maps this way;
2. every ``poll_interval``: attach to the interfaces to probe (the configured ones, or the
   batman-adv interface and its hard interfaces, followed as they come and go; attach replaces our
   own filter so it is idempotent), then read every map in batches and keep the decoded
   :class:`~x0tta.probes.core.Snapshot` - both in a thread, the loop never waits on the kernel;
3. on shutdown: tell the map listeners the maps go (None), detach from every hook and close (the
   pinned maps stay).

A node without what eBPF needs (no CAP_BPF/CAP_NET_ADMIN, no bpf() syscall, no libbpf, the object
not built) gets :class:`~x0tta.common.errors.CapabilityMissing` with the reason: the probes are off,
health says why, and the rest of the agent runs on.

API for other subsystems (the wiring hands them this instance):

* :meth:`ProbesService.neighbors_seen` -> ``list[NeighborSeen]``: for each (interface, neighbour
  MAC) that sent batman-adv frames: ``last_rx`` in ``time.monotonic()`` seconds (the kernel's
  CLOCK_MONOTONIC, the same clock), ``age`` in seconds at the last poll, packets received and denied.
  At most ``poll_interval`` old; the MAPE-K monitor treats a growing age as a silent link.
* :meth:`ProbesService.last_heard` (mac) -> ``float | None``: the most recent ``last_rx`` of that
  MAC over all interfaces.
* :meth:`ProbesService.last_rx` (ifindex, mac) -> ``float | None``: the ``last_rx`` of one
  neighbour on one interface read from the kernel now (one ``bpf_map_lookup_elem`` syscall, a few
  microseconds: fine on the event loop), not from the last poll; None while the object is not
  loaded or that MAC sent no batman-adv frame there. The heal prober corroborates a neighbour's
  silence with it.
* :meth:`ProbesService.refresh` (async): poll now and return the new snapshot.
* :meth:`ProbesService.share_maps` (listener): ``listener(maps)`` with the loaded maps by name
  (:data:`~x0tta.probes.core.MAP_NAMES`) each time the object is loaded, ``listener(None)`` before
  they are closed. Called on the event loop; map syscalls only, no sleeping.

The admission guard's programs are part of this object but the guard is a subsystem of its own
(:mod:`x0tta.guard.service`): its admin commands and settings are there. What the probes keep of
it is what their poll reads: the guard's drop counters in the ``stats`` map.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from x0tta.common.errors import CapabilityMissing, X0ttaError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.guard import GuardSettings
from x0tta.config.probes import ProbeSettings
from x0tta.config.schema import AgentSettings
from x0tta.probes import core
from x0tta.probes.conditions import (
    BPF_LOAD_FAILED,
    BPF_OBJECTS_MISSING,
    BPF_PERMISSION_DENIED,
    BPF_UNSUPPORTED,
    BPFFS_UNAVAILABLE,
    PROBE_ATTACH_FAILED,
    PROBE_INTERFACE_MISSING,
    PROBES_LOADING,
)
from x0tta.probes.libbpf import BpfError, BpfMap, ProbeObject, ensure_bpffs

PACKAGED_OBJECT = Path(__file__).parent / "bpf" / "x0tta_probes.o"
CAPS = "CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN before Linux 5.8, or to mount bpffs)"
ADMITTED_MAP_SIZE = GuardSettings().admitted_map_size

MapsListener = Callable[[Mapping[str, BpfMap] | None], None]


class ProbeCommandError(X0ttaError):
    """A bad admin request to the probes."""


@dataclass
class PollResult:
    snapshot: core.Snapshot
    names: dict[int, str]
    attached: list[str]
    missing: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0


def object_path(settings: ProbeSettings) -> Path:
    return Path(settings.object_path) if settings.object_path else PACKAGED_OBJECT


def capability_of(exc: BpfError) -> CapabilityMissing:
    """A load failure in the words an operator needs."""
    if exc.errno in (errno.EPERM, errno.EACCES):
        return CapabilityMissing(BPF_PERMISSION_DENIED, f"eBPF probes off: {exc}; they need {CAPS}")
    if exc.errno == errno.ENOENT:
        return CapabilityMissing(BPF_OBJECTS_MISSING, f"eBPF probes off: {exc}")
    if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP, 524):
        return CapabilityMissing(BPF_UNSUPPORTED, f"eBPF probes off: the kernel lacks support: {exc}")
    return CapabilityMissing(BPF_LOAD_FAILED, f"eBPF probes off: {exc}")


def load(settings: ProbeSettings, admitted_map_size: int = ADMITTED_MAP_SIZE) -> ProbeObject:
    """Load and pin the probes (blocking); the guard's map sized by ``[guard] admitted_map_size``.
    Raises CapabilityMissing."""
    path = object_path(settings)
    if not path.is_file():
        raise CapabilityMissing(BPF_OBJECTS_MISSING, f"eBPF probes off: no object at {path} (`make ebpf`)")
    pin = Path(settings.pin_path)
    try:
        ensure_bpffs(pin)
    except BpfError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise capability_of(exc) from exc
        raise CapabilityMissing(BPFFS_UNAVAILABLE, f"eBPF probes off: no bpffs for the pins: {exc}") from exc
    try:
        sizes = {
            core.MAP_FLOWS: settings.flow_map_size,
            core.MAP_NEIGHBORS: settings.neighbor_map_size,
            core.MAP_ADMITTED: admitted_map_size,
        }
        return ProbeObject.load(path, sizes, pin, core.MAP_NAMES, tuple(core.PROGRAMS.values()))
    except BpfError as exc:
        raise capability_of(exc) from exc


def _ifaces_present() -> dict[str, int]:
    return {name: index for index, name in socket.if_nameindex()}


def _lowers(batman: str) -> list[str]:
    base = Path("/sys/class/net") / batman
    try:
        return [p.name.removeprefix("lower_") for p in base.iterdir() if p.name.startswith("lower_")]
    except OSError:
        return []


def targets(s: ProbeSettings) -> tuple[dict[str, int], list[str]]:
    """(interface -> ifindex to probe now, wanted interfaces that are absent)."""
    present = _ifaces_present()
    names = core.probe_targets(s.interfaces, s.batman_interface, _lowers(s.batman_interface), set(present))
    wanted = list(s.interfaces) or [s.batman_interface]
    return {name: present[name] for name in names}, [name for name in wanted if name not in present]


class Probes:
    """The loaded programs on their interfaces (blocking calls; the service runs them in threads)."""

    def __init__(self, obj: ProbeObject, settings: ProbeSettings) -> None:
        self.obj, self.settings = obj, settings
        self.where: dict[str, int] = {}  # interface -> ifindex we attached to
        self.lock = threading.Lock()

    def reconcile(self) -> tuple[list[str], list[str], dict[str, str]]:
        """Attach to the interfaces to probe, forget vanished ones; (attached, missing, failed)."""
        wanted, missing = targets(self.settings)
        failed: dict[str, str] = {}
        for name in list(self.where):
            if wanted.get(name) != self.where[name]:  # left the mesh, gone, or recreated
                index = self.where.pop(name)
                for hook in core.PROGRAMS:
                    self.obj.detach(index, hook)  # no-op when the interface and its filters are gone
        for name, index in wanted.items():
            if self.where.get(name) == index and all(self.obj.query(index, h) for h in core.PROGRAMS):
                continue
            try:
                for hook, prog in core.PROGRAMS.items():
                    self.obj.attach(index, hook, prog)
                self.where[name] = index
            except BpfError as exc:
                failed[name] = str(exc).splitlines()[0]
        return sorted(self.where), missing, failed

    def snapshot(self) -> core.Snapshot:
        m = self.obj.maps
        ncpus = self.obj.ncpus
        flows, bad1 = core.decode_entries(
            m[core.MAP_FLOWS].items(), core.decode_flow_key, lambda v: core.decode_flow_value(v, ncpus)
        )
        neigh, bad2 = core.decode_entries(
            m[core.MAP_NEIGHBORS].items(), core.decode_neighbor_key, core.decode_neighbor_value
        )
        stats = {}
        for stat in core.Stat:
            raw = m[core.MAP_STATS].lookup(stat.value.to_bytes(4, "little"))
            stats[stat] = core.decode_percpu_u64(raw, ncpus) if raw else 0
        return core.Snapshot(
            time.monotonic_ns(), flows, neigh, stats, bad1 + bad2, m[core.MAP_FLOWS].shape.max_entries
        )

    def poll(self) -> PollResult:
        t0 = time.perf_counter()
        with self.lock:
            attached, missing, failed = self.reconcile()
            snap = self.snapshot()
        names = {index: name for name, index in self.where.items()}
        for index in {k.ifindex for k in snap.neighbors} | {k.ifindex for k in snap.flows}:
            if index not in names:
                try:
                    names[index] = socket.if_indextoname(index)
                except OSError:
                    names[index] = str(index)
        return PollResult(snap, names, attached, missing, failed, time.perf_counter() - t0)

    def close(self, detach: bool = True) -> None:
        with self.lock:
            if detach:
                present = _ifaces_present()
                for name, index in self.where.items():
                    if present.get(name) == index:
                        for hook in core.PROGRAMS:
                            self.obj.detach(index, hook)
                self.where.clear()
            self.obj.close()


class ProbesService(Subsystem):
    name = "probes"

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        s = settings or ProbeSettings()
        self.last: PollResult | None = None
        self.up = False
        self._probes: Probes | None = None
        self._registered = False
        self._max_labels = 256
        self._top = s.top_flows
        self._wake = asyncio.Event()
        self._running: ProbeSettings | None = None
        self._admitted_size = ADMITTED_MAP_SIZE
        self._map_listeners: list[MapsListener] = []

    # -- API for other subsystems -------------------------------------------------------------

    def neighbors_seen(self) -> list[core.NeighborSeen]:
        """Last-heard times of batman-adv neighbours, from the latest poll (see module doc)."""
        if self.last is None:
            return []
        names = self.last.names
        seen = core.neighbors_seen(self.last.snapshot)
        return [replace(n, interface=names.get(n.ifindex, str(n.ifindex))) for n in seen]

    def last_heard(self, mac: str) -> float | None:
        """CLOCK_MONOTONIC seconds of the last batman-adv frame from ``mac`` on any interface."""
        mac = mac.lower()
        times = [n.last_rx for n in self.neighbors_seen() if n.mac == mac and n.last_rx is not None]
        return max(times, default=None)

    def last_rx(self, ifindex: int, mac: str) -> float | None:
        """CLOCK_MONOTONIC seconds of the last batman-adv frame from ``mac`` on interface
        ``ifindex``, read now (see module doc); None while not loaded, or never heard there."""
        probes = self._probes
        if probes is None:
            return None
        try:
            raw = probes.obj.maps[core.MAP_NEIGHBORS].lookup(core.neighbor_lookup_key(ifindex, mac.lower()))
            return None if raw is None else core.neighbor_last_rx(raw)
        except (BpfError, core.ProbeDecodeError):
            return None

    def share_maps(self, listener: MapsListener) -> None:
        """Call ``listener`` with the maps whenever the object is loaded, and None before they close."""
        self._map_listeners.append(listener)
        if self._probes is not None:
            listener(self._probes.obj.maps)

    async def refresh(self) -> core.Snapshot:
        """Poll now (in a thread) and return the snapshot; EMPTY if the probes are not loaded."""
        if self._probes is None:
            return core.EMPTY
        self.last = await asyncio.to_thread(self._probes.poll)
        return self.last.snapshot

    # -- the subsystem ------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        s = self._running = ctx.settings.probes
        size = self._admitted_size = ctx.settings.guard.admitted_map_size
        self._apply(ctx.settings)
        if not self._registered:
            self._register(ctx)
        # Nothing is loaded (or pinned) until there is an interface to probe.
        while not (found := await asyncio.to_thread(targets, s))[0]:
            why = f"nothing to probe: {', '.join(found[1]) or 'no interface'} absent"
            ctx.health.set(PROBE_INTERFACE_MISSING(why))
            await self._pause(s.poll_interval)
        ctx.health.set(PROBES_LOADING("loading eBPF programs"))
        obj = await asyncio.to_thread(load, s, size)
        probes = Probes(obj, s)
        self._probes = probes
        try:
            if obj.reset_maps:
                ctx.log.warning("probe_maps_reset", maps=obj.reset_maps, reason="pinned map shape changed")
            for listener in self._map_listeners:
                listener(obj.maps)
            self.up = True
            ctx.log.info("probes_loaded", object=str(object_path(s)), pin_path=s.pin_path)
            while True:
                result = await asyncio.to_thread(probes.poll)
                self._report(ctx, result)
                await self._pause(ctx.settings.probes.poll_interval)
        finally:
            self.up = False
            self._probes = None
            for listener in self._map_listeners:
                try:
                    listener(None)
                except Exception as exc:  # the close below must happen whatever a listener does
                    ctx.log.error("probe_maps_listener_failed", reason=f"{type(exc).__name__}: {exc}")
            probes.close(detach=True)  # a few netlink round trips; must finish even when cancelled
            ctx.log.info("probes_detached")

    async def _pause(self, seconds: float) -> None:
        """Sleep until the next poll, or until a reload wants one now."""
        self._wake.clear()
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        # ctx.settings may already be the new settings: compare with what this run started with
        old, new = self._running or ctx.settings.probes, settings.probes
        fixed = ("enabled", "interfaces", "batman_interface", "flow_map_size", "neighbor_map_size",
                 "pin_path", "object_path")  # fmt: skip
        if any(getattr(old, f) != getattr(new, f) for f in fixed):
            return False
        if settings.guard.admitted_map_size != self._admitted_size:
            return False  # the guard's map is sized at load
        self._running = new
        self._apply(settings)
        self._wake.set()
        return True

    def _apply(self, settings: AgentSettings) -> None:
        self._max_labels = settings.metrics.max_label_values
        self._top = min(settings.probes.top_flows, self._max_labels)

    def _report(self, ctx: Context, r: PollResult) -> None:
        first = self.last is None
        self.last = r
        conditions = []
        if r.missing:
            conditions.append(PROBE_INTERFACE_MISSING(f"not (yet) present: {', '.join(r.missing)}"))
        for name, why in sorted(r.failed.items()):
            conditions.append(PROBE_ATTACH_FAILED(f"{name}: {why}"))
        ctx.health.set(*conditions)
        if first or r.failed:
            ctx.log.info("probes_polled", attached=r.attached, missing=r.missing, failed=r.failed)

    # -- admin --------------------------------------------------------------------------------

    def _register(self, ctx: Context) -> None:
        self._registered = True
        ctx.registry.register(_Collector(self))

        async def flows(args: dict[str, Any]) -> list[dict[str, Any]]:
            limit = args.get("limit", self._top or 20)
            if not isinstance(limit, int) or limit < 0:
                raise ProbeCommandError("limit must be a non-negative integer")
            return self.flows_json(limit)

        async def neighbors(_: dict[str, Any]) -> list[dict[str, Any]]:
            return [n.to_json() for n in self.neighbors_seen()]

        for command, handler in {
            "probes.flows": flows,
            "probes.neighbors": neighbors,
        }.items():
            ctx.admin.register(command, handler)

    def flows_json(self, limit: int) -> list[dict[str, Any]]:
        if self.last is None:
            return []
        top, _ = core.top_flows(self.last.snapshot.flows, limit)
        names = self.last.names
        return [
            {
                "interface": names.get(k.ifindex, str(k.ifindex)),
                "direction": k.direction,
                "family": k.family,
                "proto": k.proto_name,
                "src": k.src,
                "dst": k.dst,
                "sport": k.sport,
                "dport": k.dport,
                "packets": v.packets,
                "bytes": v.bytes,
                "payload_bytes": v.payload_bytes,
                "age": (self.last.snapshot.taken_ns - v.last_seen_ns) / 1e9,
            }
            for k, v in top
        ]


class _Collector:
    """Metrics from the latest poll, built at scrape time (no kernel access during a scrape)."""

    def __init__(self, service: ProbesService) -> None:
        self.s = service

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        s = self.s
        up = GaugeMetricFamily("x0tta_probes_up", "1 when the eBPF programs are loaded")
        up.add_metric([], 1.0 if s.up else 0.0)
        yield up
        r = s.last
        if r is None:
            return
        snap, names = r.snapshot, r.names
        att = GaugeMetricFamily(
            "x0tta_probes_attached", "1 per interface with both hooks attached", labels=["interface"]
        )
        for name in r.attached:
            att.add_metric([name], 1.0)
        yield att
        yield GaugeMetricFamily("x0tta_probes_poll_duration_seconds", "time of the last map read", value=r.duration)
        st = snap.stats
        yield CounterMetricFamily(
            "x0tta_probes_guard_dropped", "batman-adv frames dropped: source not admitted",
            value=st.get(core.Stat.GUARD_DROPPED, 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "x0tta_probes_guard_would_drop", "batman-adv frames from non-admitted sources passed (observe)",
            value=st.get(core.Stat.GUARD_WOULD_DROP, 0),
        )  # fmt: skip
        errs = CounterMetricFamily(
            "x0tta_probes_errors", "frames or entries the probes could not count", labels=["kind"]
        )
        for kind, stat in (
            ("truncated", core.Stat.TRUNCATED),
            ("flow_update", core.Stat.FLOW_UPDATE_ERR),
            ("neighbor_update", core.Stat.NEIGH_UPDATE_ERR),
            ("no_config", core.Stat.NO_CONFIG),
            ("ogm_update", core.Stat.OGM_UPDATE_ERR),
        ):
            errs.add_metric([kind], st.get(stat, 0))
        errs.add_metric(["undecodable"], snap.undecodable)
        yield errs
        yield GaugeMetricFamily("x0tta_probes_flows", "entries in the flow map", value=len(snap.flows))
        yield GaugeMetricFamily("x0tta_probes_flow_map_capacity", "size of the flow map", value=snap.flow_capacity)

        overflow = GaugeMetricFamily(
            "x0tta_probes_label_overflow", "map entries left out of labelled metrics (cardinality cap)", labels=["map"]
        )
        neigh, left = core.bounded_neighbors(snap.neighbors, s._max_labels)
        overflow.add_metric(["neighbors"], left)
        labels = ["interface", "mac"]
        fams = {
            f: CounterMetricFamily(
                f"x0tta_probes_neighbor_{f}", f"batman-adv {f.replace('_', ' ')} per neighbour", labels=labels
            )
            for f in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "denied_packets")
        }
        age = GaugeMetricFamily(
            "x0tta_probes_neighbor_last_rx_age_seconds", "since the last frame received", labels=labels
        )
        for key, v in neigh:
            lv = [names.get(key.ifindex, str(key.ifindex)), key.mac]
            for f, fam in fams.items():
                fam.add_metric(lv, getattr(v, f))
            if v.last_rx_ns:
                age.add_metric(lv, (snap.taken_ns - v.last_rx_ns) / 1e9)
        yield from fams.values()
        yield age

        top, left = core.top_flows(snap.flows, s._top)
        overflow.add_metric(["flows"], left)
        yield overflow
        flabels = ["interface", "direction", "proto", "src", "dst", "sport", "dport"]
        fp = CounterMetricFamily("x0tta_probes_flow_packets", "packets of the top flows", labels=flabels)
        fb = CounterMetricFamily("x0tta_probes_flow_bytes", "L2 bytes of the top flows", labels=flabels)
        for k, v in top:
            lv = [names.get(k.ifindex, str(k.ifindex)), k.direction, k.proto_name, k.src, k.dst]
            lv += [str(k.sport), str(k.dport)]
            fp.add_metric(lv, v.packets)
            fb.add_metric(lv, v.bytes)
        yield fp
        yield fb
