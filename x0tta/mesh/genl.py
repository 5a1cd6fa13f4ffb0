"""A blocking generic netlink socket speaking the ``batadv`` family (I/O adapter).

Why: the pure codec (:mod:`x0tta.mesh.core.batadv`) knows the bytes; this is the thin part that
moves them, like batctl's libnl socket: resolve the family through nlctrl, send a request, read
datagrams into a :class:`~x0tta.mesh.core.batadv.Reply` until it is complete. It blocks, so the
agent calls it through ``asyncio.to_thread`` (:mod:`x0tta.mesh.client`); the CLI calls it directly.
A ``nonblocking`` one never waits: the kernel answers a request within the call that sends it
(a GET's reply, a dump's first datagram, each further one in the read before), so the agent reads
its tables with it on the event loop, and a reply not there yet (:class:`NotReady`) goes to the
thread after all.

One :class:`BatadvSocket` serves one request at a time (the caller serialises). A kernel without
batman-adv has no family ``batadv``: :meth:`BatadvSocket.open` raises ``CapabilityMissing``.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from x0tta.common.errors import CapabilityMissing, PermanentError, TemporaryError
from x0tta.mesh.conditions import BATMAN_ADV_MISSING, BATMAN_ADV_NO_CONFIG_GROUP
from x0tta.mesh.core import batadv
from x0tta.mesh.core.batadv import Cmd, Record, Reply
from x0tta.mesh.core.netlink import (
    GENL_ID_CTRL,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_EXT_ACK,
    NLMSG_ERROR,
    SOL_NETLINK,
    Family,
    decode_family,
    encode_get_family,
    parse_error,
    parse_genl,
    split_messages,
)

NETLINK_GENERIC = 16
RCVBUF = 1 << 20  # the socket's receive queue: a burst of events or a big dump must not overrun it
# One datagram: the kernel fills a dump's datagrams up to the reader's buffer size, capped at
# 32 KiB (net/netlink/af_netlink.c, max_recvmsg_len). Asking recv() for the whole 1 MiB queue made
# every read allocate (mmap) and shrink (mremap, munmap) a 1 MiB buffer.
DATAGRAM = 64 << 10
R = TypeVar("R", bound=Record)
MISSING_REASON = (
    "the kernel has no batman-adv: the generic netlink family 'batadv' is not registered "
    "(module batman-adv not built or not loaded; try 'modprobe batman-adv')"
)


class NotReady(TemporaryError):
    """A non-blocking socket's reply was not queued yet. The kernel answers a request in the call
    that sends it (a GET's reply, a dump's first datagram; each further datagram of a dump in the
    read before it), so this is not expected; the caller takes the request to a thread instead."""


class MeshError(PermanentError):
    """The kernel refused a batadv request (``errno`` set) or the mesh interface does not exist."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise MeshError(f"no network interface {name!r}", errno_mod.ENODEV) from None


def _ix(name: str | int) -> int:
    return name if isinstance(name, int) else ifindex(name)


def ifname(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


class BatadvSocket:
    """A NETLINK_GENERIC socket bound to the ``batadv`` family."""

    def __init__(self, timeout: float = 5.0, connect: Callable[[], Any] | None = None, *,
                 nonblocking: bool = False) -> None:
        self.timeout = timeout
        # never waits: a reply not queued yet is NotReady (the event loop's socket, see MeshClient)
        self.nonblocking = nonblocking
        self.connect = connect  # tests: a fake kernel's socket instead of a NETLINK_GENERIC one
        self.sock: socket.socket | None = None
        self.family: Family | None = None
        self._seq = 0
        # Every datagram of every reply goes here when set: how golden fixtures are captured.
        self.capture: Callable[[Cmd, bytes], None] | None = None

    def __enter__(self) -> BatadvSocket:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Family:
        if self.sock is None and self.connect is not None:
            self.sock = self.connect()
        if self.sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
                sock.bind((0, 0))
                if self.nonblocking:
                    sock.setblocking(False)
                else:
                    sock.settimeout(self.timeout)
            except OSError:
                sock.close()
                raise
            self.sock = sock
        if self.family is None:
            try:
                self.family = self._resolve(batadv.BATADV_NL_NAME)
            except BaseException:
                self.close()
                raise
        return self.family

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _recv(self) -> bytes:
        assert self.sock is not None
        try:
            return self.sock.recv(DATAGRAM)
        except TimeoutError:
            raise TemporaryError("batman-adv did not answer within the timeout", delay=1.0) from None
        except BlockingIOError:
            raise NotReady("batman-adv's reply was not queued yet") from None

    def _resolve(self, name: str) -> Family:
        assert self.sock is not None
        seq = self.next_seq()
        self.sock.send(encode_get_family(name, seq))
        while True:
            data = self._recv()  # NotReady: open() closes the socket
            for msg in split_messages(data):
                if msg.seq != seq:
                    continue
                if msg.type == GENL_ID_CTRL:
                    return decode_family(parse_genl(msg))
                if msg.type == NLMSG_ERROR:
                    err = -parse_error(msg).error
                    if err == errno_mod.ENOENT:
                        raise CapabilityMissing(BATMAN_ADV_MISSING, MISSING_REASON)
                    raise MeshError(f"resolving genl family {name}: {os.strerror(err)}", err)

    def transact(self, cmd: Cmd, request: bytes, seq: int, *, dump: bool, ack: bool = False) -> Reply:
        """Send one request and collect its whole reply."""
        fam = self.open()
        assert self.sock is not None
        reply = Reply(fam.id, seq, dump=dump, ack=ack)
        self.sock.send(request)
        done = False
        try:
            while not done:
                data = self._recv()
                if self.capture is not None:
                    self.capture(cmd, data)
                done = reply.feed(data)
        except BaseException:
            # A reply cut short (garbled, not queued yet, a timeout, an error mid-dump) may still
            # have datagrams on their way, or a dump still running in the kernel: a fresh socket
            # for the next request, so nothing of this one can reach it.
            self.close()
            raise
        if reply.errno:
            raise MeshError(f"batadv {cmd.name}: {os.strerror(reply.errno)}", reply.errno)
        return reply

    # -- the batadv commands ----------------------------------------------------------------

    def dump(self, cmd: Cmd, meshif: str | int, **selectors: Any) -> list[Record]:
        """A whole table. A dump the kernel marks NLM_F_DUMP_INTR (the table changed while it was
        being walked) is taken again, up to three times; the last one is returned regardless."""
        fam = self.open()
        index = _ix(meshif)
        for _attempt in range(3):
            seq = self.next_seq()
            reply = self.transact(cmd, batadv.encode_dump(fam.id, cmd, index, seq, **selectors), seq, dump=True)
            if not reply.interrupted:
                break
        return reply.records

    def get(self, cmd: Cmd, **selectors: Any) -> Record:
        fam = self.open()
        seq = self.next_seq()
        records = self.transact(cmd, batadv.encode_get(fam.id, cmd, seq, **selectors), seq, dump=False).records
        if not records:
            raise MeshError(f"batadv {cmd.name}: empty reply")
        return records[0]

    def _get_one(self, cmd: Cmd, kind: type[R], **selectors: Any) -> R:
        """The one record a GET answers with, of the kind that command returns."""
        rec = self.get(cmd, **selectors)
        if not isinstance(rec, kind):
            raise MeshError(f"batadv {cmd.name}: the kernel answered with {type(rec).__name__}, not {kind.__name__}")
        return rec

    def mesh_info(self, meshif: str | int) -> batadv.MeshInfo:
        index = _ix(meshif)
        return self._get_one(Cmd.GET_MESH, batadv.MeshInfo, mesh_ifindex=index)

    def hardif(self, meshif: str | int, hardif: str | int) -> batadv.HardIf:
        mi = _ix(meshif)
        hi = _ix(hardif)
        return self._get_one(Cmd.GET_HARDIF, batadv.HardIf, mesh_ifindex=mi, hard_ifindex=hi)

    def vlan(self, meshif: str | int, vid: int) -> batadv.Vlan:
        mi = _ix(meshif)
        return self._get_one(Cmd.GET_VLAN, batadv.Vlan, mesh_ifindex=mi, vlanid=vid)

    def routing_algos(self) -> list[str]:
        fam = self.open()
        seq = self.next_seq()
        reply = self.transact(Cmd.GET_ROUTING_ALGOS, batadv.encode_routing_algos(fam.id, seq), seq, dump=True)
        return [r.algo_name for r in reply.records if isinstance(r, batadv.RoutingAlgo)]

    def _set(self, cmd: Cmd, request: bytes, seq: int) -> None:
        self.transact(cmd, request, seq, dump=False, ack=True)

    def set_mesh(self, meshif: str | int, values: Mapping[str, Any]) -> None:
        fam = self.open()
        mi = _ix(meshif)
        seq = self.next_seq()
        self._set(Cmd.SET_MESH, batadv.encode_set_mesh(fam.id, mi, seq, values), seq)

    def set_hardif(self, meshif: str | int, hardif: str | int, values: Mapping[str, Any]) -> None:
        fam = self.open()
        mi = _ix(meshif)
        hi = _ix(hardif)
        seq = self.next_seq()
        self._set(Cmd.SET_HARDIF, batadv.encode_set_hardif(fam.id, mi, hi, seq, values), seq)

    def set_vlan(self, meshif: str | int, vid: int, values: Mapping[str, Any]) -> None:
        fam = self.open()
        mi = _ix(meshif)
        seq = self.next_seq()
        self._set(Cmd.SET_VLAN, batadv.encode_set_vlan(fam.id, mi, vid, seq, values), seq)

    def tp_meter_start(self, meshif: str | int, dst: str, test_time_ms: int) -> batadv.TpMeter:
        """TP_METER: start a throughput test to originator ``dst``; the reply carries its cookie."""
        fam = self.open()
        mi = _ix(meshif)
        seq = self.next_seq()
        req = batadv.encode_tp_meter(fam.id, mi, dst, test_time_ms, seq)
        records = self.transact(Cmd.TP_METER, req, seq, dump=False).records
        if not records or not isinstance(records[0], batadv.TpMeter):
            raise MeshError("batadv TP_METER: no cookie in the reply")
        return records[0]

    def tp_meter_cancel(self, meshif: str | int, dst: str) -> None:
        fam = self.open()
        mi = _ix(meshif)
        seq = self.next_seq()
        self._set(Cmd.TP_METER_CANCEL, batadv.encode_tp_meter_cancel(fam.id, mi, dst, seq), seq)


class BatadvEventSocket:
    """A non-blocking socket subscribed to the ``config`` multicast group of ``batadv``.

    The kernel sends SET_MESH / SET_HARDIF / SET_VLAN messages to this group after every change,
    whoever made it (batctl, another daemon, this agent): the cue to re-check the desired state.
    """

    def __init__(self, family: Family, group: str = batadv.BATADV_NL_MCAST_GROUP_CONFIG) -> None:
        if group not in family.mcast_groups:
            raise CapabilityMissing(BATMAN_ADV_NO_CONFIG_GROUP, f"batadv has no multicast group {group!r}")
        self.family = family
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, family.mcast_groups[group])
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[list[Record], bool]:
        """Every event waiting on the socket (never blocks), and whether some were lost.

        Lost events (ENOBUFS: the receive queue overran) mean "something changed": the caller
        re-reads the state instead of trusting the events.
        """
        out: list[Record] = []
        lost = False
        while True:
            try:
                data = self.sock.recv(DATAGRAM)
            except BlockingIOError:
                return out, lost
            except OSError as exc:
                if exc.errno == errno_mod.ENOBUFS:
                    lost = True
                    continue
                raise
            out.extend(batadv.decode_message(data, self.family.id))

    def close(self) -> None:
        self.sock.close()
