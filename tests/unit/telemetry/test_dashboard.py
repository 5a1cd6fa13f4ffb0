"""The Grafana dashboard in configs/grafana/ is what x0tta/telemetry/dashboard.py generates, and
its panels read only metrics the agent exports. (That every panel returns series from real agents
is tests/integration/test_prometheus_fleet.py.)"""

from __future__ import annotations

import json

from tests.conftest import ROOT
from tests.unit.telemetry.test_alert_rule_metrics import not_exported
from x0tta.telemetry import dashboard

COMMITTED = ROOT / "configs/grafana/x0tta-fleet.json"


def test_the_committed_dashboard_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == dashboard.render(), \
        "configs/grafana/x0tta-fleet.json is stale: run `make dashboard` and commit it"


def test_every_panel_reads_metrics_the_agent_exports() -> None:
    used = dashboard.metric_names()
    assert len(used) > 20
    missing = not_exported(used)
    assert not missing, f"panels use metrics the agent does not export: {sorted(missing)}"


def test_panels_cover_each_area_and_have_unique_ids_and_titles() -> None:
    doc = json.loads(COMMITTED.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Mesh health", "Heal incidents and harm", "Identity, handshakes and refusals",
                    "Guard and probes", "Fleet"]
    titles = [t for t, _ in dashboard.queries()]
    assert len(titles) == len(set(titles))
    for p in doc["panels"]:
        if p["type"] != "row":
            assert p["targets"][0]["expr"] and "instance" in p["targets"][0]["expr"], p["title"]


def test_zero_per_node_keeps_the_query_and_adds_a_zero_for_every_node() -> None:
    q = dashboard.zero_per_node("sum by (instance) (x0tta_heal_harm_total)")
    assert q.startswith("(sum by (instance) (x0tta_heal_harm_total)) or on (instance) (0 * ")
    assert "x0tta_build_info" in q
    assert dashboard.without_zero(q) == "sum by (instance) (x0tta_heal_harm_total)"
    assert dashboard.without_zero("x0tta_heal_incidents_open") is None
