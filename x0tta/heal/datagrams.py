"""Where the heal loop's probes and alerts meet the network: datagram endpoints on an interface.

The prober (:mod:`x0tta.heal.liveness`) and the alerter (:mod:`x0tta.heal.alerts`) never open a
socket themselves. They ask the :class:`Datagrams` they are given (``datagrams=``) for an interface's
MAC, a UDP endpoint bound to the interface on a port, a raw ICMPv6 endpoint for the kernel echo and
the interface's receive counter. The agent passes nothing and gets :data:`HOST`: the host's sockets,
their readiness watched with ``loop.add_reader``, sysfs for the MAC and the counter. Tests hand them
a network of their own (``tests.kit.datanet.FakeNet``) that delivers, drops, delays, duplicates or
corrupts datagrams between named nodes on a manual clock.

An :class:`Endpoint` behaves like a non-blocking datagram socket: ``sendto`` raises ``OSError``
when the datagram cannot leave, ``recvfrom`` raises ``BlockingIOError`` when nothing waits, and
``watch(callback)`` calls ``callback`` (no arguments) from the event loop while datagrams wait - as
a level-triggered reader does. ``recv_stamped`` is ``recvfrom`` with the time the datagram arrived
on the wall clock (the kernel's receive timestamp, ``SO_TIMESTAMPNS``) and the endpoint's drop
count (``SO_RXQ_OVFL``), each None when the endpoint cannot tell: the prober reads its probe
sockets once per round, a probe that waited in the socket still counts from when it came, and a
round in which the kernel dropped probes for lack of room is not taken for loss on the link.
Addresses are the socket module's AF_INET6 tuples ``(host, port, flowinfo, scope_id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

ALL_NODES = "ff02::1"
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ICMP6_FILTER = 1
ECHO_REQUEST, ECHO_REPLY = 128, 129
# SO_TIMESTAMPNS (SO_TIMESTAMPNS_OLD: a struct timespec of native longs), the same number on x86,
# ARM and MIPS; the socket module does not name it. Its control message has the same type.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# SO_RXQ_OVFL: each datagram comes with the count of datagrams the socket dropped for lack of room
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # past rmem_max, with CAP_NET_ADMIN
# A probe socket is read once per round: room for a flood of 100 ms (about 1 KiB of kernel memory
# a small datagram) before the kernel drops anything, and a drop is seen (SO_RXQ_OVFL).
PROBE_RCVBUF = 4 << 20
_TIMESPECS = {16: struct.Struct("=qq"), 8: struct.Struct("=ii")}  # 64-bit time_t, or 32-bit
_CMSG_SPACE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)


class Endpoint(Protocol):
    """A non-blocking datagram endpoint on one interface."""

    index: int  # the interface's index: the scope of the link-local addresses sent to

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> int: ...

    def recvfrom(self, size: int) -> tuple[bytes, Any]: ...

    # whether recv_stamped can tell when a datagram arrived (the kernel's timestamps are on)
    stamped: bool

    def recv_stamped(self, size: int) -> tuple[bytes, Any, float | None, int | None]:
        """``recvfrom``, when the datagram arrived (wall-clock seconds; None: not known) and how
        many datagrams the endpoint has dropped for lack of room so far (None: not known)."""
        ...

    def watch(self, callback: Callable[[], object]) -> None: ...

    def close(self) -> None: ...


class RxCounter(Protocol):
    """An interface's count of received frames (any frame, probes included)."""

    def read(self) -> int | None: ...

    def close(self) -> None: ...


class Datagrams(Protocol):
    """What the prober and the alerter open their endpoints through."""

    async def mac(self, ifname: str) -> str | None:
        """The interface's MAC; None when there is no such interface (yet)."""
        ...

    def link(self, ifname: str, port: int, prefix: bytes | None = None, match: bool = True,
             stamps: bool = False) -> Endpoint:
        """UDP on ``[::]:port`` bound to ``ifname``, sending to ``ff02::1`` there one hop and not
        looped back; OSError when it cannot be opened. With ``prefix`` (four bytes), it receives
        only the datagrams that begin with it (``match``) or only those that do not: two
        endpoints on one port then share its datagrams out by kind. ``stamps``: an endpoint read
        in batches - receive timestamps, a drop count and a large receive buffer."""
        ...

    def echo(self, ifname: str) -> Endpoint:
        """Raw ICMPv6 on ``ifname`` receiving echo replies only; OSError without CAP_NET_RAW."""
        ...

    def rx_counter(self, ifname: str) -> RxCounter:
        """The interface's receive counter (its reads may return None)."""
        ...


def read_mac(ifname: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    except OSError:
        return None


def read_rx_packets(ifname: str) -> int | None:
    try:
        with open(f"/sys/class/net/{ifname}/statistics/rx_packets", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_UDP_PAYLOAD = 8  # a UDP socket's filter sees the datagram from its UDP header


def prefix_filter(sock: socket.socket, prefix: bytes, match: bool = True) -> None:
    """Attach a classic BPF socket filter: ``sock`` receives only the UDP datagrams whose payload
    begins with the four bytes ``prefix`` (``match``), or only those that do not; a datagram
    shorter than four bytes (no probe or alert is) reaches neither. The kernel drops what the
    filter refuses before it wakes anyone. OSError when the kernel refuses the filter."""
    if len(prefix) != 4:
        raise ValueError("the prefix filter compares one 32-bit word")
    take, drop = 0xFFFFFFFF, 0  # bytes of the datagram to keep: all, or none (dropped)
    insns = [
        (_BPF_LD_W_ABS, 0, 0, _UDP_PAYLOAD),  # past a short datagram's end the program returns 0
        (_BPF_JEQ_K, 0, 1, int.from_bytes(prefix, "big")),
        (_BPF_RET_K, 0, 0, take if match else drop),
        (_BPF_RET_K, 0, 0, drop if match else take),
    ]
    code = ctypes.create_string_buffer(b"".join(_BPF_INSN.pack(*i) for i in insns))
    fprog = struct.pack("HP", len(insns), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def open_link_socket(name: str, port: int, prefix: bytes | None = None, match: bool = True,
                     stamps: bool = False) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to interface ``name`` on ``[::]:port``, sending to
    ``ff02::1`` there (one hop, not looped back); returns it and the interface index. With
    ``prefix``: a :func:`prefix_filter` on it. ``stamps``: the kernel's receive timestamps and
    drop count on every datagram, and a receive buffer of :data:`PROBE_RCVBUF` (each best
    effort: :func:`is_stamped` says whether the timestamps are on)."""
    index = socket.if_nametoindex(name)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        if prefix is not None:  # before the bind: nothing unfiltered is ever queued
            prefix_filter(s, prefix, match)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, name.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        if stamps:
            with contextlib.suppress(OSError):  # without them, a datagram counts from its read
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, PROBE_RCVBUF)
            except OSError:  # no CAP_NET_ADMIN: as much as net.core.rmem_max allows
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PROBE_RCVBUF)
        s.bind(("::", port))
        group = socket.inet_pton(socket.AF_INET6, ALL_NODES) + struct.pack("@I", index)
        with contextlib.suppress(OSError):  # every interface is in ff02::1 already
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s, index


def open_echo_socket(name: str) -> socket.socket:
    """A non-blocking raw ICMPv6 socket on interface ``name`` that receives echo replies only."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, name.encode())
        words = [0xFFFFFFFF] * 8  # struct icmp6_filter: a set bit blocks that type
        words[ECHO_REPLY >> 5] &= ~(1 << (ECHO_REPLY & 31))
        s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *words))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def is_stamped(sock: socket.socket) -> bool:
    """Whether the kernel's receive timestamps are on for ``sock``."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS))
    except OSError:
        return False


def receive_info(ancillary: list[tuple[int, int, bytes]]) -> tuple[float | None, int | None]:
    """From a ``recvmsg``'s control messages: the kernel's receive timestamp (wall-clock seconds)
    and the socket's drop count, each None when absent. A timespec is read by its length: 16
    bytes on a 64-bit time_t, 8 on an old 32-bit one."""
    wall = drops = None
    for level, kind, data in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == SO_TIMESTAMPNS and len(data) in _TIMESPECS:
            sec, nsec = _TIMESPECS[len(data)].unpack(data)
            wall = sec + nsec / 1e9
        elif kind == SO_RXQ_OVFL and len(data) == 4:
            drops = int.from_bytes(data, sys.byteorder)
    return wall, drops


class SocketEndpoint:
    """A host socket as an :class:`Endpoint`: readiness through the running loop's ``add_reader``."""

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.stamped = is_stamped(sock)
        self._loop: asyncio.AbstractEventLoop | None = None

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> int:
        return self.sock.sendto(data, addr)

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        return self.sock.recvfrom(size)

    def recv_stamped(self, size: int) -> tuple[bytes, Any, float | None, int | None]:
        data, ancillary, _flags, addr = self.sock.recvmsg(size, _CMSG_SPACE)
        return (data, addr, *receive_info(ancillary))

    def watch(self, callback: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), callback)

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()


class _SysfsCounter:
    """``rx_packets`` read with ``pread`` on a file kept open (not opened and closed ten times a
    second per interface); by opening the file each time when it could not be kept open."""

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            self.fd: int | None = os.open(f"/sys/class/net/{name}/statistics/rx_packets", os.O_RDONLY)
        except OSError:
            self.fd = None

    def read(self) -> int | None:
        if self.fd is None:
            return read_rx_packets(self.name)
        try:
            return int(os.pread(self.fd, 32, 0))
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class HostDatagrams:
    """The host's interfaces: what the agent runs on."""

    async def mac(self, ifname: str) -> str | None:
        return await asyncio.to_thread(read_mac, ifname)

    def link(self, ifname: str, port: int, prefix: bytes | None = None, match: bool = True,
             stamps: bool = False) -> SocketEndpoint:
        sock, index = open_link_socket(ifname, port, prefix, match, stamps)
        return SocketEndpoint(sock, index)

    def echo(self, ifname: str) -> SocketEndpoint:
        index = socket.if_nametoindex(ifname)
        return SocketEndpoint(open_echo_socket(ifname), index)

    def rx_counter(self, ifname: str) -> _SysfsCounter:
        return _SysfsCounter(ifname)


HOST: Datagrams = HostDatagrams()
