"""The heal loop's view of the links: a table of link states over mesh's :class:`LinkControl`.

Why: the heal loop reads every hard interface's carrier and mesh membership each cycle, and
detaches or attaches one when it acts. The rtnetlink work itself - the synchronous pyroute2
``IPRoute`` on a thread of its own (pyroute2's ``AsyncIPRoute`` does not run on uvloop), the
timeout on each call, the kernel's refusals mapped to :class:`~x0tta.mesh.genl.MeshError`, the
raw ``RTMGRP_LINK`` socket watched with ``loop.add_reader`` - is
:class:`~x0tta.mesh.client.LinkControl`'s, the agent's one rtnetlink stack; this module keeps only
what the loop needs on top of it.

How: the events carry the whole link (:mod:`x0tta.heal.core.linkmsg`): the loop keeps its table
of links from them and dumps all links only at start, after it may have missed an event (ENOBUFS,
a message it could not decode), after its own attach or detach, and every ``REFRESH`` seconds as
a safety net - not every cycle, which was an idle agent's largest cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from x0tta.heal.core.linkmsg import LinkState, apply, decode
from x0tta.mesh.client import LinkControl
from x0tta.mesh.core.netlink import NetlinkDecodeError

REFRESH = 30.0  # seconds between full dumps while events keep the table

__all__ = ["LinkState", "Links"]


class Links:
    def __init__(self, control: LinkControl | None = None) -> None:
        self.control = control if control is not None else LinkControl(thread="heal-rtnl")
        self._stop_watch: Callable[[], None] | None = None
        self._table: dict[str, LinkState] | None = None  # None: dump before trusting it
        self._dumped_at = 0.0
        self.dumps = 0
        self.events = 0

    async def state(self, fresh: bool = False) -> dict[str, LinkState]:
        """Every link of this namespace by name: from the event-fed table while it is trusted
        (``fresh``: dumped now, as an action checks before it changes anything)."""
        now = asyncio.get_running_loop().time()
        watching = self._stop_watch is not None
        if not fresh and self._table is not None and watching and now - self._dumped_at < REFRESH:
            return dict(self._table)
        table = await self._dump()
        if self._stop_watch is not None:
            self._table, self._dumped_at = table, now
        return dict(table)

    def _stale(self) -> None:
        self._table = None

    async def _dump(self) -> dict[str, LinkState]:
        self.dumps += 1
        return {ev.ifname: LinkState(ev.ifname, ev.ifindex, ev.up, ev.running, ev.master)
                for ev in await self.control.links() if ev.ifname is not None}

    async def detach(self, name: str) -> None:
        self._stale()  # our own change: read it back instead of racing its event
        await self.control.detach(name)

    async def attach(self, meshif: str, name: str) -> None:
        self._stale()
        await self.control.attach(meshif, name)

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` (on the loop) whenever the kernel reports a link change."""

        def batch(datagrams: list[bytes], lost: bool) -> None:
            if lost:  # events were lost: dump, and look anyway
                self._stale()
            for data in datagrams:
                self.events += 1
                try:
                    changes = decode(data)
                except NetlinkDecodeError:
                    self._stale()
                    continue
                if self._table is not None:
                    self._table = apply(self._table, changes)
            on_change()

        self._stop_watch = self.control.watch(batch)

    async def close(self) -> None:
        if self._stop_watch is not None:
            self._stop_watch()
            self._stop_watch = None
        await self.control.close()
