"""Neighbour link-quality labels stay under metrics.max_label_values; the rest is counted."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from x0tta.mesh.service import _Metrics


def series(reg: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["neighbor"]: s.value
        for m in reg.collect()
        if m.name == "x0tta_mesh_neighbor_link_quality"
        for s in m.samples
    }


def overflow(reg: CollectorRegistry) -> float:
    return reg.get_sample_value("x0tta_mesh_label_overflow_total", {"metric": "x0tta_mesh_neighbor_link_quality"}) or 0


def test_cap_keeps_known_neighbours_and_counts_the_rest() -> None:
    reg = CollectorRegistry()
    m = _Metrics(reg, cap=2)
    m.set_neighbors({("aa", "wlan0", "tq"): 200, ("bb", "wlan0", "tq"): 100})
    assert series(reg) == {"aa": 200, "bb": 100}
    # a third neighbour appears: the two already exported keep their series, the newcomer is counted
    m.set_neighbors({("aa", "wlan0", "tq"): 201, ("bb", "wlan0", "tq"): 101, ("00", "wlan0", "tq"): 50})
    assert series(reg) == {"aa": 201, "bb": 101}
    assert overflow(reg) == 1
    # one leaves: its series goes, and the slot is free for the newcomer
    m.set_neighbors({("aa", "wlan0", "tq"): 202, ("00", "wlan0", "tq"): 51})
    assert series(reg) == {"aa": 202, "00": 51}
    assert overflow(reg) == 1


def test_exposition_passes_promtool() -> None:
    import shutil
    import subprocess

    from prometheus_client import generate_latest

    promtool = shutil.which("promtool")
    assert promtool, "promtool is part of the project's environment (apt: prometheus)"
    reg = CollectorRegistry()
    m = _Metrics(reg, cap=4)
    m.originators.set(3)
    m.neighbors.set(1)
    m.gateways.set(1)
    m.set_neighbors({("aa:bb:cc:dd:ee:ff", "wlan0", "tq"): 200})
    m.table_entries.labels("translocal").set(3)
    m.actions.labels("set_mesh").inc()
    m.drift.labels("orig_interval").inc()
    m.errors.inc()
    m.overflow.labels("x0tta_mesh_neighbor_link_quality").inc()
    res = subprocess.run([promtool, "check", "metrics"], input=generate_latest(reg), capture_output=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
