"""The admission guard against real batman-adv (UML 6.1 kernel, no BTF, no JIT): a node whose MAC
is not admitted never appears in its guarded neighbours' originator tables when enforcing; in
observe mode it does, and the would-be drops are counted. The guest side is guard_guest.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT
from tests.lab import mesh_uml

pytestmark = pytest.mark.lab

C_MACS = {"02:00:00:00:03:01", "02:00:00:00:03:02", "02:00:00:00:03:00"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    why = mesh_uml.available()
    if why:
        pytest.fail(f"the lab cannot run: {why}")
    subprocess.run(["make", "-s", "-C", str(ROOT / "ebpf")], check=True)
    out = tmp_path_factory.mktemp("guard-lab")
    rc, log = mesh_uml.run(out, [mesh_uml.PYTHON, "-m", "tests.lab.guard_guest"], timeout=300)
    assert rc == 0, log[-6000:]
    return {r["mode"]: r for r in json.loads((out / "guard.json").read_text())}


def test_enforce_keeps_non_admitted_node_out_of_every_table(results):
    r = results["enforce"]
    assert r["c_seen"] == []
    # the admitted part of the mesh works: a and b know each other
    assert "02:00:00:00:02:01" in r["originators"]["a"] and "02:00:00:00:01:02" in r["originators"]["b"]
    assert r["a_dropped"] > 0 and r["b_dropped"] > 0
    assert set(r["a_denied_by_mac"]) <= C_MACS and r["a_denied_by_mac"]
    assert r["a_would_drop"] == r["b_would_drop"] == 0
    # c (unguarded) still hears a and b: the frames are dropped on the guarded side only
    assert set(r["c_hears"]) == {"02:00:00:00:01:03", "02:00:00:00:02:03"}


def test_observe_lets_it_in_and_counts_would_be_drops(results):
    r = results["observe"]
    assert set(r["originators"]["a"]) & C_MACS and set(r["originators"]["b"]) & C_MACS
    assert r["a_would_drop"] > 0 and r["b_would_drop"] > 0
    assert r["a_dropped"] == r["b_dropped"] == 0
    assert set(r["b_denied_by_mac"]) <= C_MACS


def test_counters_match_the_traffic_over_bat0(results):
    t = results["enforce"]["traffic"]
    assert t["icmp_packets"] == 5 and t["icmp_bytes"] == 5 * 98, t
    assert t["iperf3_bytes"] and abs(t["udp_payload_counted"] - t["iperf3_bytes"]) / t["iperf3_bytes"] < 0.01, t
