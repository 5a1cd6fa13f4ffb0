"""The admission guard against real batman-adv (UML 6.1 kernel, no BTF, no JIT): a node whose MAC
is not admitted never appears in its guarded neighbours' originator tables when enforcing (read
every 100 ms for 2 minutes, while it sends an OGM every 250 ms); in
observe mode it does, and the would-be drops are counted. One lab boot (``x0tta.lab``, nodes a, b, c);
its check step is guard_guest.guard, which builds the triangle in the nodes' namespaces."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT
from x0tta.lab.core.topology import topology_from_data
from x0tta.lab.runner import LabUnavailable, run_lab

pytestmark = pytest.mark.lab

C_MACS = {"02:00:00:00:03:01", "02:00:00:00:03:02", "02:00:00:00:03:00"}
# The nodes' namespaces and nothing else: the check builds the mesh itself, because the guard must
# be attached before batman-adv is enabled on an interface.
TOPOLOGY = {"name": "guard", "agents": False, "nodes": ["a", "b", "c"], "mesh": {"primary": "link"},
            "lab": {"timeout_s": 420}}
SCENARIO = [{"do": "check", "label": "guard", "call": "tests.lab.guard_guest:guard"}]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    subprocess.run(["make", "-s", "-C", str(ROOT / "ebpf")], check=True)
    out = tmp_path_factory.mktemp("guard-lab")
    try:
        result = run_lab(topology_from_data(TOPOLOGY, "guard"), out, scenario=SCENARIO, python_path=[ROOT])
    except LabUnavailable as exc:
        pytest.fail(f"the lab cannot run: {exc}")
    check = result.check("guard")
    assert check["ok"], f"{check.get('traceback')}\n{result.failure_report()[-6000:]}"
    return {r["mode"]: r for r in json.loads((out / "guard.json").read_text())}


def test_enforce_keeps_non_admitted_node_out_of_every_table(results):
    r = results["enforce"]
    assert r["seconds"] >= 120.0, r["seconds"]
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
