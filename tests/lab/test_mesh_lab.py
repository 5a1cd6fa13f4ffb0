"""batman-adv for real: the mesh client and subsystem against batman-adv 2022.3 in User-Mode Linux.

One lab boot (about a minute here; ``x0tta.lab`` with the check steps of tests/lab/mesh_guest.py)
builds five namespaces in a line with two meshes (bat0 BATMAN_IV, bat1 BATMAN_V), waits for
convergence, then (tests/lab/mesh_checks.py):

* on every node and both meshes: originators, neighbours, gateways, hard interfaces and mesh
  settings read by MeshClient equal ``batctl meshif X <table>_json`` read right after;
* the mesh subsystem applies a [mesh] section changing every tunable, each reads back through
  batctl; a hand change with batctl is put back within one reconcile period and counted as drift;
* the real agent (x0tta-agent, uvloop) shows through its admin socket what batctl shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.lab import mesh_guest
from x0tta.lab.runner import LabUnavailable

pytestmark = pytest.mark.lab
NODES = 5  # the acceptance's lab size


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mesh-lab")
    try:
        result = mesh_guest.run(root, "lab", NODES)
    except LabUnavailable as exc:
        pytest.skip(f"UML mesh lab cannot run here: {exc}")
    out = root / "mesh"
    progress = (out / "progress.log").read_text() if (out / "progress.log").exists() else ""
    assert (out / "summary.json").exists(), f"{progress}\n{result.failure_report()}"
    return out


def read_report(lab: Path, name: str, check: str | None = None) -> Any:
    """A check's JSON report; when the check wrote none, fail with what that check printed."""
    path = lab / f"{name}.json"
    if not path.exists():
        log = lab / f"{check or name}.log"
        pytest.fail(f"{check or name} wrote no {path.name}:\n{log.read_text() if log.exists() else '(no log)'}")
    return json.loads(path.read_text())


def test_client_tables_equal_batctl_on_every_node(lab: Path) -> None:
    for node in (f"x0m{i}" for i in range(1, NODES + 1)):
        report = read_report(lab, node, f"compare.{node}")
        assert len(report) == 10  # 5 views x 2 meshes
        for view, result in report.items():
            assert result["differences"] == [], (node, view, result)
        assert report["bat0.originators"]["entries"] >= NODES - 1 and report["bat1.originators"]["entries"] >= NODES - 1


def test_every_tunable_reads_back_through_batctl(lab: Path) -> None:
    report = read_report(lab, "reconcile")
    bad = {cmd: r for cmd, r in report["readback"].items() if not r["ok"]}
    assert not bad
    assert len(report["readback"]) == 14


def test_hand_changes_are_reverted_within_one_period_and_counted(lab: Path) -> None:
    report = read_report(lab, "reconcile")
    for cmd, r in report["reverts"].items():
        assert r["within_period"], (cmd, r)
        assert r["drift_counted"] >= 1, (cmd, r)
    assert "mesh_drift_corrected" in report["log_events"]
    # detached by hand (no batadv event, only RTNLGRP_LINK): attached again well within the period
    assert report["reattach"]["after_s"] is not None and report["reattach"]["after_s"] < 3.0, report["reattach"]
    assert report["health"] == []


def test_metrics_and_admin_views(lab: Path) -> None:
    report = read_report(lab, "reconcile")
    assert report["metrics"]["originators"] == NODES - 1
    assert report["metrics"]["gateways"] == 1  # x0m3 still announces itself
    assert report["observe"]["transglobal"] > 0
    admin = report["admin"]
    assert set(admin) == {f"mesh.{v}" for v in
                          ("originators", "neighbors", "gateways", "interfaces", "settings", "translocal",
                           "transglobal")}
    assert admin["mesh.settings"]["orig_interval"] == 700
    assert {o["orig_address"] for o in admin["mesh.originators"]} >= {admin["mesh.neighbors"][0]["neigh_address"]}


def test_links_events_and_a_mesh_built_from_nothing(lab: Path) -> None:
    r = read_report(lab, "links")
    assert r["created_algo"] == "BATMAN_V"  # the batadv link kind with IFLA_BATADV_ALGO_NAME
    assert r["attached"] == ["x7a"] and r["master_is_bat7"] and r["mtu"] == 1560
    assert r["after_detach"] == [] and r["deleted"]
    assert r["tp_meter"]["result"] == 3 and r["tp_meter"]["bytes"] > 0, r["tp_meter"]  # TP_REASON_COMPLETE
    for key in ("created_event", "down_event_s", "up_event_s", "config_event_s", "hardif_event_s"):
        assert r[key] is not None and r[key] < 1.0, (key, r[key])  # delivered as they happen
    assert r["service_actions"] == ["create_mesh bat8", "attach x7b", "up bat8", "set_mesh bat8", "set_hardif x7b"]
    assert (r["bat8_algo"], r["bat8_orig_interval"], r["bat8_hardifs"], r["x7b_hop_penalty"], r["bat8_up"]) == (
        "BATMAN_V", "800", ["x7b"], "20", True
    )


def test_cli_reads_netlink_directly_without_an_agent(lab: Path) -> None:
    r = read_report(lab, "cli")
    for view, result in r.items():
        assert result["rc"] == 0 and result["text_rc"] == 0, (view, result["stderr"])
        assert result["entries"] > 0, view
    assert "originator" in r["originators"]["text"] and "TQ" in r["originators"]["text"]


def test_the_running_agent_shows_what_batctl_shows(lab: Path) -> None:
    r = read_report(lab, "agent")
    assert r["status"][0]["state"] == "ok", r["status"]
    for view in ("originators", "neighbors", "gateways", "interfaces", "settings"):
        assert r[view]["differences"] == [], (view, r[view])
    assert r["gw_mode_applied"].startswith("client")
    assert r["exit"] == 0  # SIGTERM: a clean stop
