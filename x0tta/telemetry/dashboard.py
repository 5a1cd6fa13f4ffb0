"""The fleet's Grafana dashboard, as code: every panel and its PromQL, and the JSON Grafana imports.

``configs/grafana/x0tta-fleet.json`` is generated from :data:`PANELS` (``make dashboard``, or
``python -m x0tta.telemetry.dashboard > configs/grafana/x0tta-fleet.json``); a unit test keeps the
committed file equal to what this module writes, and an integration test evaluates every panel's
query against a real Prometheus scraping two agents (tests/integration/test_prometheus_fleet.py).

Each query names only metrics the agent exports (a unit test finds each name in the source of
``x0tta/``). Counters with labels appear on a node's /metrics only once the first event has
happened (a first harmful action, a first refused handshake); a panel over one of them is written
with ``zero_per_node`` so that a node where nothing happened shows 0 rather than "no data", which
a dashboard reader cannot tell from a node that is not scraped.

The dashboard has one variable, ``instance`` (the nodes shown, from ``x0tta_build_info``), and
reads from the data source the importer picks (``DS_PROMETHEUS``).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass

UID = "x0tta-fleet"
TITLE = "x0tta fleet"
NODES = 'instance=~"$instance"'


_ZERO = f" or on (instance) (0 * group by (instance) (x0tta_build_info{{{NODES}}}))"


def zero_per_node(expr: str) -> str:
    """``expr``, or 0 for every scraped node that has no series of it yet."""
    return f"({expr}){_ZERO}"


def without_zero(expr: str) -> str | None:
    """The query a :func:`zero_per_node` panel wraps (also in :func:`queries`' form); None for a
    panel without the zeros."""
    for tail in (_ZERO, _ZERO.replace("$instance", ".*")):
        if expr.endswith(tail):
            return expr[1:-len(tail) - 1]
    return None


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    unit: str = "short"
    legend: str = "{{instance}}"
    kind: str = "timeseries"  # or "stat"
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


PANELS: tuple[Row, ...] = (
    Row("Mesh health", (
        Panel("Agents scraped, by version", f"count by (version) (x0tta_build_info{{{NODES}}})",
              legend="{{version}}", kind="stat", description="Agents exporting metrics, per x0tta version."),
        Panel("Subsystems not ok",
              f'max by (instance, subsystem, state) (x0tta_subsystem_state{{{NODES},state!="ok"}} == 1)',
              legend="{{instance}} {{subsystem}} {{state}}",
              description="Each subsystem that is starting, degraded or failing; `x0tta status` on the node says why."),
        Panel("Subsystem restarts (15 min)",
              zero_per_node(f"sum by (instance) (increase(x0tta_subsystem_restarts_total{{{NODES}}}[15m]))"),
              description="Restarts by the supervisor after a subsystem failed."),
        Panel("batman-adv neighbours", f"x0tta_mesh_neighbors{{{NODES}}}"),
        Panel("batman-adv originators", f"x0tta_mesh_originators{{{NODES}}}"),
        Panel("Gateways", f"x0tta_mesh_gateways{{{NODES}}}"),
        Panel("Reconcile errors (rate)", f"rate(x0tta_mesh_reconcile_errors_total{{{NODES}}}[5m])", unit="ops"),
    )),
    Row("Heal incidents and harm", (
        Panel("Open incidents", f"x0tta_heal_incidents_open{{{NODES}}}"),
        Panel("Actions by outcome (15 min)",
              zero_per_node(f"sum by (instance, outcome) (increase(x0tta_heal_actions_total{{{NODES}}}[15m]))"),
              legend="{{instance}} {{outcome}}"),
        Panel("Harmful actions rolled back (15 min)",
              zero_per_node(f"sum by (instance) (increase(x0tta_heal_harm_total{{{NODES}}}[15m]))"),
              description="Actions after which a link of the node failed: rolled back (docs/heal.md)."),
        Panel("Ineffective actions (30 min)",
              zero_per_node(
                  f'sum by (instance) (increase(x0tta_heal_verifications_total{{{NODES},result="failed"}}[30m]))')),
        Panel("Breakers open",
              zero_per_node(f"count by (instance) (x0tta_heal_breaker_state{{{NODES}}} == 2)")),
        Panel("Mesh alerts (rate)",
              zero_per_node(f"sum by (instance, direction) (rate(x0tta_heal_alerts_total{{{NODES}}}[5m]))"),
              unit="ops", legend="{{instance}} {{direction}}"),
        Panel("MAPE-K cycle p95",
              f"histogram_quantile(0.95, sum by (instance, le) "
              f"(rate(x0tta_heal_cycle_duration_seconds_bucket{{{NODES}}}[5m])))", unit="s"),
        Panel("Agent CPU (share of one CPU)", f"x0tta_heal_agent_cpu_ratio{{{NODES}}}", unit="percentunit"),
        Panel("Strained (backing off)", f"x0tta_heal_strained{{{NODES}}}"),
    )),
    Row("Identity, handshakes and refusals", (
        Panel("SVID expires in", f"x0tta_identity_svid_expires_in_seconds{{{NODES}}}", unit="s"),
        Panel("Peer sessions", zero_per_node(f"sum by (instance) (x0tta_peer_sessions{{{NODES}}})")),
        Panel("Handshakes by result (rate)",
              zero_per_node(f"sum by (instance, result) (rate(x0tta_peer_handshakes_total{{{NODES}}}[5m]))"),
              unit="ops", legend="{{instance}} {{result}}"),
        Panel("Refused handshakes by reason (15 min)",
              zero_per_node(f'sum by (instance, reason) '
                            f'(increase(x0tta_peer_handshakes_total{{{NODES},result="refused"}}[15m]))'),
              legend="{{instance}} {{reason}}",
              description="Each refusal's reason is in docs/peer.md."),
        Panel("Sessions closed by reason (15 min)",
              zero_per_node(f"sum by (instance, reason) (increase(x0tta_peer_sessions_closed_total{{{NODES}}}[15m]))"),
              legend="{{instance}} {{reason}}"),
        Panel("Revoked certificates in force", f"x0tta_identity_revoked_certificates{{{NODES}}}"),
    )),
    Row("Guard and probes", (
        Panel("Threat records by signature (15 min)",
              f"sum by (instance, signature) (increase(x0tta_guard_threats_total{{{NODES}}}[15m]))",
              legend="{{instance}} {{signature}}", description="What each signature means: docs/guard.md."),
        Panel("Guard enforcing / in kernel",
              f'label_replace(x0tta_guard_enforcing{{{NODES}}}, "what", "enforcing", "", "") '
              f'or label_replace(x0tta_guard_in_kernel{{{NODES}}}, "what", "in kernel", "", "")',
              legend="{{instance}} {{what}}"),
        Panel("Admitted MACs by origin", f"sum by (instance, origin) (x0tta_guard_admitted{{{NODES}}})",
              legend="{{instance}} {{origin}}"),
        Panel("Frames dropped / would drop (rate)",
              zero_per_node(f'sum by (instance) (rate(x0tta_probes_guard_dropped_total{{{NODES}}}[5m])) '
                            f'or sum by (instance) (rate(x0tta_probes_guard_would_drop_total{{{NODES}}}[5m]))'),
              unit="pps"),
        Panel("Probes loaded", f"x0tta_probes_up{{{NODES}}}"),
        Panel("Liveness probes (rate)",
              zero_per_node(f"sum by (instance, direction) (rate(x0tta_heal_probes_total{{{NODES}}}[5m]))"),
              unit="ops", legend="{{instance}} {{direction}}"),
    )),
    Row("Fleet", (
        Panel("Connected to the fleet broker", f"x0tta_fleet_connected{{{NODES}}}",
              description="Only nodes with [fleet] broker set export it."),
        Panel("Outbox depth", f"x0tta_fleet_outbox_depth{{{NODES}}}"),
        Panel("Published (rate)", f"rate(x0tta_fleet_published_total{{{NODES}}}[5m])", unit="ops"),
        Panel("Broker reconnects (15 min)", f"increase(x0tta_fleet_reconnects_total{{{NODES}}}[15m])"),
    )),
)


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with ``$instance`` meaning every node) for every panel."""
    return [(p.title, p.expr.replace("$instance", ".*")) for row in PANELS for p in row.panels]


def metric_names() -> set[str]:
    """The x0tta metric names the panels read (a histogram's ``_bucket`` series named as such)."""
    return {m for row in PANELS for p in row.panels for m in re.findall(r"\bx0tta_[a-z_]+", p.expr)}


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, object]:
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
        "gridPos": {"h": 7, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if p.kind == "timeseries" else {},
        "targets": [{"refId": "A", "expr": p.expr, "legendFormat": p.legend,
                     "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}],
    }


def dashboard() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    y, pid = 0, 1
    for row in PANELS:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, p in enumerate(row.panels):
            panels.append(_panel(p, pid, (i % 3) * 8, y + (i // 3) * 7))
            pid += 1
        y += ((len(row.panels) + 2) // 3) * 7
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "uid": UID,
        "title": TITLE,
        "description": "Generated by x0tta/telemetry/dashboard.py; edit that, then `make dashboard`.",
        "tags": ["x0tta", "batman-adv", "mesh"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus"},
            {"name": "instance", "label": "Node", "type": "query",
             "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
             "query": {"query": "label_values(x0tta_build_info, instance)", "refId": "instance"},
             "definition": "label_values(x0tta_build_info, instance)",
             "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]}},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
