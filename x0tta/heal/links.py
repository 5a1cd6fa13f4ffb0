"""rtnetlink for the heal loop: hard interface state, detach/attach, link events.

Why not pyroute2's ``AsyncIPRoute``: it opens its netlink socket through
``loop.create_datagram_endpoint``, which uvloop (the agent's loop) refuses for ``AF_NETLINK``
("cannot open a UDP handle, invalid family 16"). So the heal loop keeps one synchronous pyroute2
``IPRoute`` on a dedicated thread (it gets a plain asyncio loop of its own there), and watches
``RTMGRP_LINK`` on a raw netlink socket of its own with ``loop.add_reader``, which every loop
supports. It does not parse the events: any link change makes the loop look at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
IFF_UP = 0x1
IFF_RUNNING = 0x40
RTMGRP_LINK = 0x1
NETLINK_ROUTE = 0


@dataclass(frozen=True, slots=True)
class LinkState:
    name: str
    index: int
    up: bool  # IFF_UP
    running: bool  # IFF_RUNNING: carrier
    master: int | None


class Links:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heal-rtnl")
        self._ipr: Any = None
        self._events: socket.socket | None = None

    async def _run(self, fn: Callable[[Any], T]) -> T:
        def call() -> T:
            if self._ipr is None:
                from pyroute2 import IPRoute

                self._ipr = IPRoute()
            return fn(self._ipr)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def state(self) -> dict[str, LinkState]:
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
        await self._run(lambda ipr: ipr.link("set", index=ipr.link_lookup(ifname=name)[0], master=0))

    async def attach(self, meshif: str, name: str) -> None:
        def do(ipr: Any) -> None:
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], master=ipr.link_lookup(ifname=meshif)[0])

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
                    if not s.recv(65536):
                        break
                    got = True
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # ENOBUFS: events were lost; look anyway
                    got = True
                    break
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
