"""A fake kernel for the ``batadv`` generic netlink family: replies captured from a real batman-adv.

Why: code above the socket (``BatadvSocket``, ``MeshClient``, the mesh and heal services) should
be tested against the bytes a kernel really sends, not against records a fake made up. The golden
fixtures in ``tests/unit/mesh/golden/`` are raw datagrams of real replies (batman-adv 2022.3 in
UML; see that directory's test for how they were captured). :class:`GoldenKernel` stands where the
kernel's socket stands: it reads each request it is sent, answers nlctrl's family request with the
captured family, a ``GET_*`` with the captured reply of that table (its sequence numbers set to
the request's), a ``SET_*`` with an ACK (and remembers the attributes), anything else with
``EOPNOTSUPP``; ``recv`` with nothing queued times out like the real socket. The codec, the
sequence-number matching and the reply assembly all run as they do against the kernel.

    sock = golden_socket()            # a BatadvSocket wired to a GoldenKernel
    client = MeshClient(sock=sock)    # or any code that takes a BatadvSocket
"""

from __future__ import annotations

import errno
import json
import struct
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from x0tta.mesh.core import batadv
from x0tta.mesh.core.batadv import Cmd, Record, Reply
from x0tta.mesh.core.netlink import (
    CTRL_ATTR_FAMILY_ID,
    CTRL_ATTR_FAMILY_NAME,
    CTRL_ATTR_MCAST_GROUPS,
    CTRL_CMD_NEWFAMILY,
    GENL_ID_CTRL,
    NLMSG_ERROR,
    align,
    attr,
    genl_message,
    message,
    nested,
    parse_genl,
    split_messages,
)
from x0tta.mesh.genl import BatadvSocket

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "mesh" / "golden"
NODE = "x0m1_iv"  # a BATMAN_IV node of the captured lab, with a VLAN and a second mesh interface
CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_MCAST_GRP_ID = 1, 2

# The captured table answering each GET command.
TABLE_OF = {
    Cmd.GET_MESH: "mesh",
    Cmd.GET_ROUTING_ALGOS: "routing_algos",
    Cmd.GET_HARDIF: "hardifs",
    Cmd.GET_TRANSTABLE_LOCAL: "translocal",
    Cmd.GET_TRANSTABLE_GLOBAL: "transglobal",
    Cmd.GET_ORIGINATORS: "originators",
    Cmd.GET_NEIGHBORS: "neighbors",
    Cmd.GET_GATEWAYS: "gateways",
    Cmd.GET_BLA_CLAIM: "bla_claim",
    Cmd.GET_BLA_BACKBONE: "bla_backbone",
    Cmd.GET_DAT_CACHE: "dat_cache",
    Cmd.GET_MCAST_FLAGS: "mcast_flags",
    Cmd.GET_VLAN: "vlan",
}
SETS = (Cmd.SET_MESH, Cmd.SET_HARDIF, Cmd.SET_VLAN)
_SEQ = struct.Struct("=I")


def datagrams(stem: str) -> list[bytes]:
    """The raw datagrams of one captured reply (``<node>_<table>``), as ``recv()`` returned them."""
    return [bytes.fromhex(line) for line in (GOLDEN / f"{stem}.hex").read_text().split()]


def family(node: str = NODE) -> dict:  # type: ignore[type-arg]
    """The captured family id and multicast groups of ``node``'s kernel."""
    return json.loads((GOLDEN / f"{node}_family.json").read_text())  # type: ignore[no-any-return]


def replay(stem: str, *, dump: bool = True, node: str = NODE) -> list[Record]:
    """The records of one captured reply, assembled by the real :class:`Reply`."""
    data = datagrams(stem)
    reply = Reply(family(node)["id"], _SEQ.unpack_from(data[0], 8)[0], dump=dump)
    done = False
    for d in data:
        done = reply.feed(d)
    if not done or reply.errno:
        raise AssertionError(f"captured reply {stem} is incomplete or an error (errno {reply.errno})")
    return reply.records


def with_seq(data: bytes, seq: int) -> bytes:
    """``data`` (one datagram, any number of netlink messages) with every message's sequence number set."""
    out = bytearray(data)
    off = 0
    while off + 16 <= len(out):
        (length,) = struct.unpack_from("=I", out, off)
        if length < 16:
            break
        _SEQ.pack_into(out, off + 8, seq)
        off += align(length)
    return bytes(out)


class GoldenKernel:
    """Stands in for the kernel end of a NETLINK_GENERIC socket (see the module doc).

    ``requests``: every batadv request as ``(Cmd, {attribute name: value})`` (decoded by the
    codec); ``settings``: those of every SET, in order. ``refuse[cmd] = errno`` makes that command fail the way the
    kernel fails it (an NLMSG_ERROR); a command in ``mute`` gets no answer; ``mangle(cmd, datagram)``,
    when set, changes each datagram of an answer (a kernel or a wire that sends garbage)."""

    def __init__(self, node: str = NODE) -> None:
        self.node = node
        fam = family(node)
        self.family_id: int = fam["id"]
        self.groups: dict[str, int] = fam["groups"]
        self.queue: deque[bytes] = deque()
        self.requests: list[tuple[Cmd, dict[str, Any]]] = []
        self.settings: list[tuple[Cmd, dict[str, Any]]] = []
        self.refuse: dict[Cmd, int] = {}
        self.mute: set[Cmd] = set()
        self.mangle: Callable[[Cmd, bytes], bytes] | None = None
        self.closed = False
        self.nonblocking = False  # as a non-blocking socket: nothing queued is BlockingIOError, not a timeout

    # the socket methods BatadvSocket uses
    def send(self, data: bytes) -> int:
        for msg in split_messages(data):
            if msg.type == GENL_ID_CTRL:
                self.queue.append(self._family_reply(msg.seq))
            elif msg.type == self.family_id:
                gm = parse_genl(msg)
                cmd = Cmd(gm.cmd)
                attrs = batadv.decode_attrs(gm.attrs)
                self.requests.append((cmd, attrs))
                self._answer(cmd, attrs, data, msg.seq)
            else:
                self.queue.append(self._error(msg.seq, errno.ENOENT, data))
        return len(data)

    def recv(self, _size: int) -> bytes:
        if not self.queue:
            if self.nonblocking:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            raise TimeoutError("timed out")
        return self.queue.popleft()

    def close(self) -> None:
        """A closed socket's queued datagrams are gone; opened again (``BatadvSocket.connect``) it
        starts empty, with what was recorded kept."""
        self.closed = True
        self.queue.clear()

    # the kernel's side
    def _answer(self, cmd: Cmd, attrs: dict[str, Any], request: bytes, seq: int) -> None:
        before = len(self.queue)
        self._reply(cmd, attrs, request, seq)
        if self.mangle is not None:
            for i in range(before, len(self.queue)):
                self.queue[i] = self.mangle(cmd, self.queue[i])

    def _reply(self, cmd: Cmd, attrs: dict[str, Any], request: bytes, seq: int) -> None:
        if cmd in self.mute:
            return
        if cmd in self.refuse:
            self.queue.append(self._error(seq, self.refuse[cmd], request))
        elif cmd in SETS:
            self.settings.append((cmd, attrs))
            self.queue.append(self._error(seq, 0, request))  # the ACK
        elif cmd in TABLE_OF:
            self.queue.extend(with_seq(d, seq) for d in datagrams(f"{self.node}_{TABLE_OF[cmd]}"))
        else:
            self.queue.append(self._error(seq, errno.EOPNOTSUPP, request))

    def _family_reply(self, seq: int) -> bytes:
        groups = b"".join(
            nested(i + 1, attr(CTRL_ATTR_MCAST_GRP_NAME, name.encode() + b"\0")
                   + attr(CTRL_ATTR_MCAST_GRP_ID, struct.pack("=I", gid)))
            for i, (name, gid) in enumerate(self.groups.items())
        )
        attrs = (attr(CTRL_ATTR_FAMILY_ID, struct.pack("=H", self.family_id))
                 + attr(CTRL_ATTR_FAMILY_NAME, batadv.BATADV_NL_NAME.encode() + b"\0")
                 + nested(CTRL_ATTR_MCAST_GROUPS, groups))
        return genl_message(GENL_ID_CTRL, CTRL_CMD_NEWFAMILY, attrs, flags=0, seq=seq)

    @staticmethod
    def _error(seq: int, code: int, request: bytes) -> bytes:
        """NLMSG_ERROR: ``-code`` (0 is an ACK) and the request's header, as the kernel sends it."""
        return message(NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + request[:16])


def golden_socket(node: str = NODE, timeout: float = 1.0) -> BatadvSocket:
    """A :class:`BatadvSocket` whose kernel is a :class:`GoldenKernel` (``sock.sock`` once open)."""
    kernel = GoldenKernel(node)

    def connect() -> GoldenKernel:
        kernel.closed = False
        return kernel

    return BatadvSocket(timeout, connect=connect)


def golden_ifindex(node: str = NODE) -> Callable[[str], int]:
    """The captured node's interface names -> indexes (``golden/<node>_ifnames.json``), to stand in
    for ``x0tta.mesh.genl.ifindex`` (the host has no ``bat0``); another name is ENODEV, as on the host."""
    names = {name: int(index) for index, name in
             json.loads((GOLDEN / f"{node}_ifnames.json").read_text()).items()}

    def ifindex(name: str) -> int:
        from x0tta.mesh.genl import MeshError

        if name not in names:
            raise MeshError(f"no network interface {name!r}", errno.ENODEV)
        return names[name]

    return ifindex
