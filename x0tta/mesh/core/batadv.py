"""The generic netlink family ``batadv``, declared from include/uapi/linux/batman_adv.h.

Why: batman-adv publishes its whole state (mesh settings, hard interfaces, originators,
neighbours, gateways, translation tables, BLA, DAT, multicast) and takes its settings through
the generic netlink family ``BATADV_NL_NAME "batadv"``; batctl reads it the same way. This module
is the pure half of talking to it: the commands and attributes as the kernel numbers them, typed
records for every dump, encoders for requests and SET commands, and a sans-IO reply collector.

Names follow the kernel's: ``BATADV_ATTR_ORIG_ADDRESS`` is the attribute ``orig_address`` here and
the record field ``Originator.orig_address``; ``BATADV_CMD_GET_ORIGINATORS`` is
``Cmd.GET_ORIGINATORS``. Attribute types follow the kernel's ``batadv_netlink_policy``
(net/batman-adv/netlink.c): MAC addresses are 6 raw bytes, ``DAT_CACHE_IP4ADDRESS`` is a
big-endian IPv4 address (nla_put_in_addr), ``*_ENABLED`` are u8 booleans.

Decoding rules (the promise the fuzz test checks):

* an attribute number this table does not know (a newer kernel) is skipped;
* a known attribute with the wrong length, or a record without an attribute the kernel always
  sends for it, raises :class:`BatadvDecodeError` (a :class:`~x0tta.common.errors.DecodeError`);
* nothing else escapes.

Checked against batman-adv 2022.3 (Linux 6.1 in Debian's user-mode-linux) on 2026-11-26.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from x0tta.mesh.core.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NetlinkDecodeError,
    attr,
    decode_string,
    genl_message,
    parse_error,
    parse_genl,
    split_messages,
)

BATADV_NL_NAME = "batadv"
BATADV_NL_MCAST_GROUP_CONFIG = "config"
BATADV_NL_MCAST_GROUP_TPMETER = "tpmeter"
GENL_VERSION = 1


class BatadvDecodeError(NetlinkDecodeError):
    """A batadv message that does not follow the family's declaration."""


class Cmd(enum.IntEnum):
    """enum batadv_nl_commands."""

    UNSPEC = 0
    GET_MESH = 1  # alias BATADV_CMD_GET_MESH_INFO
    TP_METER = 2
    TP_METER_CANCEL = 3
    GET_ROUTING_ALGOS = 4
    GET_HARDIF = 5  # alias BATADV_CMD_GET_HARDIFS
    GET_TRANSTABLE_LOCAL = 6
    GET_TRANSTABLE_GLOBAL = 7
    GET_ORIGINATORS = 8
    GET_NEIGHBORS = 9
    GET_GATEWAYS = 10
    GET_BLA_CLAIM = 11
    GET_BLA_BACKBONE = 12
    GET_DAT_CACHE = 13
    GET_MCAST_FLAGS = 14
    SET_MESH = 15
    SET_HARDIF = 16
    GET_VLAN = 17
    SET_VLAN = 18


class GwMode(enum.IntEnum):
    """enum batadv_gw_modes."""

    OFF = 0
    CLIENT = 1
    SERVER = 2


class TtClientFlags(enum.IntFlag):
    """enum batadv_tt_client_flags."""

    DEL = 1 << 0
    ROAM = 1 << 1
    WIFI = 1 << 4
    ISOLA = 1 << 5
    NOPURGE = 1 << 8
    NEW = 1 << 9
    PENDING = 1 << 10
    TEMP = 1 << 11


class McastFlagsPriv(enum.IntFlag):
    """enum batadv_mcast_flags_priv."""

    BRIDGED = 1 << 0
    QUERIER_IPV4_EXISTS = 1 << 1
    QUERIER_IPV6_EXISTS = 1 << 2
    QUERIER_IPV4_SHADOWING = 1 << 3
    QUERIER_IPV6_SHADOWING = 1 << 4


class TpMeterReason(enum.IntEnum):
    """enum batadv_tp_meter_reason."""

    COMPLETE = 3
    CANCEL = 4
    DST_UNREACHABLE = 128
    RESEND_LIMIT = 129
    ALREADY_ONGOING = 130
    MEMORY_ERROR = 131
    CANT_SEND = 132
    TOO_MANY = 133


# IFLA_BATADV_* (enum batadv_ifla_attrs): the rtnetlink link-info data of kind "batadv".
IFLA_BATADV_ALGO_NAME = 1

# BATADV_TT_VID / BLA_VID / DAT_CACHE_VID carry this bit when the entry is on a VLAN
# (BATADV_VLAN_HAS_TAG in net/batman-adv/main.h); batctl prints -1 for untagged.
BATADV_VLAN_HAS_TAG = 1 << 15
VLAN_VID_MASK = 0x0FFF


@dataclass(frozen=True)
class AttrSpec:
    number: int
    name: str
    # u8 u16 u32 u64 bool8 flag string mac ipv4 binary, and vid: BATADV_ATTR_VLANID is NLA_U16 in
    # the policy (requests) but the kernel's batadv_netlink_vlan_fill puts it with nla_put_u32.
    kind: str

# enum batadv_nl_attrs, in the kernel's order; the kind is the type in batadv_netlink_policy.
ATTRS: tuple[AttrSpec, ...] = tuple(
    AttrSpec(i, name, kind)
    for i, (name, kind) in enumerate(
        [
            ("unspec", "binary"),
            ("version", "string"),
            ("algo_name", "string"),
            ("mesh_ifindex", "u32"),
            ("mesh_ifname", "string"),
            ("mesh_address", "mac"),
            ("hard_ifindex", "u32"),
            ("hard_ifname", "string"),
            ("hard_address", "mac"),
            ("orig_address", "mac"),
            ("tpmeter_result", "u8"),
            ("tpmeter_test_time", "u32"),
            ("tpmeter_bytes", "u64"),
            ("tpmeter_cookie", "u32"),
            ("pad", "binary"),
            ("active", "flag"),
            ("tt_address", "mac"),
            ("tt_ttvn", "u8"),
            ("tt_last_ttvn", "u8"),
            ("tt_crc32", "u32"),
            ("tt_vid", "u16"),
            ("tt_flags", "u32"),
            ("flag_best", "flag"),
            ("last_seen_msecs", "u32"),
            ("neigh_address", "mac"),
            ("tq", "u8"),
            ("throughput", "u32"),
            ("bandwidth_up", "u32"),
            ("bandwidth_down", "u32"),
            ("router", "mac"),
            ("bla_own", "flag"),
            ("bla_address", "mac"),
            ("bla_vid", "u16"),
            ("bla_backbone", "mac"),
            ("bla_crc", "u16"),
            ("dat_cache_ip4address", "ipv4"),
            ("dat_cache_hwaddress", "mac"),
            ("dat_cache_vid", "u16"),
            ("mcast_flags", "u32"),
            ("mcast_flags_priv", "u32"),
            ("vlanid", "vid"),
            ("aggregated_ogms_enabled", "bool8"),
            ("ap_isolation_enabled", "bool8"),
            ("isolation_mark", "u32"),
            ("isolation_mask", "u32"),
            ("bonding_enabled", "bool8"),
            ("bridge_loop_avoidance_enabled", "bool8"),
            ("distributed_arp_table_enabled", "bool8"),
            ("fragmentation_enabled", "bool8"),
            ("gw_bandwidth_down", "u32"),
            ("gw_bandwidth_up", "u32"),
            ("gw_mode", "u8"),
            ("gw_sel_class", "u32"),
            ("hop_penalty", "u8"),
            ("log_level", "u32"),
            ("multicast_forceflood_enabled", "bool8"),
            ("network_coding_enabled", "bool8"),
            ("orig_interval", "u32"),
            ("elp_interval", "u32"),
            ("throughput_override", "u32"),
            ("multicast_fanout", "u32"),
        ]
    )
)
BATADV_ATTR_MAX = len(ATTRS) - 1
ATTR_BY_NAME: dict[str, AttrSpec] = {a.name: a for a in ATTRS}
# Attributes carried but not worth a record field.
_IGNORED = frozenset({"unspec", "pad"})

_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "bool8": 1, "flag": 0, "mac": 6, "ipv4": 4}


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def decode_value(spec: AttrSpec, payload: bytes) -> Any:
    size = _SIZES.get(spec.kind)
    if size is not None and len(payload) != size:
        raise BatadvDecodeError(f"BATADV_ATTR_{spec.name.upper()}: {len(payload)} bytes, expected {size}")
    kind = spec.kind
    if kind == "vid":
        if len(payload) not in (2, 4):
            raise BatadvDecodeError(f"BATADV_ATTR_VLANID: {len(payload)} bytes, expected 2 or 4")
        return int.from_bytes(payload, "little")
    if kind == "flag":
        return True
    if kind == "bool8":
        return payload[0] != 0
    if kind in ("u8", "u16", "u32", "u64"):
        return int.from_bytes(payload, "little")
    if kind == "mac":
        return _mac(payload)
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(payload))
    if kind == "string":
        return decode_string(payload)
    return payload


def decode_attrs(attrs: tuple[tuple[int, bytes], ...]) -> dict[str, Any]:
    """Typed values by attribute name; unknown numbers (newer kernels) are skipped."""
    out: dict[str, Any] = {}
    for number, payload in attrs:
        if number > BATADV_ATTR_MAX:
            continue
        spec = ATTRS[number]
        if spec.name in _IGNORED:
            continue
        out[spec.name] = decode_value(spec, payload)
    return out


def encode_value(spec: AttrSpec, value: Any) -> bytes:
    kind = spec.kind
    if kind == "flag":
        return attr(spec.number, b"") if value else b""
    if kind == "bool8":
        return attr(spec.number, b"\x01" if value else b"\x00")
    if kind in ("u8", "u16", "u32", "u64", "vid"):
        size = _SIZES.get(kind, 2)
        iv = int(value)
        if not 0 <= iv < (1 << (8 * size)):
            raise ValueError(f"{spec.name}={value} does not fit {kind}")
        return attr(spec.number, iv.to_bytes(size, "little"))
    if kind == "mac":
        raw = bytes(int(x, 16) for x in str(value).split(":"))
        if len(raw) != 6:
            raise ValueError(f"{spec.name}={value!r} is not a MAC address")
        return attr(spec.number, raw)
    if kind == "ipv4":
        return attr(spec.number, ipaddress.IPv4Address(value).packed)
    if kind == "string":
        return attr(spec.number, str(value).encode() + b"\0")
    return attr(spec.number, bytes(value))


def encode_attrs(values: Mapping[str, Any]) -> bytes:
    return b"".join(encode_value(ATTR_BY_NAME[k], v) for k, v in values.items() if v is not None)


# -- records ----------------------------------------------------------------------------------
#
# Field names are attribute names. A field without a default is an attribute the kernel always
# puts in that message (its absence is a decode error); the others are optional (a BATMAN_IV
# node sends TQ, a BATMAN_V node THROUGHPUT; older kernels lack newer settings).


class Record:
    """Base of the typed records: ``from_attrs`` builds one from decoded attributes."""

    @classmethod
    def from_attrs(cls, values: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in values:
                kwargs[f.name] = values[f.name]
            elif f.default is dataclasses.MISSING:
                raise BatadvDecodeError(f"{cls.__name__}: missing BATADV_ATTR_{f.name.upper()}")
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def vid_of(raw: int | None) -> int | None:
    """A raw *_VID attribute as batctl shows it: the VLAN id, or -1 when untagged."""
    if raw is None:
        return None
    return raw & VLAN_VID_MASK if raw & BATADV_VLAN_HAS_TAG else -1


@dataclass(frozen=True)
class MeshInfo(Record):
    """GET_MESH (and the SET_MESH config event): the mesh interface and all its settings."""

    TUNABLES: ClassVar[tuple[str, ...]] = (
        "aggregated_ogms_enabled",
        "ap_isolation_enabled",
        "isolation_mark",
        "isolation_mask",
        "bonding_enabled",
        "bridge_loop_avoidance_enabled",
        "distributed_arp_table_enabled",
        "fragmentation_enabled",
        "gw_bandwidth_down",
        "gw_bandwidth_up",
        "gw_mode",
        "gw_sel_class",
        "hop_penalty",
        "log_level",
        "multicast_forceflood_enabled",
        "network_coding_enabled",
        "orig_interval",
        "multicast_fanout",
    )
    mesh_ifindex: int
    mesh_ifname: str
    mesh_address: str
    version: str | None = None
    algo_name: str | None = None
    hard_ifindex: int | None = None
    hard_ifname: str | None = None
    hard_address: str | None = None
    tt_ttvn: int | None = None
    bla_crc: int | None = None
    mcast_flags: int | None = None
    mcast_flags_priv: int | None = None
    aggregated_ogms_enabled: bool | None = None
    ap_isolation_enabled: bool | None = None
    isolation_mark: int | None = None
    isolation_mask: int | None = None
    bonding_enabled: bool | None = None
    bridge_loop_avoidance_enabled: bool | None = None
    distributed_arp_table_enabled: bool | None = None
    fragmentation_enabled: bool | None = None
    gw_bandwidth_down: int | None = None
    gw_bandwidth_up: int | None = None
    gw_mode: int | None = None
    gw_sel_class: int | None = None
    hop_penalty: int | None = None
    log_level: int | None = None
    multicast_forceflood_enabled: bool | None = None
    network_coding_enabled: bool | None = None
    orig_interval: int | None = None
    multicast_fanout: int | None = None

    @property
    def active(self) -> bool:
        """batman-adv runs on this mesh (it has a primary hard interface)."""
        return self.hard_ifname is not None

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.TUNABLES if getattr(self, k) is not None}


@dataclass(frozen=True)
class RoutingAlgo(Record):
    """GET_ROUTING_ALGOS: one routing algorithm the module offers."""

    algo_name: str


@dataclass(frozen=True)
class HardIf(Record):
    """GET_HARDIF (dump or one; also the SET_HARDIF event): a hard interface of the mesh."""

    TUNABLES: ClassVar[tuple[str, ...]] = ("hop_penalty", "elp_interval", "throughput_override")
    hard_ifindex: int
    hard_ifname: str
    hard_address: str
    mesh_ifindex: int | None = None
    active: bool = False
    hop_penalty: int | None = None
    elp_interval: int | None = None
    throughput_override: int | None = None

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.TUNABLES if getattr(self, k) is not None}


@dataclass(frozen=True)
class Originator(Record):
    """GET_ORIGINATORS: one (originator, next hop) pair; ``flag_best`` marks the route in use."""

    orig_address: str
    neigh_address: str
    hard_ifindex: int
    last_seen_msecs: int
    hard_ifname: str | None = None
    flag_best: bool = False
    tq: int | None = None  # BATMAN_IV, 0..255
    throughput: int | None = None  # BATMAN_V, kbit/s

    @property
    def next_hop(self) -> str:
        return self.neigh_address

    @property
    def link_quality(self) -> int | None:
        return self.tq if self.tq is not None else self.throughput


@dataclass(frozen=True)
class Neighbor(Record):
    """GET_NEIGHBORS: a one-hop neighbour on a hard interface."""

    neigh_address: str
    hard_ifindex: int
    last_seen_msecs: int
    hard_ifname: str | None = None
    throughput: int | None = None  # BATMAN_V only; BATMAN_IV neighbours carry no metric
    tq: int | None = None


@dataclass(frozen=True)
class Gateway(Record):
    """GET_GATEWAYS: a gateway announced in the mesh; ``flag_best`` is the one selected."""

    orig_address: str
    router: str
    hard_ifname: str | None = None
    hard_ifindex: int | None = None
    bandwidth_down: int | None = None  # 100 kbit/s units, as announced
    bandwidth_up: int | None = None
    flag_best: bool = False
    tq: int | None = None
    throughput: int | None = None


@dataclass(frozen=True)
class TransTableLocal(Record):
    """GET_TRANSTABLE_LOCAL: a client reachable through this node."""

    tt_address: str
    tt_vid: int
    tt_crc32: int
    tt_flags: int
    last_seen_msecs: int | None = None  # absent for NOPURGE entries

    @property
    def vid(self) -> int | None:
        return vid_of(self.tt_vid)


@dataclass(frozen=True)
class TransTableGlobal(Record):
    """GET_TRANSTABLE_GLOBAL: a client announced by another originator."""

    tt_address: str
    orig_address: str
    tt_vid: int
    tt_ttvn: int
    tt_crc32: int
    tt_flags: int
    tt_last_ttvn: int | None = None
    flag_best: bool = False

    @property
    def vid(self) -> int | None:
        return vid_of(self.tt_vid)


@dataclass(frozen=True)
class BlaClaim(Record):
    """GET_BLA_CLAIM: a client claimed by a backbone gateway."""

    bla_address: str
    bla_vid: int
    bla_backbone: str
    bla_crc: int
    bla_own: bool = False


@dataclass(frozen=True)
class BlaBackbone(Record):
    """GET_BLA_BACKBONE: a backbone gateway on the shared LAN."""

    bla_backbone: str
    bla_vid: int
    bla_crc: int
    last_seen_msecs: int
    bla_own: bool = False


@dataclass(frozen=True)
class DatCacheEntry(Record):
    """GET_DAT_CACHE: an IPv4 -> MAC entry of the distributed ARP table."""

    dat_cache_ip4address: str
    dat_cache_hwaddress: str
    dat_cache_vid: int
    last_seen_msecs: int


@dataclass(frozen=True)
class McastFlags(Record):
    """GET_MCAST_FLAGS: the multicast flags an originator announced (absent: none seen yet)."""

    orig_address: str
    mcast_flags: int | None = None


@dataclass(frozen=True)
class Vlan(Record):
    """GET_VLAN (and the SET_VLAN event): per-VLAN settings of the mesh interface."""

    TUNABLES: ClassVar[tuple[str, ...]] = ("ap_isolation_enabled",)
    mesh_ifindex: int
    vlanid: int
    ap_isolation_enabled: bool | None = None


@dataclass(frozen=True)
class TpMeter(Record):
    """TP_METER: the reply to a start (cookie) and the tpmeter event with the result."""

    tpmeter_cookie: int | None = None
    orig_address: str | None = None
    tpmeter_result: int | None = None
    tpmeter_test_time: int | None = None  # ms
    tpmeter_bytes: int | None = None

    @property
    def finished(self) -> bool:
        return self.tpmeter_result is not None

    @property
    def throughput_kbit(self) -> float | None:
        """Acked bytes over the test time, kbit/s (batctl prints the same in its own units)."""
        if not self.tpmeter_bytes or not self.tpmeter_test_time:
            return None
        return self.tpmeter_bytes * 8 / self.tpmeter_test_time


RECORD_OF: dict[int, type[Record]] = {
    Cmd.GET_MESH: MeshInfo,
    Cmd.SET_MESH: MeshInfo,
    Cmd.TP_METER: TpMeter,
    Cmd.TP_METER_CANCEL: TpMeter,
    Cmd.GET_ROUTING_ALGOS: RoutingAlgo,
    Cmd.GET_HARDIF: HardIf,
    Cmd.SET_HARDIF: HardIf,
    Cmd.GET_TRANSTABLE_LOCAL: TransTableLocal,
    Cmd.GET_TRANSTABLE_GLOBAL: TransTableGlobal,
    Cmd.GET_ORIGINATORS: Originator,
    Cmd.GET_NEIGHBORS: Neighbor,
    Cmd.GET_GATEWAYS: Gateway,
    Cmd.GET_BLA_CLAIM: BlaClaim,
    Cmd.GET_BLA_BACKBONE: BlaBackbone,
    Cmd.GET_DAT_CACHE: DatCacheEntry,
    Cmd.GET_MCAST_FLAGS: McastFlags,
    Cmd.GET_VLAN: Vlan,
    Cmd.SET_VLAN: Vlan,
}

# What each SET command may carry besides the selectors (kernel: batadv_netlink_set_*).
SETTABLE: dict[Cmd, tuple[str, ...]] = {
    Cmd.SET_MESH: MeshInfo.TUNABLES,
    Cmd.SET_HARDIF: HardIf.TUNABLES,
    Cmd.SET_VLAN: Vlan.TUNABLES,
}


def decode_record(cmd: int, attrs: tuple[tuple[int, bytes], ...]) -> Record | None:
    """The record of one batadv message; None for a command this version does not know."""
    cls = RECORD_OF.get(cmd)
    if cls is None:
        return None
    return cls.from_attrs(decode_attrs(attrs))


def decode_message(data: bytes, family: int) -> list[Record]:
    """Every batadv record in a datagram (other message types are ignored)."""
    out: list[Record] = []
    for msg in split_messages(data):
        if msg.type == family:
            gm = parse_genl(msg)
            rec = decode_record(gm.cmd, gm.attrs)
            if rec is not None:
                out.append(rec)
    return out


# -- requests ---------------------------------------------------------------------------------


def encode_dump(family: int, cmd: Cmd, mesh_ifindex: int, seq: int, **selectors: Any) -> bytes:
    """A dump request (NLM_F_DUMP) of one of the GET_* tables of mesh ``mesh_ifindex``."""
    body = encode_attrs({"mesh_ifindex": mesh_ifindex, **selectors})
    return genl_message(family, cmd, body, flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq, version=GENL_VERSION)


def encode_get(family: int, cmd: Cmd, seq: int, **selectors: Any) -> bytes:
    """A single GET (GET_MESH, GET_HARDIF with hard_ifindex, GET_VLAN with vlanid)."""
    return genl_message(family, cmd, encode_attrs(selectors), flags=NLM_F_REQUEST, seq=seq, version=GENL_VERSION)


def encode_routing_algos(family: int, seq: int) -> bytes:
    return genl_message(
        family, Cmd.GET_ROUTING_ALGOS, b"", flags=NLM_F_REQUEST | NLM_F_DUMP, seq=seq, version=GENL_VERSION
    )


def _encode_set(family: int, cmd: Cmd, seq: int, selectors: dict[str, Any], values: Mapping[str, Any]) -> bytes:
    allowed = SETTABLE[cmd]
    bad = sorted(set(values) - set(allowed))
    if bad:
        raise ValueError(f"{cmd.name} cannot set {', '.join(bad)}; settable: {', '.join(allowed)}")
    body = encode_attrs({**selectors, **values})
    return genl_message(family, cmd, body, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq, version=GENL_VERSION)


def encode_set_mesh(family: int, mesh_ifindex: int, seq: int, values: Mapping[str, Any]) -> bytes:
    return _encode_set(family, Cmd.SET_MESH, seq, {"mesh_ifindex": mesh_ifindex}, values)


def encode_set_hardif(
    family: int, mesh_ifindex: int, hard_ifindex: int, seq: int, values: Mapping[str, Any]
) -> bytes:
    return _encode_set(
        family, Cmd.SET_HARDIF, seq, {"mesh_ifindex": mesh_ifindex, "hard_ifindex": hard_ifindex}, values
    )


def encode_set_vlan(family: int, mesh_ifindex: int, vlanid: int, seq: int, values: Mapping[str, Any]) -> bytes:
    return _encode_set(family, Cmd.SET_VLAN, seq, {"mesh_ifindex": mesh_ifindex, "vlanid": vlanid}, values)


def encode_tp_meter(family: int, mesh_ifindex: int, orig_address: str, test_time_ms: int, seq: int) -> bytes:
    body = encode_attrs(
        {"mesh_ifindex": mesh_ifindex, "orig_address": orig_address, "tpmeter_test_time": test_time_ms}
    )
    return genl_message(family, Cmd.TP_METER, body, flags=NLM_F_REQUEST, seq=seq, version=GENL_VERSION)


def encode_tp_meter_cancel(family: int, mesh_ifindex: int, orig_address: str, seq: int) -> bytes:
    body = encode_attrs({"mesh_ifindex": mesh_ifindex, "orig_address": orig_address})
    return genl_message(family, Cmd.TP_METER_CANCEL, body, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq)


# -- replies ----------------------------------------------------------------------------------


class Reply:
    """Collects the reply to one request from the datagrams that arrive (sans-IO).

    ``feed(datagram)`` returns True once the reply is complete: NLMSG_DONE for a dump, the ACK
    (an NLMSG_ERROR with error 0) for a request with NLM_F_ACK, or the single answer of a plain
    GET. A negative errno ends it with ``errno`` set. Messages of other sequence numbers (late
    replies to an abandoned request) are ignored.
    """

    def __init__(self, family: int, seq: int, *, dump: bool, ack: bool = False) -> None:
        self.family = family
        self.seq = seq
        self.dump = dump
        self.ack = ack
        self.records: list[Record] = []
        self.errno = 0
        self.interrupted = False  # NLM_F_DUMP_INTR: the table changed during the dump

    def feed(self, data: bytes) -> bool:
        done = False
        for msg in split_messages(data):
            if msg.seq != self.seq or msg.type == NLMSG_NOOP:
                continue
            if msg.flags & NLM_F_DUMP_INTR:
                self.interrupted = True
            if msg.type == NLMSG_ERROR:
                err = parse_error(msg)
                self.errno = -err.error
                done = True
            elif msg.type == NLMSG_DONE:
                if len(msg.payload) >= 4:
                    (code,) = struct.unpack_from("=i", msg.payload)
                    if code < 0:
                        self.errno = -code
                done = True
            elif msg.type == self.family:
                gm = parse_genl(msg)
                rec = decode_record(gm.cmd, gm.attrs)
                if rec is not None:
                    self.records.append(rec)
                if not self.dump and not self.ack:
                    done = True
        return done
