"""Decoding the probes' map entries, and choosing what to export. Pure: no I/O, no clock.

The eBPF programs (``ebpf/x0tta_probes.bpf.c``) keep their counters in maps whose keys and values
are C structs; this module mirrors those layouts (change both together) and turns raw bytes from
the kernel into typed records. Every decoder either returns a record or raises
:class:`ProbeDecodeError` (a :class:`~x0tta.common.errors.DecodeError`), whatever the bytes: the fuzz
tests hold it to that.

Layouts (little-endian host order unless said otherwise; x0tta runs on little-endian routers)::

    struct flow_key   { u32 ifindex; u8 direction, family, proto, pad;
                        be16 sport, dport; u8 saddr[16], daddr[16]; }            44 bytes
    struct flow_value { u64 packets, bytes, payload_bytes, first_seen_ns, last_seen_ns; } 40
    struct neigh_key  { u32 ifindex; u8 mac[6]; u8 pad[2]; }                      12
    struct neigh_value{ u64 rx_packets, rx_bytes, tx_packets, tx_bytes, denied_packets,
                        first_seen_ns, last_rx_ns, last_tx_ns; }                   64
    stats: per-CPU u64 counters, one slot per possible CPU, summed here.
    config, ogms: the guard's (x0tta/guard/enforce.py writes the mode and the OGM window into
          config; x0tta/guard/core/ogm.py decodes ogms); the probes only load and pin them.

Times are ``bpf_ktime_get_ns()``: CLOCK_MONOTONIC nanoseconds, the clock of ``time.monotonic()``.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from x0tta.common.errors import DecodeError

FLOW_KEY = struct.Struct("<IBBBBHH16s16s")  # ports are big-endian, fixed below
FLOW_VALUE = struct.Struct("<5Q")
NEIGH_KEY = struct.Struct("<I6s2x")
NEIGH_VALUE = struct.Struct("<8Q")
MAC_KEY_SIZE = 6
ADMITTED_VALUE = struct.Struct("<I")
U64 = struct.Struct("<Q")

# Map names in the object, and which of them the loader sizes from the config.
MAP_FLOWS = "flows"
MAP_NEIGHBORS = "neighbors"
MAP_ADMITTED = "admitted"
MAP_CONFIG = "config"
MAP_STATS = "stats"
MAP_OGMS = "ogms"
MAP_NAMES = (MAP_FLOWS, MAP_NEIGHBORS, MAP_ADMITTED, MAP_CONFIG, MAP_STATS, MAP_OGMS)
PROGRAMS = {"ingress": "x0tta_ingress", "egress": "x0tta_egress"}

ORIGIN_STATIC = 1
ORIGIN_DYNAMIC = 2

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}


class Stat(enum.IntEnum):
    """Slots of the ``stats`` map (``enum x0tta_stat`` in the C source)."""

    GUARD_DROPPED = 0
    GUARD_WOULD_DROP = 1
    TRUNCATED = 2
    FLOW_UPDATE_ERR = 3
    NEIGH_UPDATE_ERR = 4
    NO_CONFIG = 5
    OGM_UPDATE_ERR = 6


class ProbeDecodeError(DecodeError):
    """A map entry that does not have the layout of the programs' structs."""


def _check_len(what: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise ProbeDecodeError(f"{what}: {len(data)} bytes, expected {size}")


def format_mac(raw: bytes) -> str:
    return raw.hex(":")


@dataclass(frozen=True, order=True)
class FlowKey:
    ifindex: int
    direction: str  # "ingress" or "egress"
    family: int  # 4 or 6
    proto: int
    src: str
    dst: str
    sport: int
    dport: int

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto, str(self.proto))


@dataclass(frozen=True)
class FlowStats:
    packets: int
    bytes: int
    payload_bytes: int
    first_seen_ns: int
    last_seen_ns: int


@dataclass(frozen=True, order=True)
class NeighborKey:
    ifindex: int
    mac: str


@dataclass(frozen=True)
class NeighborStats:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    denied_packets: int
    first_seen_ns: int
    last_rx_ns: int  # 0: never received from
    last_tx_ns: int


def _direction(code: int) -> str:
    if code == 0:
        return "ingress"
    if code == 1:
        return "egress"
    raise ProbeDecodeError(f"flow key: direction {code} is neither ingress (0) nor egress (1)")


def decode_flow_key(data: bytes) -> FlowKey:
    _check_len("flow key", data, FLOW_KEY.size)
    ifindex, direction, family, proto, _pad, _s, _d, saddr, daddr = FLOW_KEY.unpack(data)
    sport, dport = struct.unpack_from(">HH", data, 8)
    if family == 4:
        src, dst = str(ipaddress.IPv4Address(saddr[:4])), str(ipaddress.IPv4Address(daddr[:4]))
    elif family == 6:
        src, dst = str(ipaddress.IPv6Address(saddr)), str(ipaddress.IPv6Address(daddr))
    else:
        raise ProbeDecodeError(f"flow key: address family {family} is neither 4 nor 6")
    return FlowKey(ifindex, _direction(direction), family, proto, src, dst, sport, dport)


def encode_flow_key(key: FlowKey) -> bytes:
    """The inverse of :func:`decode_flow_key` (for tests and for deleting entries)."""
    addr = ipaddress.ip_address
    src, dst = addr(key.src).packed.ljust(16, b"\0"), addr(key.dst).packed.ljust(16, b"\0")
    direction = 0 if key.direction == "ingress" else 1
    raw = bytearray(FLOW_KEY.pack(key.ifindex, direction, key.family, key.proto, 0, 0, 0, src, dst))
    struct.pack_into(">HH", raw, 8, key.sport, key.dport)
    return bytes(raw)


def decode_flow_value(data: bytes, ncpus: int = 1) -> FlowStats:
    """A flow's counters, summed over CPUs: ``flows`` is a per-CPU map (each CPU counts into its
    own copy, without atomics), so the kernel hands back one value per possible CPU. First seen is
    the earliest of the CPUs that saw the flow, last seen the latest."""
    _check_len("flow value", data, FLOW_VALUE.size * ncpus)
    packets = nbytes = payload = last = 0
    first = None
    for p, b, pl, f, ls in FLOW_VALUE.iter_unpack(data):
        packets, nbytes, payload, last = packets + p, nbytes + b, payload + pl, max(last, ls)
        if p and (first is None or f < first):
            first = f
    return FlowStats(packets, nbytes, payload, first or 0, last)


def decode_neighbor_key(data: bytes) -> NeighborKey:
    _check_len("neighbour key", data, NEIGH_KEY.size)
    ifindex, mac = NEIGH_KEY.unpack(data)
    return NeighborKey(ifindex, format_mac(mac))


def encode_neighbor_key(key: NeighborKey) -> bytes:
    return NEIGH_KEY.pack(key.ifindex, bytes.fromhex(key.mac.replace(":", "")))


def decode_neighbor_value(data: bytes) -> NeighborStats:
    _check_len("neighbour value", data, NEIGH_VALUE.size)
    return NeighborStats(*NEIGH_VALUE.unpack(data))


def neighbor_lookup_key(ifindex: int, mac: str) -> bytes:
    """The ``neighbors`` key of (interface index, MAC as ``aa:bb:cc:dd:ee:ff``), for a single
    lookup; :class:`ProbeDecodeError` when either is not what the struct holds."""
    try:
        raw = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        raise ProbeDecodeError(f"neighbour key: {mac!r} is not a MAC address") from None
    if len(raw) != 6 or not 0 <= ifindex <= 0xFFFFFFFF:
        raise ProbeDecodeError(f"neighbour key: ({ifindex}, {mac!r}) is not an interface index and a MAC")
    return NEIGH_KEY.pack(ifindex, raw)


def neighbor_last_rx(data: bytes) -> float | None:
    """From one ``neighbors`` value: when the last batman-adv frame from that MAC arrived, in
    CLOCK_MONOTONIC seconds (``time.monotonic()``); None if none ever did (an entry made by our
    own frames to it)."""
    ns = decode_neighbor_value(data).last_rx_ns
    return ns / 1e9 if ns else None


def decode_admitted(key: bytes, value: bytes) -> tuple[bytes, int]:
    """An ``admitted`` entry: (MAC, origin)."""
    _check_len("admitted key", key, MAC_KEY_SIZE)
    _check_len("admitted value", value, ADMITTED_VALUE.size)
    (origin,) = ADMITTED_VALUE.unpack(value)
    return bytes(key), origin


def decode_percpu_u64(data: bytes, ncpus: int) -> int:
    """Sum of one per-CPU u64 slot (the kernel hands back one 8-byte value per possible CPU)."""
    _check_len("per-CPU counter", data, 8 * ncpus)
    return sum(v for (v,) in U64.iter_unpack(data))


def decode_entries(
    entries: Iterable[tuple[bytes, bytes]], decode_key: object, decode_value: object
) -> tuple[dict, int]:
    """Decode a map dump; entries that do not decode are counted, not fatal."""
    out: dict = {}
    bad = 0
    for k, v in entries:
        try:
            out[decode_key(k)] = decode_value(v)  # type: ignore[operator]
        except ProbeDecodeError:
            bad += 1
    return out, bad


@dataclass(frozen=True)
class Snapshot:
    """One read of all the maps, decoded; ``taken_ns`` is CLOCK_MONOTONIC like the entries."""

    taken_ns: int
    flows: Mapping[FlowKey, FlowStats]
    neighbors: Mapping[NeighborKey, NeighborStats]
    stats: Mapping[Stat, int]
    undecodable: int = 0
    flow_capacity: int = 0


EMPTY = Snapshot(0, {}, {}, {})


def top_flows(flows: Mapping[FlowKey, FlowStats], n: int) -> tuple[list[tuple[FlowKey, FlowStats]], int]:
    """The ``n`` flows with most bytes (ties broken by key, so the choice is stable), and how many
    were left out."""
    ranked = sorted(flows.items(), key=lambda kv: (-kv[1].bytes, kv[0]))
    return ranked[: max(n, 0)], max(len(ranked) - max(n, 0), 0)


def bounded_neighbors(
    neighbors: Mapping[NeighborKey, NeighborStats], cap: int
) -> tuple[list[tuple[NeighborKey, NeighborStats]], int]:
    """At most ``cap`` neighbours, the most recently heard first, and how many were left out."""
    ranked = sorted(neighbors.items(), key=lambda kv: (-max(kv[1].last_rx_ns, kv[1].last_tx_ns), kv[0]))
    return ranked[: max(cap, 0)], max(len(ranked) - max(cap, 0), 0)


@dataclass(frozen=True)
class NeighborSeen:
    """What the MAPE-K monitor needs about one neighbour: when it was last heard on a link."""

    ifindex: int
    mac: str
    last_rx: float | None  # CLOCK_MONOTONIC seconds (compare with time.monotonic()); None: never
    age: float | None  # seconds between last_rx and the snapshot; None: never heard
    rx_packets: int
    denied_packets: int
    interface: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "interface": self.interface or str(self.ifindex),
            "mac": self.mac,
            "last_rx": self.last_rx,
            "age": self.age,
            "rx_packets": self.rx_packets,
            "denied_packets": self.denied_packets,
        }


def neighbors_seen(snapshot: Snapshot) -> list[NeighborSeen]:
    """Per (interface, MAC) last-heard times from a snapshot; broadcast/multicast MACs (only ever
    destinations of our own frames) are left out."""
    out = []
    for key, st in sorted(snapshot.neighbors.items()):
        if int(key.mac[:2], 16) & 1:
            continue
        last = st.last_rx_ns / 1e9 if st.last_rx_ns else None
        age = (snapshot.taken_ns - st.last_rx_ns) / 1e9 if st.last_rx_ns else None
        out.append(NeighborSeen(key.ifindex, key.mac, last, age, st.rx_packets, st.denied_packets))
    return out


BPF_FS = "bpf"


def _unescape_mount(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_fstype(mounts: str, path: str) -> str | None:
    """The file system type that ``path`` lives on, from the text of ``/proc/self/mounts``."""
    best, fstype = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape_mount(parts[1]).rstrip("/") or "/"
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best):
            best, fstype = point, parts[2]
    return fstype


def probe_targets(configured: tuple[str, ...], batman: str, lowers: list[str], present: set[str]) -> list[str]:
    """Interfaces to probe: the configured ones, or the batman-adv interface and its hard
    interfaces; only those present now (the rest are attached when they appear)."""
    wanted = list(configured) if configured else ([batman, *sorted(lowers)] if batman in present else [])
    return [name for name in dict.fromkeys(wanted) if name in present]
