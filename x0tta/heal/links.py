"""rtnetlink for the heal loop: hard interface state, detach/attach, link events.

Why not pyroute2's ``AsyncIPRoute``: it opens its netlink socket through
``loop.create_datagram_endpoint``, which uvloop (the agent's loop) refuses for ``AF_NETLINK``
("cannot open a UDP handle, invalid family 16"). So the heal loop keeps one synchronous pyroute2
``IPRoute`` on a dedicated thread (it gets a plain asyncio loop of its own there), and watches
``RTMGRP_LINK`` on a raw netlink socket of its own with ``loop.add_reader``, which every loop
supports. The events carry the whole link (:mod:`x0tta.heal.core.linkmsg`): the loop keeps its
table of links from them and dumps all links only at start, after it may have missed an event
(ENOBUFS, a message it could not decode), after its own attach or detach, and every
``REFRESH`` seconds as a safety net - not every cycle, which was an idle agent's largest cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from x0tta.heal.core.linkmsg import IFF_RUNNING, IFF_UP, LinkState, apply, decode
from x0tta.mesh.core.netlink import NetlinkDecodeError

T = TypeVar("T")
RTMGRP_LINK = 0x1
NETLINK_ROUTE = 0
REFRESH = 30.0  # seconds between full dumps while events keep the table

__all__ = ["LinkState", "Links"]


class Links:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heal-rtnl")
        self._ipr: Any = None
        self._events: socket.socket | None = None
        self._table: dict[str, LinkState] | None = None  # None: dump before trusting it
        self._dumped_at = 0.0
        self.dumps = 0
        self.events = 0

    async def _run(self, fn: Callable[[Any], T]) -> T:
        def call() -> T:
            if self._ipr is None:
                from pyroute2 import IPRoute

                self._ipr = IPRoute()
            return fn(self._ipr)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def state(self, fresh: bool = False) -> dict[str, LinkState]:
        """Every link of this namespace by name: from the event-fed table while it is trusted
        (``fresh``: dumped now, as an action checks before it changes anything)."""
        now = asyncio.get_running_loop().time()
        if not fresh and self._table is not None and self._events is not None and now - self._dumped_at < REFRESH:
            return dict(self._table)
        table = await self._dump()
        if self._events is not None:
            self._table, self._dumped_at = table, now
        return dict(table)

    def _stale(self) -> None:
        self._table = None

    async def _dump(self) -> dict[str, LinkState]:
        self.dumps += 1

        def dump(ipr: Any) -> dict[str, LinkState]:
            out = {}
            for msg in ipr.link("dump"):
                name = msg.get_attr("IFLA_IFNAME")
                flags = int(msg.get("flags") or 0)
                out[name] = LinkState(name, int(msg.get("index")), bool(flags & IFF_UP), bool(flags & IFF_RUNNING),
                                      msg.get_attr("IFLA_MASTER"))
            return out

        return await self._run(dump)

    async def detach(self, name: str) -> None:
        self._stale()  # our own change: read it back instead of racing its event
        await self._run(lambda ipr: ipr.link("set", index=ipr.link_lookup(ifname=name)[0], master=0))

    async def attach(self, meshif: str, name: str) -> None:
        def do(ipr: Any) -> None:
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], master=ipr.link_lookup(ifname=meshif)[0])

        self._stale()
        await self._run(do)

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` (on the loop) whenever the kernel reports a link change."""
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
        s.bind((0, RTMGRP_LINK))
        self._events = s

        def readable() -> None:
            got = False
            while True:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ENOBUFS: events were lost; dump, and look anyway
                    self._stale()
                    got = True
                    break
                if not data:
                    break
                got = True
                self.events += 1
                try:
                    changes = decode(data)
                except NetlinkDecodeError:
                    self._stale()
                    continue
                if self._table is not None:
                    self._table = apply(self._table, changes)
            if got:
                on_change()

        asyncio.get_running_loop().add_reader(s.fileno(), readable)

    async def close(self) -> None:
        if self._events is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._events.fileno())
            self._events.close()
            self._events = None

        def shut(ipr: Any) -> None:
            ipr.close()

        if self._ipr is not None:
            await self._run(shut)
            self._ipr = None
        self._pool.shutdown(wait=True)
