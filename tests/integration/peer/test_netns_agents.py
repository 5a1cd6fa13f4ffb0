"""Acceptance: two agents in two network namespaces hold a PQC mTLS session; every bad client is
refused with its own reason, in the target agent's logs and metrics.

Topology: netns ``<p>a`` (10.231.N.1) -- veth -- netns ``<p>b`` (10.231.N.2), each running a real
``x0tta-agent`` with ML-DSA-65 SVIDs from the built-in CA. The attacker runs in ``<p>a`` and
connects to agent b over the veth, like a hostile neighbour would.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, require_root
from tests.kit.netns import scratch_netns, sh
from tests.kit.ports import free_port
from tests.kit.wait import until_sync
from x0tta.admin.client import AgentUnavailable, call
from x0tta.identity.ca import CertificateAuthority, write_atomic
from x0tta.peer.attack import EXPECTED, prepare_revoked

pytestmark = pytest.mark.integration

TD = "mesh.x0tta"


@pytest.fixture
def netns_pair():
    require_root()
    net = f"10.231.{os.getpid() % 250}"
    with scratch_netns("x0pa") as a, scratch_netns("x0pb") as b:  # each holds its end of the veth
        sh(f"ip link add {a} type veth peer name {b}")
        sh(f"ip link set {a} netns {a}")
        sh(f"ip link set {b} netns {b}")
        for ns, ip in ((a, f"{net}.1"), (b, f"{net}.2")):
            sh(f"ip -n {ns} addr add {ip}/24 dev {ns}")
            sh(f"ip -n {ns} link set {ns} up")
            sh(f"ip -n {ns} link set lo up")
        yield (a, f"{net}.1"), (b, f"{net}.2")


def write_config(path: Path, node: str, listen: str, peer: str, metrics_port: int) -> Path:
    path.write_text(f"""
[node]
id = "{node}"
state_dir = "{path.parent}/state-{node}"
runtime_dir = "{path.parent}/run-{node}"

[logging]
format = "json"
level = "info"

[metrics]
port = {metrics_port}

[identity]
trust_domain = "{TD}"
poll_interval = 0.2

[peer]
listen_address = "{listen}"
peers = ["{peer}"]
handshake_timeout = 1.5
heartbeat_interval = 0.5
idle_timeout = 5.0
""")
    return path


wait_for = functools.partial(until_sync, timeout=30.0, ignore=(OSError, AgentUnavailable))


def scrape(ns: str, port: int) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True,
                          capture_output=True, text=True).stdout


def open_session(rows, peer_id):
    return [r for r in rows if r.get("spiffe_id") == peer_id and r["state"] == "open"]


def test_two_agents_pq_session_and_refusals(netns_pair, tmp_path):
    (ns_a, ip_a), (ns_b, ip_b) = netns_pair
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    other = CertificateAuthority.init(tmp_path / "other-ca", "other.x0tta")
    prepare_revoked(ca)
    mport = free_port()
    cfg = {
        "a": write_config(tmp_path / "a.toml", "a", ip_a, f"{ip_b}:7443", mport),
        "b": write_config(tmp_path / "b.toml", "b", ip_b, f"{ip_a}:7443", mport),
    }
    for node in "ab":
        ident = tmp_path / f"state-{node}" / "identity"
        ca.issue_to(ident, f"spiffe://{TD}/node/{node}", 3600)
        write_atomic(ident / "crl.pem", ca.crl_pem())  # knows of the revocation
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_")}
    procs, logs = {}, {}
    try:
        for node, ns in (("a", ns_a), ("b", ns_b)):
            logs[node] = open(tmp_path / f"{node}.log", "w")
            procs[node] = subprocess.Popen(
                ["ip", "netns", "exec", ns, str(BIN / "x0tta-agent"), "--config", str(cfg[node])],
                env=env, stdout=logs[node], stderr=subprocess.STDOUT,
            )
        sock = {n: str(tmp_path / f"run-{n}" / "admin.sock") for n in "ab"}

        # The session, seen from both ends: hybrid group, ML-DSA-65, SPIFFE IDs verified both ways.
        rows_a = wait_for(lambda: (lambda r: r if open_session(r, f"spiffe://{TD}/node/b") else None)(
            call(sock["a"], "peers.list")))
        rows_b = wait_for(lambda: (lambda r: r if open_session(r, f"spiffe://{TD}/node/a") else None)(
            call(sock["b"], "peers.list")))
        for rows, other_id in ((rows_a, "b"), (rows_b, "a")):
            for row in open_session(rows, f"spiffe://{TD}/node/{other_id}"):
                assert row["group"] == "X25519MLKEM768"
                assert row["signature_algorithm"] == "ML-DSA-65"
                assert row["node"] == other_id
                assert 3000 < row["svid_expires_in"] <= 3600
        cli = subprocess.run([str(BIN / "x0tta"), "--socket", sock["a"], "peers", "--json"],
                             capture_output=True, text=True, check=True)
        assert any(r.get("spiffe_id") == f"spiffe://{TD}/node/b" for r in json.loads(cli.stdout))
        table = subprocess.run([str(BIN / "x0tta"), "--socket", sock["a"], "peers"],
                               capture_output=True, text=True, check=True).stdout
        assert "X25519MLKEM768" in table and "ML-DSA-65" in table

        # Every bad client, from netns a against agent b.
        attack = subprocess.run(
            ["ip", "netns", "exec", ns_a, sys.executable, "-m", "x0tta.peer.attack", "--ca", str(ca.directory),
             "--other-ca", str(other.directory), ip_b, "7443", *EXPECTED],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert attack.returncode == 0, attack.stderr[-3000:]
        seen = {r["case"]: r["client_saw"] for r in map(json.loads, attack.stdout.splitlines())}
        assert set(seen) == set(EXPECTED)
        assert not [c for c, s in seen.items() if s.startswith(("not refused", "error"))], seen

        def counted():
            text = scrape(ns_b, mport)
            missing = [r for r in EXPECTED.values()
                       if f'x0tta_peer_handshakes_total{{reason="{r}",result="refused",role="server"}}' not in text]
            return text if not missing else None

        metrics = wait_for(counted, timeout=15)
        assert 'x0tta_peer_negotiated_groups_total{group="X25519MLKEM768"}' in metrics
        # the attacks did not disturb the session between a and b
        assert open_session(call(sock["a"], "peers.list"), f"spiffe://{TD}/node/b")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in logs.values():
            f.close()
    assert all(p.returncode == 0 for p in procs.values()), [p.returncode for p in procs.values()]
    records = [json.loads(line) for line in (tmp_path / "b.log").read_text().splitlines() if line.startswith("{")]
    refused = {r.get("reason") for r in records if r.get("event") == "peer_handshake_refused"}
    assert set(EXPECTED.values()) <= refused, refused
