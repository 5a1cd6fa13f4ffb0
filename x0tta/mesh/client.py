"""The async mesh client: batman-adv over generic netlink, links over rtnetlink (I/O adapter).

Why: the agent (mesh subsystem, MAPE-K monitor and executor, lab) needs the kernel's view of the
mesh as typed records, and a way to steer it, without ever blocking its event loop.

How:

* batadv requests go through a blocking :class:`~x0tta.mesh.genl.BatadvSocket` run in a worker
  thread (``asyncio.to_thread``); an ``asyncio.Lock`` keeps one request in flight per client, the
  way batctl uses one socket per query. Decoding happens in that thread too. The periodic reads
  (:meth:`MeshClient.snapshot`, :meth:`MeshClient.tables`: the heal loop every second, the mesh
  subsystem's observation) go on the event loop through a second, non-blocking socket: the kernel
  has queued each datagram of the answer by the time it is read, and a worker-thread hop costs more
  than the read (on a lab node 1.3 ms of CPU against ~40 us a system call; the GIL handed back and
  forth around each read of the thread). An answer not there yet
  (:class:`~x0tta.mesh.genl.NotReady`, not seen in practice) is read again in the thread.
* batadv ``config`` events (the kernel's SET_MESH / SET_HARDIF / SET_VLAN notifications) arrive on
  a non-blocking multicast socket watched with ``loop.add_reader``.
* rtnetlink (create a ``batadv`` link with a routing algorithm, enslave hard interfaces, MTU,
  up/down) uses a synchronous pyroute2 ``IPRoute`` on a thread of its own, and RTNLGRP_LINK events
  a raw socket with ``loop.add_reader`` (pyroute2's ``AsyncIPRoute`` does not run on uvloop, see
  :class:`LinkControl`). The ``batadv`` link kind and its IFLA_BATADV_ALGO_NAME are declared to
  pyroute2 here (it has no batman-adv support of its own). :class:`LinkControl` is the agent's one
  rtnetlink stack: the mesh reconcile and the heal loop (:mod:`x0tta.heal.links`, a table of link
  states kept over it) share its timeout and its error mapping.

A kernel without batman-adv raises ``CapabilityMissing(BATMAN_ADV_MISSING, reason)`` from
:meth:`MeshClient.open`; the supervisor reports the mesh subsystem degraded with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from x0tta.common.errors import TemporaryError
from x0tta.mesh.core import batadv
from x0tta.mesh.core.batadv import Cmd
from x0tta.mesh.core.netlink import Family
from x0tta.mesh.genl import BatadvEventSocket, BatadvSocket, MeshError, NotReady, ifindex

R = TypeVar("R", bound=batadv.Record)
T = TypeVar("T")
NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1


@dataclass(frozen=True)
class LinkEvent:
    """An RTM_NEWLINK / RTM_DELLINK as it happened."""

    event: str  # "new" or "del"
    ifindex: int
    ifname: str | None
    up: bool  # IFF_UP (administratively up)
    running: bool  # IFF_RUNNING (carrier)
    operstate: str | None
    mtu: int | None
    master: int | None  # ifindex of the master (the batadv interface of a hard interface)
    kind: str | None  # link kind ("batadv", "veth", ...) when the kernel says


@dataclass(frozen=True, slots=True)
class MeshSnapshot:
    info: batadv.MeshInfo
    hardifs: list[batadv.HardIf]
    originators: list[batadv.Originator]
    neighbors: list[batadv.Neighbor]
    gateways: list[batadv.Gateway]


class MeshClient:
    """One node's batman-adv and link control. Use as ``async with MeshClient() as mesh:``."""

    def __init__(self, timeout: float = 5.0, sock: BatadvSocket | None = None,
                 quick: BatadvSocket | None = None) -> None:
        self._sock = sock if sock is not None else BatadvSocket(timeout)  # tests hand in one with a fake kernel
        # the periodic reads' socket, on the loop (non-blocking); a client handed a socket reads
        # through that one only, unless handed this too
        self._quick = quick if quick is not None or sock is not None else BatadvSocket(timeout, nonblocking=True)
        self._lock = asyncio.Lock()
        self.quick_reads = 0  # periodic reads answered on the loop
        self.slow_reads = 0  # ... that went to the thread (the answer was not queued yet)

    async def __aenter__(self) -> MeshClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Family:
        """Open the socket and resolve the ``batadv`` family (CapabilityMissing without it)."""
        return await self._call(self._sock.open)

    async def close(self) -> None:
        async with self._lock:
            self._sock.close()
            if self._quick is not None:
                self._quick.close()

    @property
    def family(self) -> Any:
        return self._sock.family

    async def _read(self, fn: Callable[[BatadvSocket], T]) -> T:
        """``fn(socket)``: on the loop with the non-blocking socket, else (no such socket, or its
        answer not queued yet) in a worker thread with the blocking one."""
        if self._quick is not None:
            async with self._lock:
                try:
                    got = fn(self._quick)
                except NotReady:
                    self.slow_reads += 1
                else:
                    self.quick_reads += 1
                    return got
        return await self._call(fn, self._sock)  # type: ignore[no-any-return]

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run a blocking socket call in a worker thread, one at a time.

        If the caller is cancelled (a timeout around a dump), the lock is held until the thread is
        done with the socket (bounded by the socket timeout), so the next request never shares it.
        """
        async with self._lock:
            work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])
                if not work.cancelled():
                    work.exception()  # retrieved: its outcome no longer matters to anyone
                raise

    async def dump(self, cmd: Cmd, meshif: str | int = "bat0", **selectors: Any) -> list[batadv.Record]:
        """Any GET_* table as records (see :data:`~x0tta.mesh.core.batadv.RECORD_OF`)."""
        return await self._call(lambda: self._sock.dump(cmd, meshif, **selectors))

    async def _typed(self, cmd: Cmd, meshif: str | int, cls: type[R]) -> list[R]:
        return [r for r in await self.dump(cmd, meshif) if isinstance(r, cls)]

    # -- reading ------------------------------------------------------------------------------

    async def mesh_info(self, meshif: str | int = "bat0") -> batadv.MeshInfo:
        return await self._call(self._sock.mesh_info, meshif)

    async def hardifs(self, meshif: str | int = "bat0") -> list[batadv.HardIf]:
        return await self._typed(Cmd.GET_HARDIF, meshif, batadv.HardIf)

    async def tables(self, meshif: str | int, cmds: tuple[Cmd, ...]) -> dict[Cmd, list[batadv.Record]]:
        """Several GET_* tables read at once (on the loop, see the module's doc), the mesh
        interface's index resolved once: a name lookup is three system calls (socket, ioctl, close)."""

        def read(sock: BatadvSocket) -> dict[Cmd, list[batadv.Record]]:
            index = ifindex(meshif) if isinstance(meshif, str) else meshif
            return {cmd: sock.dump(cmd, index) for cmd in cmds}

        return await self._read(read)

    async def snapshot(self, meshif: str | int = "bat0") -> MeshSnapshot:
        """The mesh settings and the hard interface, originator, neighbour and gateway tables, read
        at once (see :meth:`tables`)."""

        def read(sock: BatadvSocket) -> MeshSnapshot:
            index = ifindex(meshif) if isinstance(meshif, str) else meshif

            def typed(cmd: Cmd, cls: type[R]) -> list[R]:
                return [r for r in sock.dump(cmd, index) if isinstance(r, cls)]

            return MeshSnapshot(
                sock.mesh_info(index), typed(Cmd.GET_HARDIF, batadv.HardIf),
                typed(Cmd.GET_ORIGINATORS, batadv.Originator), typed(Cmd.GET_NEIGHBORS, batadv.Neighbor),
                typed(Cmd.GET_GATEWAYS, batadv.Gateway),
            )

        return await self._read(read)

    async def hardif(self, meshif: str | int, hardif: str | int) -> batadv.HardIf:
        return await self._call(self._sock.hardif, meshif, hardif)

    async def originators(self, meshif: str | int = "bat0") -> list[batadv.Originator]:
        return await self._typed(Cmd.GET_ORIGINATORS, meshif, batadv.Originator)

    async def neighbors(self, meshif: str | int = "bat0") -> list[batadv.Neighbor]:
        return await self._typed(Cmd.GET_NEIGHBORS, meshif, batadv.Neighbor)

    async def gateways(self, meshif: str | int = "bat0") -> list[batadv.Gateway]:
        return await self._typed(Cmd.GET_GATEWAYS, meshif, batadv.Gateway)

    async def transtable_local(self, meshif: str | int = "bat0") -> list[batadv.TransTableLocal]:
        return await self._typed(Cmd.GET_TRANSTABLE_LOCAL, meshif, batadv.TransTableLocal)

    async def transtable_global(self, meshif: str | int = "bat0") -> list[batadv.TransTableGlobal]:
        return await self._typed(Cmd.GET_TRANSTABLE_GLOBAL, meshif, batadv.TransTableGlobal)

    async def bla_claims(self, meshif: str | int = "bat0") -> list[batadv.BlaClaim]:
        return await self._typed(Cmd.GET_BLA_CLAIM, meshif, batadv.BlaClaim)

    async def bla_backbones(self, meshif: str | int = "bat0") -> list[batadv.BlaBackbone]:
        return await self._typed(Cmd.GET_BLA_BACKBONE, meshif, batadv.BlaBackbone)

    async def dat_cache(self, meshif: str | int = "bat0") -> list[batadv.DatCacheEntry]:
        return await self._typed(Cmd.GET_DAT_CACHE, meshif, batadv.DatCacheEntry)

    async def mcast_flags(self, meshif: str | int = "bat0") -> list[batadv.McastFlags]:
        return await self._typed(Cmd.GET_MCAST_FLAGS, meshif, batadv.McastFlags)

    async def vlan(self, meshif: str | int, vid: int) -> batadv.Vlan:
        return await self._call(self._sock.vlan, meshif, vid)

    async def routing_algos(self) -> list[str]:
        return await self._call(self._sock.routing_algos)

    # -- steering -----------------------------------------------------------------------------

    async def set_mesh(self, meshif: str | int, values: Mapping[str, Any]) -> None:
        """SET_MESH with attribute-named values, e.g. ``{"orig_interval": 500, "gw_mode": 2}``."""
        await self._call(self._sock.set_mesh, meshif, dict(values))

    async def set_hardif(self, meshif: str | int, hardif: str | int, values: Mapping[str, Any]) -> None:
        """SET_HARDIF: ``hop_penalty``, ``elp_interval``, ``throughput_override``."""
        await self._call(self._sock.set_hardif, meshif, hardif, dict(values))

    async def set_vlan(self, meshif: str | int, vid: int, values: Mapping[str, Any]) -> None:
        """SET_VLAN: ``ap_isolation_enabled``."""
        await self._call(self._sock.set_vlan, meshif, vid, dict(values))

    async def tp_meter(
        self, meshif: str | int, dst: str, test_time_ms: int = 1000, timeout: float | None = None
    ) -> batadv.TpMeter:
        """Run batman-adv's throughput meter to originator ``dst`` and return its result.

        Subscribes to the ``tpmeter`` group first, starts the test (TP_METER), then waits for the
        result event with the same cookie. ``tpmeter_result`` is a :class:`TpMeterReason`
        (COMPLETE, or why it stopped); on timeout or cancellation the test is cancelled.
        """
        fam = await self.open()
        events = BatadvEventSocket(fam, batadv.BATADV_NL_MCAST_GROUP_TPMETER)
        loop = asyncio.get_running_loop()
        results: asyncio.Queue[batadv.Record] = asyncio.Queue()

        def readable() -> None:
            with contextlib.suppress(Exception):
                for rec in events.read()[0]:
                    results.put_nowait(rec)

        loop.add_reader(events.fileno(), readable)
        done = False
        try:
            start = await self._call(self._sock.tp_meter_start, meshif, dst, test_time_ms)
            limit = timeout if timeout is not None else test_time_ms / 1000 + 10.0
            async with asyncio.timeout(limit):
                while True:
                    rec = await results.get()
                    if isinstance(rec, batadv.TpMeter) and rec.finished and (
                        rec.tpmeter_cookie == start.tpmeter_cookie or rec.tpmeter_cookie is None
                    ):
                        done = True
                        return rec
        finally:
            loop.remove_reader(events.fileno())
            events.close()
            if not done:
                with contextlib.suppress(Exception):
                    await self._call(self._sock.tp_meter_cancel, meshif, dst)

    # -- events -------------------------------------------------------------------------------

    async def config_events(self) -> AsyncIterator[batadv.Record | None]:
        """batadv ``config`` group events as they come: MeshInfo, HardIf or Vlan records.

        ``None`` means events were lost (socket overrun): re-read the state.
        """
        fam = await self.open()
        events = BatadvEventSocket(fam)
        queue: asyncio.Queue[batadv.Record | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                records, lost = events.read()
            except Exception:  # a decode error or socket error: tell the consumer to re-read
                records, lost = [], True
            for rec in records:
                queue.put_nowait(rec)
            if lost:
                queue.put_nowait(None)

        loop.add_reader(events.fileno(), readable)
        try:
            while True:
                yield await queue.get()
        finally:
            loop.remove_reader(events.fileno())
            events.close()


# -- rtnetlink through pyroute2 -------------------------------------------------------------------

_KIND_REGISTERED = False


def _register_batadv_kind() -> None:
    """Teach pyroute2 the ``batadv`` link kind: IFLA_INFO_DATA holds IFLA_BATADV_ALGO_NAME."""
    global _KIND_REGISTERED
    if _KIND_REGISTERED:
        return
    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    class batadv_data(nla):
        prefix = "IFLA_BATADV_"
        nla_map = (("IFLA_BATADV_UNSPEC", "none"), ("IFLA_BATADV_ALGO_NAME", "asciiz"))

    ifinfmsg.ifinfo.register_link_kind(module={"batadv": batadv_data})
    _KIND_REGISTERED = True


IFF_UP = 0x1
IFF_RUNNING = 0x40


class LinkControl:
    """rtnetlink operations on the mesh's links. Use as ``async with LinkControl() as links:``.

    pyroute2's ``AsyncIPRoute`` cannot run on uvloop (the agent's loop): it opens its socket with
    ``loop.create_datagram_endpoint``, which uvloop refuses for AF_NETLINK. So the operations go
    to one synchronous pyroute2 ``IPRoute`` living on a thread of its own (where it runs a plain
    asyncio loop), and link events come from a raw NETLINK_ROUTE socket watched with
    ``loop.add_reader`` (every loop has it): :meth:`events` parses them with pyroute2's rtnetlink
    marshal, :meth:`watch` hands the datagrams to a decoder of the caller's.

    Every call is given up after ``timeout`` seconds with a :class:`TemporaryError`; the kernel's
    refusals (pyroute2's ``NetlinkError``) and a name with no interface become :class:`MeshError`
    with the errno. An interface named in a call is looked up in the same thread hop as the call.
    """

    def __init__(self, timeout: float = 10.0, thread: str = "mesh-rtnl") -> None:
        _register_batadv_kind()
        self.timeout = timeout
        self._thread = thread
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread)
        self._ipr: Any = None
        self._lock = asyncio.Lock()
        self.abandoned = 0  # calls given up on after ``timeout`` (their thread left behind)

    async def __aenter__(self) -> LinkControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            if self._ipr is not None:
                ipr, self._ipr = self._ipr, None
                work = asyncio.get_running_loop().run_in_executor(self._pool, ipr.close)
                await asyncio.wait([work], timeout=self.timeout)
        self._pool.shutdown(wait=False)

    def _abandon(self) -> None:
        """A call that never came back: leave its thread (and its IPRoute) behind, start afresh.
        A pyroute2 call has no timeout of its own; without this one stuck request would hold the
        lock, and every later link operation (and a stop) would wait for ever."""
        self.abandoned += 1
        if self._ipr is not None:  # closed by the old thread if its call ever returns
            self._pool.submit(self._ipr.close)
        self._pool.shutdown(wait=False)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread)
        self._ipr = None

    async def _run(self, fn: Callable[[Any], T]) -> T:
        def call() -> T:
            from pyroute2 import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError

            if self._ipr is None:
                self._ipr = IPRoute()
            try:
                return fn(self._ipr)
            except NetlinkError as exc:  # the kernel said no: our error kind, with its errno
                raise MeshError(f"rtnetlink: {exc}", exc.code) from None

        async with self._lock:
            work = asyncio.get_running_loop().run_in_executor(self._pool, call)
            try:
                done, _ = await asyncio.wait([work], timeout=self.timeout)
            except asyncio.CancelledError:
                done, _ = await asyncio.wait([work], timeout=self.timeout)
                if not done:
                    self._abandon()
                elif not work.cancelled():
                    work.exception()  # retrieved: its outcome no longer matters to anyone
                raise
            if not done:
                self._abandon()
                raise TemporaryError(f"rtnetlink: no answer within {self.timeout:g} s")
            return work.result()

    async def _index(self, name: str | int) -> int:
        if isinstance(name, int):
            return name
        return await self._run(lambda ipr: _lookup(ipr, name))

    async def exists(self, name: str) -> bool:
        return bool(await self._run(lambda ipr: list(ipr.link_lookup(ifname=name))))

    async def create_mesh(self, name: str, algo: str = "BATMAN_IV") -> int:
        """``ip link add NAME type batadv ra ALGO``; returns the new ifindex."""
        await self._run(lambda ipr: ipr.link("add", ifname=name, kind="batadv", algo_name=algo))
        return await self._index(name)

    async def _set(self, name: str | int, **kw: Any) -> None:
        await self._run(lambda ipr: ipr.link("set", index=_lookup(ipr, name), **kw))

    async def delete(self, name: str | int) -> None:
        await self._run(lambda ipr: ipr.link("del", index=_lookup(ipr, name)))

    async def attach(self, meshif: str | int, hardif: str | int) -> None:
        """Enslave a hard interface to the mesh (``ip link set HARDIF master MESHIF``)."""
        await self._run(lambda ipr: ipr.link("set", index=_lookup(ipr, hardif), master=_lookup(ipr, meshif)))

    async def detach(self, hardif: str | int) -> None:
        await self._set(hardif, master=0)

    async def set_mtu(self, name: str | int, mtu: int) -> None:
        await self._set(name, mtu=mtu)

    async def set_up(self, name: str | int, up: bool = True) -> None:
        await self._set(name, state="up" if up else "down")

    async def link(self, name: str | int) -> LinkEvent:
        msgs = await self._run(lambda ipr: list(ipr.link("get", index=_lookup(ipr, name))))
        return _link_event(msgs[0])

    async def links(self) -> list[LinkEvent]:
        return await self._run(lambda ipr: [_link_event(m) for m in ipr.link("dump")])

    def watch(self, on_batch: Callable[[list[bytes], bool], None], rcvbuf: int | None = None) -> Callable[[], None]:
        """Read RTNLGRP_LINK datagrams on the loop as the kernel sends them (a socket of their own)
        and hand each readable batch to ``on_batch(datagrams, lost)``; ``lost``: the kernel
        dropped messages (ENOBUFS), the caller's view may be stale. Returns the function that
        stops watching. Call it on the running loop."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, RTMGRP_LINK))
        loop = asyncio.get_running_loop()

        def readable() -> None:
            datagrams: list[bytes] = []
            lost = False
            while True:
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ENOBUFS: events were lost; the reader is called again for the rest
                    lost = True
                    break
                if not data:
                    break
                datagrams.append(data)
            if datagrams or lost:
                on_batch(datagrams, lost)

        loop.add_reader(sock.fileno(), readable)

        def stop() -> None:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()

        return stop

    async def events(self) -> AsyncIterator[LinkEvent]:
        """RTNLGRP_LINK events, delivered as the kernel sends them (lost ones are not reported:
        the consumer re-reads on the next one)."""
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        marshal = MarshalRtnl()
        queue: asyncio.Queue[LinkEvent] = asyncio.Queue()

        def batch(datagrams: list[bytes], lost: bool) -> None:
            for data in datagrams:
                with contextlib.suppress(Exception):  # a message pyroute2 cannot parse is skipped
                    for msg in marshal.parse(data):
                        if msg.get("event") in ("RTM_NEWLINK", "RTM_DELLINK"):
                            queue.put_nowait(_link_event(msg))

        stop = self.watch(batch, rcvbuf=1 << 20)
        try:
            while True:
                yield await queue.get()
        finally:
            stop()


def _lookup(ipr: Any, name: str | int) -> int:
    """The ifindex of ``name`` (on the rtnetlink thread, with the call that needs it)."""
    if isinstance(name, int):
        return name
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise MeshError(f"no network interface {name!r}", errno.ENODEV)
    return int(found[0])


def _link_event(msg: Any) -> LinkEvent:
    flags = int(msg.get("flags") or 0)
    kind = None
    with contextlib.suppress(Exception):
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return LinkEvent(
        event="del" if msg.get("event") == "RTM_DELLINK" else "new",
        ifindex=int(msg.get("index")),
        ifname=msg.get_attr("IFLA_IFNAME"),
        up=bool(flags & IFF_UP),
        running=bool(flags & IFF_RUNNING),
        operstate=msg.get_attr("IFLA_OPERSTATE"),
        mtu=msg.get_attr("IFLA_MTU"),
        master=msg.get_attr("IFLA_MASTER"),
        kind=kind,
    )


__all__ = ["LinkControl", "LinkEvent", "MeshClient", "MeshError", "ifindex"]
