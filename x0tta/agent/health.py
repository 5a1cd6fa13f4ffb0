"""The board where subsystems post their health, read by /readyz, ``x0tta status`` and metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from x0tta.common.health import STARTING, Condition, Health, Severity, overall


class HealthBoard:
    def __init__(self, on_change: Callable[[Health], None] | None = None, clock: Callable[[], float] = time.time):
        self._health: dict[str, Health] = {}
        self._on_change = on_change
        self._clock = clock

    def add(self, subsystem: str) -> None:
        self.post(subsystem, (STARTING("not started yet"),))

    def post(self, subsystem: str, conditions: tuple[Condition, ...], restarts: int | None = None) -> None:
        old = self._health.get(subsystem)
        new_restarts = old.restarts if (restarts is None and old) else (restarts or 0)
        since = old.since if old and old.conditions == conditions else self._clock()
        health = Health(subsystem, conditions, new_restarts, since)
        self._health[subsystem] = health
        if self._on_change is not None and health != old:
            self._on_change(health)

    def get(self, subsystem: str) -> Health:
        return self._health[subsystem]

    def all(self) -> list[Health]:
        return [self._health[k] for k in sorted(self._health)]

    def ready(self) -> bool:
        return overall(self.all()) < Severity.FAILING


class Reporter:
    """What a subsystem holds: ``set`` its conditions, nothing else."""

    def __init__(self, board: HealthBoard, subsystem: str) -> None:
        self._board = board
        self._name = subsystem

    def set(self, *conditions: Condition) -> None:
        self._board.post(self._name, tuple(conditions))

    def ok(self) -> None:
        self.set()
