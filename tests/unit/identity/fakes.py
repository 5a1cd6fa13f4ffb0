"""A subsystem context for driving the identity subsystem in tests (the agent's is in x0tta.agent)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from x0tta.common.health import Condition
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.identity.service import IdentityService


@dataclass
class FakeHealth:
    history: list[tuple[Condition, ...]] = field(default_factory=list)

    def set(self, *conditions: Condition) -> None:
        self.history.append(conditions)

    def ok(self) -> None:
        self.set()

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.history[-1]] if self.history else ["<none>"]


@dataclass
class FakeAdmin:
    handlers: dict[str, Any] = field(default_factory=dict)

    def register(self, command: str, handler: Any) -> None:
        self.handlers[command] = handler


@dataclass
class FakeContext:
    settings: AgentSettings
    name: str = "identity"
    node_id: str = "r1"
    state_dir: Path = Path("/nonexistent")
    health: FakeHealth = field(default_factory=FakeHealth)
    admin: FakeAdmin = field(default_factory=FakeAdmin)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tracer: Any = None
    log: Any = field(default_factory=lambda: structlog.get_logger("identity"))


def settings(state: Path, **identity: Any) -> AgentSettings:
    return build(AgentSettings, {"node": {"id": "r1", "state_dir": str(state)}, "identity": identity})


async def until(pred: Callable[[], object], timeout: float = 8.0) -> None:
    """Wait (polling every 20 ms) until ``pred()`` is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(svc: IdentityService, ctx: FakeContext) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(svc.run(ctx))  # type: ignore[arg-type]
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
