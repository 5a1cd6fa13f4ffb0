"""The contract between a subsystem and the agent's supervisor.

A subsystem is a long-running coroutine (:meth:`Subsystem.run`) plus a way to take new settings
(:meth:`Subsystem.reload`). The supervisor in :mod:`x0tta.agent.supervisor` runs each one as an
asyncio task and owns the policy:

* ``run`` returns or is cancelled: the subsystem stopped (shutdown).
* ``run`` raises :class:`~x0tta.common.errors.CapabilityMissing`: the subsystem is reported
  ``degraded`` with the reason and retried slowly (the capability may appear later: a module
  loaded, a socket created).
* ``run`` raises anything else: reported ``failing`` with the reason and restarted with
  exponential backoff. The daemon keeps running.

What a subsystem gets is a :class:`Context`; it never reaches for globals. The concrete context
is built by the composition root (``x0tta.agent``); this module only states its shape, so that the
subsystem packages depend on this contract and not on the agent.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from x0tta.common.health import Condition

if TYPE_CHECKING:  # pragma: no cover - types only
    from opentelemetry.trace import Tracer
    from prometheus_client import CollectorRegistry

    from x0tta.config.schema import AgentSettings


class HealthReporter(Protocol):
    def set(self, *conditions: Condition) -> None:
        """Replace this subsystem's current conditions (none means ok)."""

    def ok(self) -> None:
        """Shorthand for ``set()``."""


AdminHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class AdminRegistry(Protocol):
    def register(self, command: str, handler: AdminHandler) -> None:
        """Serve ``command`` on the admin socket; the handler gets the request's ``args``."""


class Context(Protocol):
    name: str
    node_id: str
    state_dir: Path
    health: HealthReporter
    admin: AdminRegistry
    registry: CollectorRegistry
    tracer: Tracer
    log: Any  # a structlog BoundLogger bound to subsystem=name

    @property
    def settings(self) -> AgentSettings:
        """The settings in force (replaced on a successful reload)."""


class Subsystem(abc.ABC):
    """One supervised part of the agent."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def run(self, ctx: Context) -> None:
        """Run until cancelled. Raise to report failure; the supervisor restarts."""

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        """Take new settings while running. Return False to ask for a restart instead."""
        return False
