"""Time as a service reads it: one clock, handed in (``clock=``), so that a test can move it.

A service that decides by time (when to poll, how long to back off, when a session must
re-authenticate or an SVID has run out) reads the monotonic and the wall clock, sleeps and waits
with a timeout only through a :class:`Clock`. The agent passes nothing and gets :data:`SYSTEM`:
the host's clocks and asyncio's sleep. Tests pass ``tests.kit.clock.ManualClock``, whose time
moves only when the test advances it, so a 60 s breaker reset or a 4 s SVID costs no real time.

Pure cores take ``now`` as an argument and never see a clock; this module is the bottom layer
beside :mod:`x0tta.common` (which, being pure, may not import ``time`` or ``asyncio``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (intervals, deadlines)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (certificate validity, timestamps that leave the process)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock."""
        ...

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        """``aw``'s result, or TimeoutError (``aw`` cancelled) once ``timeout`` passed on this clock.

        When the caller is cancelled, ``aw`` is cancelled too; if it finished in that same loop turn,
        its result is dropped. An ``aw`` that opens something (a connection) is passed as a task the
        caller keeps, so that whatever it opened can still be closed (``x0tta.peer.tls``'s dial).
        """
        ...


class SystemClock:
    """The host's clocks: ``time.monotonic``, ``time.time``, ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        try:
            await asyncio.wait((task,), timeout=max(0.0, timeout))
        except asyncio.CancelledError:
            task.cancel()
            raise
        return await outcome(task)


SYSTEM: Clock = SystemClock()


async def outcome(task: asyncio.Future[T]) -> T:
    """The end of a wait with a timeout, once the wait is over: ``task``'s result if it finished,
    else cancel it, let it end and raise TimeoutError.

    Not ``asyncio.wait_for``: on Python 3.11 it returns the result, swallowing the cancellation,
    when its caller is cancelled in the same loop turn in which the awaited thing finishes, and a
    service loop cancelled that way runs on and is never stopped.
    """
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))  # a cancellation of the caller here propagates
    if task.cancelled():
        raise TimeoutError
    return task.result()
