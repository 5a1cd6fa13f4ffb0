"""Waiting for a condition that real I/O will make true: poll, and fail saying what was last seen.

``await until(pred)`` in async tests, ``until_sync(pred)`` where a test drives processes from
plain code. ``pred`` returns a truthy value when the wait is over (that value is returned) and may
be a coroutine function. Exceptions of the types in ``ignore`` count as "not yet" (an agent whose
admin socket is not listening yet); the last one is named in the failure, with ``what`` (what was
awaited, for a lambda whose name says nothing). :func:`took` says how long a wait took, where
waits are figures in a report.

These wait on real time, for sockets, processes and kernels. A service waiting for its own timers
runs on ``tests.kit.clock.ManualClock`` instead, and the test moves the time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


class _Poll:
    def __init__(self, pred: Callable[[], Any], timeout: float, ignore: tuple[type[BaseException], ...],
                 what: str = "") -> None:
        self.pred, self.timeout, self.ignore, self.what = pred, timeout, ignore, what
        self.end = time.monotonic() + timeout
        self.last: object = None

    def caught(self, exc: BaseException) -> None:
        if not isinstance(exc, self.ignore):
            raise exc
        self.last = exc

    def check_time(self) -> None:
        if time.monotonic() >= self.end:
            name = self.what or getattr(self.pred, "__name__", repr(self.pred))
            raise AssertionError(f"condition {name} not reached within {self.timeout} s; last: {self.last!r}")


async def until(pred: Callable[[], Any], timeout: float = 10.0, *, interval: float = 0.02,
                ignore: tuple[type[BaseException], ...] = (), what: str = "") -> Any:
    """Poll ``pred()`` every ``interval`` seconds until it is truthy; its value."""
    poll = _Poll(pred, timeout, ignore, what)
    while True:
        try:
            got = pred()
            if inspect.isawaitable(got):
                got = await got
            if got:
                return got
            poll.last = got
        except Exception as exc:
            poll.caught(exc)
        poll.check_time()
        await asyncio.sleep(interval)


def until_sync(pred: Callable[[], Any], timeout: float = 15.0, *, interval: float = 0.1,
               ignore: tuple[type[BaseException], ...] = (), what: str = "") -> Any:
    """:func:`until` for code without an event loop: it runs one for the wait."""
    return asyncio.run(until(pred, timeout, interval=interval, ignore=ignore, what=what))


async def took(pred: Callable[[], Any], timeout: float, *, interval: float = 0.02,
               missing_ok: bool = False) -> float | None:
    """Seconds until ``pred()`` is truthy, polled as :func:`until` does. When it never is: the
    failure, or None with ``missing_ok`` (a figure that was not reached)."""
    start = time.monotonic()
    try:
        await until(pred, timeout, interval=interval)
    except AssertionError:
        if missing_ok:
            return None
        raise
    return time.monotonic() - start
