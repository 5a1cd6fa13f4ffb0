"""A clock that moves only when the test says so: :class:`x0tta.clock.Clock` for tests.

Hand it to a service (``HealService(clock=...)``, ``PeerService(clock=...)``) or pass its
``monotonic`` where a callable is asked for (``Breakers``, ``Executor``). :meth:`ManualClock.advance`
moves both the monotonic and the wall time and wakes every :meth:`~ManualClock.sleep` and
:meth:`~ManualClock.wait_for` whose time has come; the woken tasks run at the test's next await
(:meth:`~ManualClock.pass_time` advances and lets them run). Nothing here ever sleeps for real.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from x0tta.clock import outcome

T = TypeVar("T")

WALL_START = 1_800_000_000.0  # 2027-01-15: a fixed, recognisable epoch time for a manual run


class ManualClock:
    def __init__(self, monotonic: float = 1000.0, wall: float = WALL_START) -> None:
        self._mono = monotonic
        self._wall = wall
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    @property
    def sleepers(self) -> int:
        """How many sleeps and timeouts are waiting for time to pass."""
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    def pending(self) -> list[float]:
        """Seconds until each waiting sleep or timeout is due, soonest first."""
        return sorted(at - self._mono for at, _, fut in self._sleepers if not fut.done())

    def advance(self, seconds: float) -> None:
        """Move both clocks ``seconds`` forward and wake whatever is due by then."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds
        self._wall += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def pass_time(self, seconds: float, step: float | None = None) -> None:
        """Advance by ``seconds`` (in ``step``s, letting the loop run after each), as a running
        service would see it: a task woken by one step can schedule the next sleep before the next."""
        step = seconds if step is None else step
        left = seconds
        while left > 1e-12:
            dt = min(step, left)
            self.advance(dt)
            left -= dt
            for _ in range(5):  # woken tasks run, and what they wake in turn
                await asyncio.sleep(0)

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        """A future that completes once ``seconds`` have passed, counted from now (not from when
        a task first runs: a timeout set before the test advances must see that advance)."""
        fut = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            fut.set_result(None)
        else:
            heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        return fut

    def call_later(self, seconds: float, callback: Callable[..., object], *args: object) -> asyncio.Future[None]:
        """``callback(*args)`` from the loop once ``seconds`` have passed (a fake net's delayed
        datagram); cancel the returned future to call it off."""
        fut = self._timer(seconds)
        fut.add_done_callback(lambda f: None if f.cancelled() else callback(*args))
        return fut

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self._timer(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        timer = self._timer(timeout)
        try:
            await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        return await outcome(task)
