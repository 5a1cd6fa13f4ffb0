"""Two real agents as a fleet's Prometheus and collector see them: every dashboard panel returns
series; an alert rule of configs/prometheus/x0tta-alerts.yml fires and reaches an operator's webhook
through a real Alertmanager; and the agents' spans reach an OTLP/gRPC receiver, as
``[tracing] otlp_endpoint`` sets it.

The agents run on loopback without batman-adv (as in test_agent_process.py): each has an ML-DSA-65
SVID from a built-in CA and a peer session to the other over 127.0.0.1, and reports to a real
mosquitto (the fleet plane), so the identity, peer and fleet panels read real values; mesh, heal,
guard and probes are degraded for want of batman-adv and eBPF, which is what makes the alert fire.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BIN, ROOT
from tests.kit.mosquitto import Broker
from tests.kit.otlp import OtlpReceiver
from tests.kit.ports import free_port
from tests.kit.prometheus import Alertmanager, Prometheus, Webhook
from tests.kit.wait import until_sync
from x0tta.identity.ca import CertificateAuthority
from x0tta.telemetry import dashboard

pytestmark = pytest.mark.integration

TD = "mesh.x0tta"
NODES = ("t1", "t2")
RULES = ROOT / "configs/prometheus/x0tta-alerts.yml"
wait = functools.partial(until_sync, interval=0.5)


def agent_config(path: Path, node: str, peer_port: int, other_peer_port: int, broker: Broker,
                 otlp: str) -> tuple[Path, int]:
    metrics_port = free_port()
    files = broker.files(node)
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

[tracing]
otlp_endpoint = "{otlp}"

[peer]
listen_address = "127.0.0.1"
port = {peer_port}
peers = ["127.0.0.1:{other_peer_port}"]
dial_neighbors = false

[fleet]
broker = "127.0.0.1"
port = {broker.port}
cert_file = "{files['cert_file']}"
key_file = "{files['key_file']}"
ca_file = "{files['ca_file']}"
""")
    return path, metrics_port


@dataclass
class Fleet:
    metrics: list[str]  # the agents' metrics addresses, one per node
    peer_ports: list[int]
    ca: Path  # the built-in CA that issued their SVIDs
    otlp: OtlpReceiver  # where their spans go


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two agents in session with each other and with a broker."""
    base = tmp_path_factory.mktemp("fleet")
    broker = Broker(base / "broker", clients=NODES)
    broker.start()
    otlp = OtlpReceiver().__enter__()
    ca = CertificateAuthority.init(base / "ca", TD)
    ports = [free_port(), free_port()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_")}
    procs: list[subprocess.Popen[bytes]] = []
    addresses = []
    try:
        for i, node in enumerate(NODES):
            cfg, mport = agent_config(base / f"{node}.toml", node, ports[i], ports[1 - i], broker, otlp.endpoint)
            ca.issue_to(base / f"state-{node}" / "identity", f"spiffe://{TD}/node/{node}", 3600)
            with (base / f"{node}.log").open("wb") as log:
                procs.append(subprocess.Popen([str(BIN / "x0tta-agent"), "--config", str(cfg)], env=env,
                                              stdout=log, stderr=subprocess.STDOUT))
            addresses.append(f"127.0.0.1:{mport}")
        yield Fleet(addresses, ports, base / "ca", otlp)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        broker.stop()
        otlp.__exit__(None, None, None)


def test_every_dashboard_panel_returns_series(fleet: Fleet, tmp_path: Path) -> None:
    agents = fleet.metrics
    with Prometheus(tmp_path / "prometheus", agents) as prom:
        wait(lambda: len(prom.targets_up()) == 2, timeout=60)
        # the peer session and the fleet connection are up on both nodes before anything is judged
        wait(lambda: len(prom.query("sum by (instance) (x0tta_peer_sessions) > 0")) == 2, timeout=60)
        wait(lambda: len(prom.query("x0tta_fleet_connected == 1")) == 2, timeout=60)
        # and clients the peer port must refuse, so that the refusal panel has real reasons
        for port in fleet.peer_ports:
            subprocess.run([sys.executable, "-m", "x0tta.peer.attack", "--ca", str(fleet.ca), "127.0.0.1",
                            str(port), "no_client_certificate", "unauthorized"], check=True, capture_output=True)
        # (two samples of each new series: increase() needs them)
        refused = 'count by (instance) (increase(x0tta_peer_handshakes_total{result="refused"}[15m]))'
        wait(lambda: len(prom.query(refused)) == 2, timeout=30)

        # every panel returns series, and one per node wherever the panel is per node
        nodes = set(agents)
        short: list[tuple[str, set[str]]] = []

        def every_panel_has_series() -> bool:
            short[:] = []
            for title, expr in dashboard.queries():
                series = prom.query(expr)
                seen = {s["metric"].get("instance") for s in series}
                if not series or ("by (version)" not in expr and seen != nodes):
                    short.append((title, seen))
            return not short

        try:
            wait(every_panel_has_series, timeout=60)
        except AssertionError:
            raise AssertionError(f"panels without series (nodes seen): {short}") from None
        # what the panels over event counters show without their zeros: which events happened here
        events = {title: len(prom.query(inner)) for title, expr in dashboard.queries()
                  if (inner := dashboard.without_zero(expr)) is not None}
        print(f"{len(dashboard.queries())} panels; of the {len(events)} with zeros per node, series without "
              f"them: {events}")


def fast_rules(path: Path) -> Path:
    """The rules with every ``for:`` shortened to 2 s: what is tested is the path, not the wait."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_firing_alert_reaches_the_webhook(fleet: Fleet, tmp_path: Path) -> None:
    agents = fleet.metrics
    config = (ROOT / "configs/prometheus/alertmanager.yml").read_text()
    with Webhook() as hook:
        # the example routing, with its receivers pointed at the test's webhook and short waits
        doc = yaml.safe_load(config)
        for receiver in doc["receivers"]:
            for wh in receiver["webhook_configs"]:
                wh["url"] = wh["url"].replace("http://127.0.0.1:9095", hook.url)
        doc["route"]["group_wait"] = doc["route"]["group_interval"] = "1s"
        for route in doc["route"]["routes"]:
            route["group_wait"] = "1s"
        with Alertmanager(tmp_path / "alertmanager", yaml.safe_dump(doc)) as am, \
                Prometheus(tmp_path / "prometheus", agents, rule_files=(fast_rules(tmp_path / "rules.yml"),),
                           alertmanager=am.address) as prom:
            t0 = time.monotonic()

            def degraded_mesh_delivered() -> list[dict[str, Any]]:
                """The firing alerts for mesh delivered to mesh-ops, once there is one per node
                (one notification per node: the example groups by alertname and instance)."""
                got = [a for path, body in list(hook.posts) if path == "/ops" for a in body["alerts"]
                       if a["labels"]["alertname"] == "X0ttaSubsystemDegraded"
                       and a["labels"]["subsystem"] == "mesh" and a["status"] == "firing"]
                return got if {a["labels"]["instance"] for a in got} == set(agents) else []

            got = wait(degraded_mesh_delivered, timeout=90)
            took = time.monotonic() - t0
            firing = [a for a in prom.alerts() if a["state"] == "firing"]
            assert {a["labels"]["alertname"] for a in firing} >= {"X0ttaSubsystemDegraded"}
    delivered = {a["labels"]["instance"] for a in got}
    assert delivered == set(agents), delivered
    for alert in got:
        assert alert["labels"]["severity"] == "warning" and alert["labels"]["job"] == "x0tta"
        assert alert["annotations"]["summary"] == f"{alert['labels']['instance']}: mesh degraded"
    print(f"alert fired, routed and delivered {took:.1f} s after Prometheus started")


def test_the_agents_export_their_spans_over_otlp(fleet: Fleet) -> None:
    """Each agent process, configured with ``[tracing] otlp_endpoint``, sends its handshakes' spans
    (batched: within the SDK's 5 s schedule) with its node in the resource."""

    def handshakes() -> dict[str, list[dict[str, object]]]:
        by_node: dict[str, list[dict[str, object]]] = {}
        for s in fleet.otlp.received():
            if s.name == "peer.handshake" and s.service == "x0tta-agent":
                by_node.setdefault(s.node, []).append(s.attributes)
        return by_node if set(by_node) == set(NODES) else {}

    got = wait(handshakes, timeout=60)
    for node, other in (("t1", "t2"), ("t2", "t1")):
        assert any(a["peer.result"] == "ok" and a["peer.spiffe_id"] == f"spiffe://{TD}/node/{other}"
                   and a["peer.group"] == "X25519MLKEM768" for a in got[node]), got[node]
