"""A rollout that breaks routing, on real batman-adv (User-Mode Linux), stopped by its own criteria
(issue 14's lab acceptance). One boot of a 4-node ring with an agent on every node.

* etcd (one member, TLS with client certificates) runs in the guest's root namespace; every node
  reaches it over a management link of its own, off the mesh (tests/lab/rollout_guest.py), as a
  gateway's out-of-band link would: the change under test cuts the node's mesh links, and the
  node must still be able to report;
* the operator signs (the hybrid Ed25519 + ML-DSA-65 key of ``x0tta fleet keygen``) a rollout of
  ``mesh.drained = ["to-*"]`` to every node in waves of one, with a 15 s soak: the node that takes
  the first turn holds all its mesh links out of batman-adv, its originators go (batman-adv purges
  the routes of a removed interface at once), and its health sample at the end of the soak says so;
* the rollout must then be aborted by its criteria after that first wave and rolled back: the
  node's links are back in bat0, the mesh converges again, and no other node ever applied the
  change (no ``coord_applied`` and no ``mesh_drained`` in their agents' logs).

Run it (root, the lab's packages, etcd-server; ~3-4 min):

    sudo .venv/bin/python -m pytest -q -p no:cacheprovider tests/lab/test_rollout_lab.py

Figures (when the first node applied, reported, and was rolled back; how long the mesh took to
converge after) are written to ``rollout-figures.json`` in the run's directory; nothing fails on a
duration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.kit.etcd import server_cert
from tests.kit.pki import TestCA
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import AbortCriteria, Change, Rollout
from x0tta.identity.core.operator import OperatorKey
from x0tta.lab.core.topology import topology_from_data
from x0tta.lab.runner import LabUnavailable, run_lab

pytestmark = pytest.mark.lab

GUEST = Path(__file__).with_name("rollout_guest.py")
NODES = ["n1", "n2", "n3", "n4"]
RID = "drain-all-links"
ETCD = "https://10.98.0.1:2379"  # rollout_guest.ENDPOINT (not imported: it is a guest file)
PREFIX = "/x0tta-lab"  # rollout_guest.PREFIX


def topology(files: Path) -> dict:
    coord = {"endpoints": [ETCD], "cert_file": str(files / "node.pem"), "key_file": str(files / "node.key"),
             "ca_file": str(files / "ca.pem"), "operator_key_file": str(files / "operator.pub.pem"),
             "prefix": PREFIX, "poll_interval": 0.5, "turn_ttl": 20, "request_timeout": 3.0}
    return {"name": "rollout", "agents": True, "nodes": NODES,
            "links": ["n1-n2", "n2-n3", "n3-n4", "n4-n1"],
            "mesh": {"routing_algo": "BATMAN_IV"},
            "agent": {"coord": coord},
            "lab": {"mem_mb": 896}}


def scenario(files: Path) -> list[dict]:
    def check(label: str, fn: str, **kw) -> dict:
        return {"do": "check", "label": label, "call": f"{GUEST}:{fn}", **kw}

    d = {"files": str(files)}
    return [
        check("etcd", "etcd_up", args=d),
        {"do": "converge", "label": "converged", "timeout_s": 90},
        check("start", "start_rollout", args=d),
        check("end", "rollout_end", args={**d, "rollout": RID}),
        {"do": "converge", "label": "reconverged", "timeout_s": 90},
        check("links-back", "hardifs_active", each_node=True, nodes=NODES),
    ]


def prepare(files: Path) -> None:
    """Certificates (etcd's own CA, ECDSA: etcd's Go TLS verifies no ML-DSA) and the signed rollout."""
    files.mkdir(parents=True, exist_ok=True)
    ca = TestCA("etcd.lab", kind="p256")
    (files / "ca.pem").write_bytes(ca.cert_pem)
    server_cert(ca, files, "etcd", ips=("10.98.0.1", "127.0.0.1"))
    for name in ("node", "operator"):  # one client certificate for every agent: etcd checks the CA only
        leaf = ca.issue(path=f"/lab/{name}", kind="p256", ttl=86400.0)
        (files / f"{name}.pem").write_bytes(leaf.cert_pem)
        (files / f"{name}.key").write_bytes(leaf.key_pem)
    operator = OperatorKey.generate()
    (files / "operator.pub.pem").write_bytes(operator.public.to_pem())
    doc = Rollout(RID, Change("mesh.drained", ["to-*"]), ("n*",), wave=1, soak=15.0,
                  abort=AbortCriteria(worse_share=0.2, heal_harm=100, lost_originators=0), operator="lab")
    (files / "doc.json").write_text(json.dumps(doc.to_json()))
    (files / "doc.sig").write_bytes(json.dumps(operator.sign(core.signed_bytes(doc)).to_json()).encode())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollout-lab")
    files = out / "rollout"  # inside the run's directory: the guest sees it at the same path
    prepare(files)
    try:
        result = run_lab(topology_from_data(topology(files), "rollout"), out, scenario=scenario(files),
                         python_path=[ROOT])
    except LabUnavailable as exc:
        pytest.fail(f"the lab cannot run: {exc}")
    for label in ("etcd", "start", "end"):
        check = result.check(label)
        assert check["ok"], f"{label}: {check.get('error')}\n{check.get('traceback')}\n" + (
            (files / "etcd.log").read_text()[-3000:] if (files / "etcd.log").exists() else "") + \
            result.failure_report()[-6000:]
    end = result.check("end")["result"]
    logs = {n: _events(out / "agents" / f"{n}.log") for n in NODES}
    figures = {"start": result.check("start")["result"], "end_t": end["t"], "state": end["state"],
               "records": end["records"]}
    (out / "rollout-figures.json").write_text(json.dumps(figures, indent=1))
    return {"result": result, "end": end, "logs": logs, "out": out}


def _events(log: Path) -> list[dict]:
    """The agent's JSON log lines (others - a traceback - left out)."""
    events = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_the_first_node_lost_its_routes_and_the_criteria_aborted_after_the_first_wave(run):
    state = run["end"]["state"]
    assert state["phase"] == "rolled_back", state
    assert len(state["order"]) == 1, state["order"]
    first = state["order"][0]
    rec = state["nodes"][first]
    assert rec["step"] == "rolled_back" and rec["worse"] and rec["lost_originators"] > 0, rec
    assert "originators lost" in state["reason"] or "worse on 1 of 1" in state["reason"], state["reason"]
    (record,) = [r for r in run["end"]["records"] if r["node"] == first]
    assert record["outcome"] == "worse" and "rolled_back_at" in record, record
    names = [e.get("event") for e in run["logs"][first]]
    assert "coord_applied" in names and "mesh_drained" in names and "coord_rolled_back" in names


def test_the_other_nodes_never_saw_the_change(run):
    first = run["end"]["state"]["order"][0]
    assert [r["node"] for r in run["end"]["records"]] == [first]
    for node in NODES:
        if node == first:
            continue
        names = {e.get("event") for e in run["logs"][node]}
        assert not names & {"coord_applied", "coord_turn_taken", "mesh_drained"}, (node, names)


def test_the_rolled_back_node_is_in_the_mesh_again(run):
    result = run["result"]
    back = result.check("links-back")
    assert back["ok"], back
    assert result.event("reconverged")["ok"], result.failure_report()[-4000:]
