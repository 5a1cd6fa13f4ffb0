"""Netlink and generic netlink framing, without a socket.

Why: the agent reads batman-adv's tables from the kernel as netlink messages; this module turns
bytes into messages and messages into bytes, and nothing else (no socket, no clock), so it can be
tested with captured kernel replies and fuzzed.

Layout (include/uapi/linux/netlink.h, genetlink.h), host byte order throughout::

    struct nlmsghdr  { __u32 nlmsg_len; __u16 nlmsg_type; __u16 nlmsg_flags;
                       __u32 nlmsg_seq; __u32 nlmsg_pid; };                      /* 16 bytes */
    struct genlmsghdr { __u8 cmd; __u8 version; __u16 reserved; };              /* 4 bytes */
    struct nlattr    { __u16 nla_len; __u16 nla_type; };                         /* 4 bytes */

"Messages are aligned to NLMSG_ALIGNTO (4)"; each attribute is padded to NLA_ALIGNTO (4), and
``nla_len`` counts the header and the payload but not the padding. The top two bits of
``nla_type`` are NLA_F_NESTED and NLA_F_NET_BYTEORDER; the attribute number is the rest.

Promise (h11's): every input either decodes or raises :class:`NetlinkDecodeError`, a
:class:`~x0tta.common.errors.DecodeError`; the fuzz tests hold the decoders to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from x0tta.common.errors import DecodeError

# include/uapi/linux/netlink.h
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

# include/uapi/linux/genetlink.h
GENL_ID_CTRL = 0x10
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2

_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")
NLMSG_HDRLEN = _NLMSGHDR.size
GENL_HDRLEN = _GENLHDR.size
NLA_HDRLEN = _NLATTR.size


class NetlinkDecodeError(DecodeError):
    """Bytes that are not well-formed netlink (truncated header, length beyond the buffer, ...)."""


def align(n: int) -> int:
    """NLMSG_ALIGN / NLA_ALIGN: round up to 4."""
    return (n + 3) & ~3


@dataclass(frozen=True)
class Message:
    """One netlink message: header fields and the payload after the 16-byte header."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


@dataclass(frozen=True)
class GenlMessage:
    """A generic netlink message: its family id (the nlmsg type), command, version and attributes."""

    family: int
    cmd: int
    version: int
    attrs: tuple[tuple[int, bytes], ...]
    flags: int = 0
    seq: int = 0


@dataclass(frozen=True)
class NetlinkError:
    """An NLMSG_ERROR: ``error`` is 0 for an ACK, else a negative errno."""

    error: int
    seq: int


def split_messages(data: bytes) -> list[Message]:
    """All messages in a datagram, in order."""
    out: list[Message] = []
    off = 0
    end = len(data)
    while off < end:
        if end - off < NLMSG_HDRLEN:
            raise NetlinkDecodeError(f"truncated nlmsghdr: {end - off} bytes at offset {off}")
        length, mtype, flags, seq, pid = _NLMSGHDR.unpack_from(data, off)
        if length < NLMSG_HDRLEN or off + length > end:
            raise NetlinkDecodeError(f"nlmsg_len {length} out of bounds at offset {off} (buffer {end})")
        out.append(Message(mtype, flags, seq, pid, bytes(data[off + NLMSG_HDRLEN : off + length])))
        off += align(length)
    return out


def parse_attrs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """A run of attributes as ``(type, payload)`` pairs; the type has its flag bits removed."""
    out: list[tuple[int, bytes]] = []
    off = 0
    end = len(data)
    while off < end:
        if end - off < NLA_HDRLEN:
            # The kernel's nla_for_each_attr stops on a remainder shorter than a header; a
            # remainder here is junk we refuse rather than guess about.
            raise NetlinkDecodeError(f"truncated nlattr header: {end - off} bytes at offset {off}")
        length, atype = _NLATTR.unpack_from(data, off)
        if length < NLA_HDRLEN or off + length > end:
            raise NetlinkDecodeError(f"nla_len {length} out of bounds at offset {off} (buffer {end})")
        out.append((atype & NLA_TYPE_MASK, bytes(data[off + NLA_HDRLEN : off + length])))
        off += align(length)
    return tuple(out)


def parse_genl(msg: Message) -> GenlMessage:
    if len(msg.payload) < GENL_HDRLEN:
        raise NetlinkDecodeError(f"truncated genlmsghdr: {len(msg.payload)} bytes")
    cmd, version, _reserved = _GENLHDR.unpack_from(msg.payload)
    return GenlMessage(msg.type, cmd, version, parse_attrs(msg.payload[GENL_HDRLEN:]), msg.flags, msg.seq)


def parse_error(msg: Message) -> NetlinkError:
    """NLMSG_ERROR payload: ``int error`` then the offending request's header."""
    if len(msg.payload) < 4:
        raise NetlinkDecodeError("truncated nlmsgerr")
    (error,) = struct.unpack_from("=i", msg.payload)
    return NetlinkError(error, msg.seq)


# -- encoding ---------------------------------------------------------------------------------


def attr(atype: int, payload: bytes) -> bytes:
    length = NLA_HDRLEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"attribute {atype} too long ({length} bytes)")
    return _NLATTR.pack(length, atype) + payload + b"\0" * (align(length) - length)


def nested(atype: int, attrs: bytes) -> bytes:
    return attr(atype | NLA_F_NESTED, attrs)


def message(mtype: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    length = NLMSG_HDRLEN + len(payload)
    return _NLMSGHDR.pack(length, mtype, flags, seq, pid) + payload + b"\0" * (align(length) - length)


def genl_message(family: int, cmd: int, attrs: bytes, *, flags: int, seq: int, version: int = 1) -> bytes:
    return message(family, flags, seq, _GENLHDR.pack(cmd, version, 0) + attrs)


# -- the controller (nlctrl) ------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A resolved generic netlink family: its id and multicast groups by name."""

    name: str
    id: int
    version: int
    max_attr: int
    mcast_groups: dict[str, int]


def encode_get_family(name: str, seq: int) -> bytes:
    return genl_message(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"),
        flags=NLM_F_REQUEST,
        seq=seq,
    )


def _u(payload: bytes, size: int, what: str) -> int:
    if len(payload) < size:
        raise NetlinkDecodeError(f"{what}: {len(payload)} bytes, need {size}")
    return int.from_bytes(payload[:size], "little")


def decode_family(msg: GenlMessage) -> Family:
    """CTRL_CMD_NEWFAMILY reply -> :class:`Family`."""
    name, fid, version, max_attr = "", None, 0, 0
    groups: dict[str, int] = {}
    for atype, payload in msg.attrs:
        if atype == CTRL_ATTR_FAMILY_ID:
            fid = _u(payload, 2, "CTRL_ATTR_FAMILY_ID")
        elif atype == CTRL_ATTR_FAMILY_NAME:
            name = decode_string(payload)
        elif atype == CTRL_ATTR_VERSION:
            version = _u(payload, 4, "CTRL_ATTR_VERSION")
        elif atype == CTRL_ATTR_MAXATTR:
            max_attr = _u(payload, 4, "CTRL_ATTR_MAXATTR")
        elif atype == CTRL_ATTR_MCAST_GROUPS:
            for _idx, group in parse_attrs(payload):
                gname, gid = None, None
                for gtype, gpayload in parse_attrs(group):
                    if gtype == CTRL_ATTR_MCAST_GRP_NAME:
                        gname = decode_string(gpayload)
                    elif gtype == CTRL_ATTR_MCAST_GRP_ID:
                        gid = _u(gpayload, 4, "CTRL_ATTR_MCAST_GRP_ID")
                if gname is not None and gid is not None:
                    groups[gname] = gid
    if fid is None:
        raise NetlinkDecodeError("family reply without CTRL_ATTR_FAMILY_ID")
    return Family(name, fid, version, max_attr, groups)


def decode_string(payload: bytes) -> str:
    """NLA_STRING / NLA_NUL_STRING: up to the first NUL; bytes that are not UTF-8 are escaped."""
    return payload.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
