"""Prometheus metrics: the agent's registry, its own metrics, and bounded label sets.

Conventions (https://prometheus.io/docs/practices/naming/): prefix ``x0tta_``, base units
(seconds, bytes), counters end in ``_total``. One registry per agent (not the library's global
one) so tests can run several agents in a process.

Labels fed from the network (neighbour MACs, flows, peer ids) go through :class:`LabelCap`: the
first ``max_values`` distinct values get their own series, later ones are counted in
``x0tta_metrics_label_overflow_total{metric=...}`` instead, so a large or hostile mesh cannot
grow the scrape without bound.
"""

from __future__ import annotations

import platform
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.process_collector import ProcessCollector

from x0tta import __version__
from x0tta.common.health import Health, Severity


class AgentMetrics:
    """The metrics the agent itself owns: build info, health and restarts per subsystem."""

    def __init__(self, registry: CollectorRegistry, node_id: str) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        Info("x0tta_build", "Version and platform of this agent.", registry=registry).info(
            {"version": __version__, "python": platform.python_version(), "node": node_id}
        )
        self.state = Gauge(
            "x0tta_subsystem_state",
            "1 for the current health state of each subsystem, 0 for the others.",
            ["subsystem", "state"],
            registry=registry,
        )
        self.restarts = Counter(
            "x0tta_subsystem_restarts_total",
            "Restarts of a subsystem by the supervisor after it failed.",
            ["subsystem"],
            registry=registry,
        )
        self.reloads = Counter(
            "x0tta_config_reloads_total",
            "Configuration reloads (SIGHUP) by result.",
            ["result"],
            registry=registry,
        )
        self.start_time = Gauge(
            "x0tta_agent_start_time_seconds", "Unix time when the agent started.", registry=registry
        )
        self.label_overflow = Counter(
            "x0tta_metrics_label_overflow_total",
            "Samples folded away because a metric reached its cap of distinct label values.",
            ["metric"],
            registry=registry,
        )

    def observe_health(self, health: Health) -> None:
        current = health.state
        for sev in Severity:
            self.state.labels(health.subsystem, sev.label).set(1 if sev == current else 0)


class LabelCap:
    """Admit at most ``max_values`` distinct label values for one metric; count the rest."""

    def __init__(self, metric: str, max_values: int, overflow: Counter) -> None:
        self.metric = metric
        self.max_values = max_values
        self._overflow = overflow
        self._seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def admit(self, *values: str) -> bool:
        """True when ``values`` may be used as labels; False (and counted) when over the cap."""
        with self._lock:
            if values in self._seen:
                return True
            if len(self._seen) < self.max_values:
                self._seen.add(values)
                return True
        self._overflow.labels(self.metric).inc()
        return False

    def forget(self, *values: str) -> None:
        """Release a value whose series was removed (a neighbour gone for good)."""
        with self._lock:
            self._seen.discard(values)
