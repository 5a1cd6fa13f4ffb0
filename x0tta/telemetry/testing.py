"""A subsystem's context outside the agent, for tests, benchmarks and the lab's in-guest checks.

It states the same shape as :class:`x0tta.common.subsystem.Context` and is real where it
matters (a private metrics registry, a structlog logger, an OpenTelemetry tracer); what a
subsystem reports through it (health conditions, admin commands) is recorded for inspection.
:func:`running` runs a subsystem in it for the length of a block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from x0tta.common.health import Condition


@dataclass
class RecordedHealth:
    history: list[tuple[Condition, ...]] = field(default_factory=list)

    def set(self, *conditions: Condition) -> None:
        self.history.append(conditions)

    def ok(self) -> None:
        self.set()

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The conditions in force now (none reported yet: none)."""
        return self.history[-1] if self.history else ()

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.history[-1]] if self.history else ["<none>"]


@dataclass
class RecordedAdmin:
    handlers: dict[str, Any] = field(default_factory=dict)

    def register(self, command: str, handler: Any) -> None:
        self.handlers[command] = handler


@dataclass
class StandaloneContext:
    settings: Any
    name: str = "standalone"
    node_id: str = "n1"
    state_dir: Path = Path("/nonexistent")
    health: RecordedHealth = field(default_factory=RecordedHealth)
    admin: RecordedAdmin = field(default_factory=RecordedAdmin)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tracer: Any = field(default_factory=lambda: trace.get_tracer("x0tta.standalone"))
    log: Any = field(default_factory=structlog.get_logger)


@contextlib.asynccontextmanager
async def running(service: Any, ctx: Any, ready_timeout: float = 15.0) -> AsyncIterator[Any]:
    """Run a subsystem's ``run(ctx)`` as a task until the block ends (then cancel it). A subsystem
    with a ``wait_ready`` (the peer subsystem: listening) is waited for, up to ``ready_timeout``."""
    task = asyncio.create_task(service.run(ctx))
    try:
        wait_ready = getattr(service, "wait_ready", None)
        if wait_ready is not None:
            await wait_ready(ready_timeout)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
