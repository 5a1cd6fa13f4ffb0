"""A datagram network of named nodes on a manual clock: what the heal loop's probes and mesh alerts
travel on in the unit tests.

The prober and the alerter open their endpoints through an :class:`x0tta.heal.datagrams.Datagrams`
(``datagrams=``); ``FakeNet.node(name)`` is one for node ``name``. Interfaces are named
``"node/ifname"``; :meth:`FakeNet.connect` puts interfaces on one segment (a cable between two hard
interfaces, or every node's ``bat0`` for batman-adv's flood). A datagram sent to ``ff02::1`` reaches
every other interface of the segment, one sent to an interface's ``fe80::`` address that one only;
there it goes to every endpoint bound to the destination port whose prefix filter takes it (a
second endpoint on an interface is a tap: it hears what the node hears), stamped with its arrival
on the clock's wall time (``recv_stamped``), and bumps the interface's receive counter. Raw ICMPv6
endpoints get echo replies only: the destination's kernel answers an echo request, also while its
agent is held (:meth:`FakeNet.hold`), as a real kernel answers for a stopped process.

Faults are per direction (:meth:`FakeNet.fault`): ``drop`` (a share, drawn from a seeded random
generator: runs replay exactly), ``delay`` (seconds on the clock), ``duplicate`` (extra copies) and
``corrupt`` (the last byte flipped, where the probes' and alerts' tags end). Nothing here waits for
real time: delayed datagrams arrive when the test advances the :class:`~tests.kit.clock.ManualClock`,
and arriving datagrams are read from the loop's next turn, as a socket's reader would be, by an
endpoint that is watched; the prober's probe endpoints are read at its rounds.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.kit.clock import ManualClock
from x0tta.heal.datagrams import ALL_NODES, ECHO_REPLY, ECHO_REQUEST


@dataclass
class Fault:
    """What happens to each datagram going one way between two interfaces."""

    drop: float = 0.0  # the share lost (1.0: a silent link whose carrier stays up)
    delay: float = 0.0  # seconds on the clock before it arrives
    duplicate: int = 0  # extra copies of each datagram
    corrupt: bool = False  # the last byte of every copy flipped


@dataclass
class Interface:
    node: str
    name: str
    mac: str
    index: int
    address: str  # its fe80:: address, as the socket module writes it (no scope)
    segment: int = -1  # -1: on no segment yet (what it sends reaches nobody)
    endpoints: list[FakeEndpoint] = field(default_factory=list)
    rx: int = 0  # frames received: datagrams that arrived, and other traffic (FakeNet.traffic)

    @property
    def where(self) -> str:
        return f"{self.node}/{self.name}"


class FakeEndpoint:
    """A non-blocking endpoint on a fake interface (:class:`x0tta.heal.datagrams.Endpoint`)."""

    def __init__(self, net: FakeNet, iface: Interface, port: int, kind: str) -> None:
        self.net, self.iface, self.port, self.kind = net, iface, port, kind
        self.index = iface.index
        # datagram, source address, when it arrived on the net's wall clock (the receive timestamp)
        self.queue: deque[tuple[bytes, tuple[str, int, int, int], float]] = deque()
        self.closed = False
        self._callback: Callable[[], object] | None = None
        self._scheduled = False
        self.prefix: bytes | None = None  # the socket filter: only datagrams beginning with it (match)
        self.match = True                 # or only those that do not
        self.stamped = True  # receive timestamps on (the net's clock)
        self.capacity: int | None = None  # datagrams the endpoint holds unread (None: no limit)
        self.drops = 0  # datagrams dropped because it held ``capacity`` already (SO_RXQ_OVFL)

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> int:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.net._send(self, bytes(data), str(addr[0]), int(addr[1]))
        return len(data)

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        data, src, _at, _drops = self.recv_stamped(size)
        return data, src

    def recv_stamped(self, size: int) -> tuple[bytes, Any, float | None, int | None]:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.queue or self.iface.node in self.net.held:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        data, src, at = self.queue.popleft()
        return data[:size], src, at if self.stamped else None, self.drops

    def watch(self, callback: Callable[[], object]) -> None:
        self._callback = callback
        self._kick()

    def close(self) -> None:
        self.closed = True
        self._callback = None
        if self in self.iface.endpoints:
            self.iface.endpoints.remove(self)

    def _arrive(self, data: bytes, src: tuple[str, int, int, int]) -> None:
        if self.prefix is not None and data.startswith(self.prefix) != self.match:
            return  # the kernel's filter drops it
        if self.capacity is not None and len(self.queue) >= self.capacity:
            self.drops += 1  # the receive buffer is full
            return
        self.queue.append((data, src, self.net.clock.time()))
        self._kick()

    def _kick(self) -> None:
        """Call the reader from the loop's next turn while datagrams wait (level-triggered)."""
        if self._scheduled or self._callback is None or not self.queue or self.iface.node in self.net.held:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the datagram waits for a drain
            return
        self._scheduled = True
        loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        if self.closed or self._callback is None or not self.queue or self.iface.node in self.net.held:
            return
        self._callback()
        self._kick()


class _Counter:
    def __init__(self, iface: Interface) -> None:
        self.iface = iface

    def read(self) -> int | None:
        return self.iface.rx

    def close(self) -> None:
        pass


class NodeDatagrams:
    """One node's view of the net: the :class:`x0tta.heal.datagrams.Datagrams` its prober and
    alerter take. ``echo=False``: no raw socket (a unit without CAP_NET_RAW)."""

    def __init__(self, net: FakeNet, node: str, echo: bool = True) -> None:
        self.net, self.node, self.can_echo = net, node, echo

    def _iface(self, ifname: str) -> Interface:
        iface = self.net.ifaces.get(f"{self.node}/{ifname}")
        if iface is None:
            raise OSError(errno.ENODEV, f"No such device: {self.node}/{ifname}")
        return iface

    async def mac(self, ifname: str) -> str | None:
        iface = self.net.ifaces.get(f"{self.node}/{ifname}")
        return iface.mac if iface is not None else None

    def link(self, ifname: str, port: int, prefix: bytes | None = None, match: bool = True,
             stamps: bool = False) -> FakeEndpoint:
        ep = self.net._bind(self._iface(ifname), port, "udp")
        ep.prefix, ep.match = prefix, match
        return ep

    def echo(self, ifname: str) -> FakeEndpoint:
        if not self.can_echo:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return self.net._bind(self._iface(ifname), 0, "icmp")

    def rx_counter(self, ifname: str) -> _Counter:
        return _Counter(self._iface(ifname))


@dataclass
class Delivered:
    at: float  # monotonic time on the clock
    src: str  # "node/ifname"
    dst: str
    port: int  # destination port (0: ICMPv6)
    data: bytes


class FakeNet:
    def __init__(self, clock: ManualClock, seed: int = 20261206) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.ifaces: dict[str, Interface] = {}
        self.faults: dict[tuple[str, str], Fault] = {}
        self.held: set[str] = set()
        self.log: list[Delivered] = []
        self.sent = self.dropped = 0
        self._segments = 0
        self._indexes: dict[str, int] = {}

    # -- building it ----------------------------------------------------------------------------

    def interface(self, where: str, mac: str | None = None) -> Interface:
        """The interface ``"node/ifname"``, made on first use (``mac``: its address, else one of
        the net's own)."""
        iface = self.ifaces.get(where)
        if iface is None:
            node, name = where.split("/", 1)
            n = len(self.ifaces) + 1
            index = self._indexes[node] = self._indexes.get(node, 1) + 1
            iface = Interface(node, name, mac or f"02:00:5e:00:{n >> 8:02x}:{n & 0xFF:02x}", index, f"fe80::{n:x}")
            self.ifaces[where] = iface
        elif mac is not None and mac != iface.mac:
            raise ValueError(f"{where} has MAC {iface.mac}, not {mac}")
        return iface

    def connect(self, *where: str) -> None:
        """One segment of these interfaces: what one sends to ``ff02::1`` every other receives."""
        self._segments += 1
        for w in where:
            self.interface(w).segment = self._segments

    def node(self, name: str, *, echo: bool = True) -> NodeDatagrams:
        return NodeDatagrams(self, name, echo)

    def mac(self, where: str) -> str:
        return self.ifaces[where].mac

    # -- faults ---------------------------------------------------------------------------------

    def fault(self, src: str, dst: str, **kind: Any) -> Fault:
        """From now on, datagrams from ``src`` to ``dst`` (``"node/ifname"``) meet this fault."""
        f = self.faults[(src, dst)] = Fault(**kind)
        return f

    def cut(self, a: str, b: str) -> None:
        """Nothing gets through between ``a`` and ``b`` either way; their carriers stay up."""
        self.fault(a, b, drop=1.0)
        self.fault(b, a, drop=1.0)

    def restore(self, a: str, b: str) -> None:
        self.faults.pop((a, b), None)
        self.faults.pop((b, a), None)

    def hold(self, node: str) -> None:
        """``node``'s agent stops running: it sends nothing and reads nothing (what arrives waits);
        its kernel still answers echo requests."""
        self.held.add(node)

    def release(self, node: str) -> None:
        self.held.discard(node)
        for iface in self.ifaces.values():
            if iface.node == node:
                for ep in iface.endpoints:
                    ep._kick()

    def traffic(self, where: str, frames: int = 1) -> None:
        """``frames`` frames other than probes arrive at ``where`` (batman-adv's OGMs, data)."""
        self.ifaces[where].rx += frames

    # -- moving datagrams -----------------------------------------------------------------------

    def _bind(self, iface: Interface, port: int, kind: str) -> FakeEndpoint:
        ep = FakeEndpoint(self, iface, port, kind)
        iface.endpoints.append(ep)
        return ep

    def _send(self, ep: FakeEndpoint, data: bytes, host: str, port: int) -> None:
        src = ep.iface
        if src.node in self.held:
            return  # a stopped agent sends nothing
        if src.segment < 0:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        self.sent += 1
        for dst in self.ifaces.values():
            if dst is src or dst.segment != src.segment or host not in (ALL_NODES, dst.address):
                continue
            self._travel(src, dst, ep.kind, ep.port, port, data)

    def _travel(self, src: Interface, dst: Interface, kind: str, sport: int, dport: int, data: bytes) -> None:
        f = self.faults.get((src.where, dst.where))
        if f is not None and f.drop and self.rng.random() < f.drop:
            self.dropped += 1
            return
        for _ in range(1 + (f.duplicate if f is not None else 0)):
            copy = data[:-1] + bytes([data[-1] ^ 0x01]) if f is not None and f.corrupt and data else data
            if f is not None and f.delay > 0:
                self.clock.call_later(f.delay, self._arrive, src, dst, kind, sport, dport, copy)
            else:
                self._arrive(src, dst, kind, sport, dport, copy)

    def _arrive(self, src: Interface, dst: Interface, kind: str, sport: int, dport: int, data: bytes) -> None:
        dst.rx += 1
        self.log.append(Delivered(self.clock.monotonic(), src.where, dst.where, dport, data))
        addr = (src.address, sport, 0, dst.index)
        if kind == "icmp":
            if data[:1] == bytes([ECHO_REQUEST]):  # the kernel answers, running agent or not
                self._travel(dst, src, kind, 0, 0, bytes([ECHO_REPLY]) + data[1:])
                return
            if data[:1] != bytes([ECHO_REPLY]):
                return
        for ep in list(dst.endpoints):
            if ep.kind == kind and (kind == "icmp" or ep.port == dport):
                ep._arrive(data, addr)
