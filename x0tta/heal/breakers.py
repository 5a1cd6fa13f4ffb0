"""Circuit breakers (pybreaker) per action kind and target, on a clock the caller controls.

A heal action is a *trial* that spans its execution and its verification: it starts when the
executor runs it and ends when the loop has judged its effect (``success``) or seen it fail
(``failure``: it raised, or it did not help). pybreaker counts consecutive failed trials; at
``fail_max`` the breaker opens and refuses that kind of action on that target until
``reset_timeout`` has passed; then it lets exactly one trial through (half-open), and closes only
if that trial succeeds - otherwise it opens again for another timeout.

pybreaker reads the wall clock itself (``datetime.now(UTC)``, when it opens and when it checks
the timeout). Its state storage is its extension point, so :class:`ClockStorage` records the
opening time on the clock given to :class:`Breakers` and translates it back for pybreaker's
comparison: tests drive time by hand, and a wall-clock step does not open or close a breaker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker

from x0tta.common.errors import TemporaryError

Clock = Callable[[], float]


class BreakerOpen(TemporaryError):
    """The breaker of this action kind and target is open; ``delay`` is when it may try again."""


class VerificationFailed(Exception):
    """Raised into a trial whose action did not help (pybreaker counts it as a failure)."""


class ClockStorage(pybreaker.CircuitMemoryStorage):
    def __init__(self, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self._opened_clock: float | None = None

    def _get_opened_at(self) -> datetime | None:
        if self._opened_clock is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=max(0.0, self._clock() - self._opened_clock))

    def _set_opened_at(self, _ignored: datetime) -> None:
        self._opened_clock = self._clock()

    opened_at = property(_get_opened_at, _set_opened_at)  # type: ignore[assignment]

    def open_for(self) -> float:
        return 0.0 if self._opened_clock is None else max(0.0, self._clock() - self._opened_clock)


class Trial:
    """One guarded action in flight; end it exactly once with :meth:`success` or :meth:`failure`."""

    def __init__(self, breaker: pybreaker.CircuitBreaker, cm: Any) -> None:
        self.breaker = breaker
        self._cm = cm
        self.done = False

    def success(self) -> None:
        if not self.done:
            self.done = True
            self._cm.__exit__(None, None, None)

    def failure(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        exc = VerificationFailed(reason)
        with contextlib.suppress(VerificationFailed, pybreaker.CircuitBreakerError):
            self._cm.__exit__(VerificationFailed, exc, None)


class Breakers:
    """One pybreaker breaker per (action kind, target), created on first use."""

    def __init__(
        self,
        fail_max: int,
        reset_timeout: float,
        clock: Clock,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.clock = clock
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._listeners = [_Listener(on_change)] if on_change else []

    def get(self, kind: str, target: str) -> pybreaker.CircuitBreaker:
        name = f"{kind}:{target}"
        b = self._breakers.get(name)
        if b is None:
            b = pybreaker.CircuitBreaker(
                fail_max=self.fail_max,
                reset_timeout=self.reset_timeout,
                state_storage=ClockStorage(self.clock),
                listeners=self._listeners,
                name=name,
            )
            self._breakers[name] = b
        return b

    def begin(self, kind: str, target: str) -> Trial:
        """Start a trial, or raise :class:`BreakerOpen` with the time left."""
        b = self.get(kind, target)
        cm = b.calling()
        try:
            cm.__enter__()
        except pybreaker.CircuitBreakerError:
            storage = b._state_storage  # our ClockStorage
            left = self.reset_timeout - storage.open_for() if isinstance(storage, ClockStorage) else self.reset_timeout
            raise BreakerOpen(f"breaker {b.name} is open", delay=max(0.0, left)) from None
        return Trial(b, cm)

    def states(self) -> dict[str, str]:
        return {name: b.current_state for name, b in self._breakers.items()}


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: Callable[[str, str], None] | None) -> None:
        self.on_change = on_change

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if self.on_change is not None:
            self.on_change(cb.name or "", new_state.name)
