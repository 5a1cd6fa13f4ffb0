"""A subsystem's context outside the agent, for tests, benchmarks and the lab's in-guest checks.

It states the same shape as :class:`x0tta.common.subsystem.Context` and is real where it
matters (a private metrics registry, a structlog logger, an OpenTelemetry tracer); what a
subsystem reports through it (health conditions, admin commands) is recorded for inspection.
"""

from __future__ import annotations

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
