"""rtnetlink link notifications (RTM_NEWLINK, RTM_DELLINK) decoded into link states (sans-IO).

Why: the heal loop needs each hard interface's carrier and mesh membership every cycle. Dumping
every link of the node through pyroute2 each cycle was the largest single cost of an idle agent
in the lab ring; the kernel already sends a full RTM_NEWLINK for every change on the group the
loop watches, so the loop keeps a table from those and dumps only when it may have missed one.

Only what the loop reads is decoded: ``struct ifinfomsg`` (index, flags) and the attributes
IFLA_IFNAME and IFLA_MASTER. Anything malformed raises :class:`LinkMessageError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from x0tta.mesh.core.netlink import NLMSG_OVERRUN, NetlinkDecodeError, parse_attrs, split_messages

RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFF_UP = 0x1
IFF_RUNNING = 0x40
_IFINFO = struct.Struct("=BxHiII")


class LinkMessageError(NetlinkDecodeError):
    """A netlink datagram that is not a well-formed stream of link messages."""


@dataclass(frozen=True, slots=True)
class LinkState:
    name: str
    index: int
    up: bool  # IFF_UP
    running: bool  # IFF_RUNNING: carrier
    master: int | None


@dataclass(frozen=True, slots=True)
class LinkChange:
    """One link message: ``state`` is the link now, or gone (``removed``)."""

    state: LinkState
    removed: bool = False


def _link(body: bytes) -> LinkState:
    if len(body) < _IFINFO.size:
        raise LinkMessageError(f"ifinfomsg too short ({len(body)} bytes)")
    _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
    name: str | None = None
    master: int | None = None
    for kind, value in parse_attrs(body[_IFINFO.size:]):
        if kind == IFLA_IFNAME:
            try:
                name = value.split(b"\0", 1)[0].decode()
            except UnicodeDecodeError:
                raise LinkMessageError("interface name is not UTF-8") from None
        elif kind == IFLA_MASTER and len(value) >= 4:
            master = struct.unpack_from("=I", value)[0] or None
    if not name:
        raise LinkMessageError(f"link {index} without a name")
    return LinkState(name, index, bool(flags & IFF_UP), bool(flags & IFF_RUNNING), master)


def decode(data: bytes) -> list[LinkChange]:
    """Every link message in one netlink datagram, in order; other message types are skipped.
    Raises :class:`~x0tta.mesh.core.netlink.NetlinkDecodeError` (or this module's subclass)."""
    out: list[LinkChange] = []
    for m in split_messages(data):
        if m.type in (RTM_NEWLINK, RTM_DELLINK):
            out.append(LinkChange(_link(m.payload), removed=m.type == RTM_DELLINK))
        elif m.type == NLMSG_OVERRUN:
            raise LinkMessageError("netlink overrun: messages were lost")
    return out


def apply(table: dict[str, LinkState], changes: list[LinkChange]) -> dict[str, LinkState]:
    """The link table after ``changes`` (a renamed link is found by its index)."""
    out = dict(table)
    for c in changes:
        for name in [n for n, s in out.items() if s.index == c.state.index]:
            del out[name]
        if not c.removed:
            out[c.state.name] = c.state
    return out
