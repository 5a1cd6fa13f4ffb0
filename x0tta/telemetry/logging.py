"""Structured logs: JSON lines on stdout (journald keeps them), readable on a terminal.

Every line carries ``timestamp`` (RFC 3339, UTC), ``level``, ``subsystem``, ``event``, ``node``
and, inside an OpenTelemetry span, ``trace_id`` and ``span_id`` so that a log line leads to its
trace. Levels are per subsystem: ``[logging] levels = {mesh = "debug"}``.

The filter is a processor that reads the level table on each call, so a SIGHUP reload changes
levels without rebuilding loggers that subsystems already hold.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from opentelemetry import trace

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class LevelTable:
    """Default level plus per-subsystem overrides; swapped atomically on reload."""

    def __init__(self, default: str = "info", per_subsystem: dict[str, str] | None = None) -> None:
        self.update(default, per_subsystem or {})

    def update(self, default: str, per_subsystem: dict[str, str]) -> None:
        self._table = (_LEVELS[default], {k: _LEVELS[v] for k, v in per_subsystem.items()})

    def enabled(self, subsystem: str | None, level: str) -> bool:
        default, per = self._table
        threshold = per.get(subsystem, default) if subsystem else default
        return _LEVELS.get(level, 20) >= threshold


LEVELS = LevelTable()


def _filter(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    level = "warning" if method == "warn" else method
    if level == "exception":
        level = "error"
    if not LEVELS.enabled(event.get("subsystem"), level):
        raise structlog.DropEvent
    return event


def _add_trace(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


_FIRST = ("timestamp", "level", "node", "subsystem", "event")


def _order(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Put the fields an operator scans first at the start of each line."""
    head = {k: event.pop(k) for k in _FIRST if k in event}
    head.update(event)
    return head


def configure(
    *,
    node_id: str,
    level: str = "info",
    levels: dict[str, str] | None = None,
    fmt: str = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the process (called once by the agent or the CLI)."""
    out = stream or sys.stdout
    LEVELS.update(level, levels or {})
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            _filter,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace,
            structlog.processors.format_exc_info,
            _order,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(node=node_id)
    # Libraries that use stdlib logging (pyroute2, grpc, opentelemetry) end up in the same stream.
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(name)s %(levelname)s %(message)s")


def get_logger(subsystem: str) -> Any:
    return structlog.get_logger().bind(subsystem=subsystem)
