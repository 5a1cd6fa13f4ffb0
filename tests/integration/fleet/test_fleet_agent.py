"""The agent with the fleet plane on: it reports to a real mosquitto, and the broker marks it dead
with its signed Will when it is killed."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.fleet.test_fleet_broker import Collector
from tests.integration.test_agent_process import start_agent
from tests.kit.mosquitto import MONITOR, Broker
from tests.kit.wait import until
from x0tta.fleet.core.signing import load_cas, verify_status

pytestmark = pytest.mark.integration

OTHERS_OFF = "\n".join(f"[{s}]\nenabled = false\n" for s in ("identity", "mesh", "heal", "guard", "peer", "probes"))


async def test_the_agent_reports_to_the_broker_and_its_will_marks_it_dead(agent_config, tmp_path):
    broker = Broker(tmp_path / "broker", clients=("t1", MONITOR))
    broker.start()
    try:
        files = broker.files("t1")
        cfg = agent_config(OTHERS_OFF + f"""
[fleet]
broker = "127.0.0.1"
port = {broker.port}
cert_file = "{files['cert_file']}"
key_file = "{files['key_file']}"
ca_file = "{files['ca_file']}"
keepalive = 5
""")
        from x0tta.config.loader import load_settings

        port = load_settings(cfg, {}).metrics.port
        async with Collector(broker) as col:
            proc = start_agent(cfg)
            try:
                await until(lambda: col.ids("birth/1") and col.ids("state/1"), timeout=30, what="birth and state")
                state = next(o for t, o in col.received if t == "x0tta/nodes/t1/state")
                assert [s["subsystem"] for s in state["body"]["subsystems"]] == ["fleet"]
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
                check = await asyncio.to_thread(
                    subprocess.run, ["promtool", "check", "metrics"], input=body, capture_output=True)
                assert check.returncode == 0 and check.stderr == b"", check
                assert b"x0tta_fleet_connected 1.0" in body and b"x0tta_fleet_outbox_depth" in body
                proc.kill()  # kill -9: no DISCONNECT, so the broker publishes the Last Will
                proc.wait(10)
                await until(lambda: any(o["schema"] == "x0tta.fleet.death/1" and o["body"]["reason"] == "lost"
                                        for _, o in col.received), timeout=20, what="the Will")
                birth = next(o for _, o in col.received if o["schema"] == "x0tta.fleet.birth/1")
                death = next(o for _, o in col.received if o["schema"] == "x0tta.fleet.death/1")
                assert death["body"]["session"] == birth["body"]["session"]
                # the Will the broker published is the node's own: signed when it connected
                cas = load_cas(await asyncio.to_thread(Path(files["ca_file"]).read_bytes))
                assert verify_status(death, cas) == verify_status(birth, cas) == "t1"
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate(timeout=10)
    finally:
        broker.stop()
