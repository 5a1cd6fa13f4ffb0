"""The fleet plane against a real mosquitto: TLS client certificates, the ACL, and nothing lost.

Every test starts its own broker (tests/kit/mosquitto.py) on a free loopback port and stops it
after. A subscriber with a persistent session (the ``fleet-monitor`` user of the ACL) collects
what arrives; payloads are checked against their schemas as they come, and duplicates (QoS 1
allows them) are told apart by their ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.kit.mosquitto import MONITOR, Broker
from tests.kit.wait import until
from x0tta.config.fleet import FleetSettings
from x0tta.config.schema import AgentSettings, NodeSettings
from x0tta.fleet.core import payloads
from x0tta.fleet.mqtt import Connection, tls_context
from x0tta.fleet.outbox import Outbox
from x0tta.fleet.service import FleetService
from x0tta.telemetry.testing import StandaloneContext
from x0tta.telemetry.testing import running as run_subsystem

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
WAIT = 15.0  # s: a real broker on a machine shared with other test runs


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def fleet_settings(broker: Broker, cert: str, **over) -> FleetSettings:
    return FleetSettings(broker="127.0.0.1", port=broker.port, reconnect_initial=0.05, reconnect_max=0.5,
                         publish_timeout=3.0, keepalive=5, **broker.files(cert), **over)


def agent_settings(broker: Broker, node: str, state: Path, cert: str | None = None, **over) -> AgentSettings:
    return AgentSettings(node=NodeSettings(id=node, state_dir=str(state)),
                         fleet=fleet_settings(broker, cert or node, **over))


class Collector:
    """The fleet's subscriber: every payload under x0tta/nodes/, with a session that outlives a
    broker restart (clean_start off, a session expiry), reconnecting until stopped."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.received: list[tuple[str, dict]] = []
        self.subscribed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        files = self.broker.files(MONITOR)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        while True:
            tls = tls_context(_paths(files))
            try:
                async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=MONITOR, tls_context=tls,
                                          protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                                          properties=props, keepalive=5) as client:
                    await client.subscribe("x0tta/nodes/#", qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        obj = payloads.decode(bytes(m.payload))  # type: ignore[arg-type]
                        self.received.append((str(m.topic), obj))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def ids(self, kind: str = "event/1") -> list[str]:
        """Ids of the payloads of ``kind``, each once, in the order they first arrived."""
        seen: dict[str, None] = {}
        for _, obj in self.received:
            if obj["schema"] == payloads.SCHEMA_PREFIX + kind:
                seen.setdefault(obj["id"], None)
        return list(seen)

    async def wait_for(self, keys: list[str], timeout: float = 30.0, kind: str = "event/1") -> None:
        deadline = time.monotonic() + timeout
        while not set(keys) <= set(self.ids(kind)):
            if time.monotonic() > deadline:
                missing = sorted(set(keys) - set(self.ids(kind)))
                raise AssertionError(f"{len(missing)} of {len(keys)} never arrived, e.g. {missing[:3]}\n"
                                     f"{self.broker.log()}")
            await asyncio.sleep(0.05)


def _paths(files: dict[str, str]):
    from x0tta.config.fleet import FleetPaths

    return FleetPaths(files["cert_file"], files["key_file"], files["ca_file"], "")


@contextlib.asynccontextmanager
async def running(settings: AgentSettings, state: Path, health=None):
    """A fleet subsystem running with ``settings``, through the kit's ``running``: (service, context)."""
    ctx = StandaloneContext(settings, name="fleet", node_id=settings.node.id, state_dir=state)
    svc = FleetService(settings.fleet, subsystem_health=health)
    async with run_subsystem(svc, ctx):
        yield svc, ctx


HEALTH = [{"subsystem": "mesh", "state": "degraded",
           "conditions": [{"code": "batman_adv_missing", "severity": "degraded", "message": "-"}]}]


async def test_birth_state_and_events_arrive_and_follow_their_schemas(broker, tmp_path):
    async with Collector(broker) as col, running(agent_settings(broker, "n1", tmp_path), tmp_path,
                                                 health=lambda: HEALTH) as (svc, ctx):
        await until(lambda: svc.connected, timeout=WAIT, what="connected")
        key = svc.event("heal", "incident_opened", {"kind": "link_down", "target": "eth1"}, incident="i1")
        await col.wait_for([key])
        await until(lambda: col.ids("birth/1") and col.ids("state/1"), timeout=WAIT, what="birth and state")
        topics = {topic: obj for topic, obj in col.received}
        assert topics["x0tta/nodes/n1/status"]["body"]["session"] == svc.session == 1
        state = topics["x0tta/nodes/n1/state"]
        assert state["body"]["state"] == "degraded" and state["body"]["subsystems"][0]["conditions"] == [
            "batman_adv_missing"]
        ev = topics["x0tta/nodes/n1/events/heal"]
        assert (ev["node"], ev["body"]["name"], ev["body"]["incident"]) == ("n1", "incident_opened", "i1")
        assert ctx.health.conditions == ()
        await until(lambda: svc.depth == 0, timeout=WAIT, what="outbox drained")
        metrics = {s.name: s.value for m in ctx.registry.collect() for s in m.samples}
        assert metrics["x0tta_fleet_published_total"] >= 2 and metrics["x0tta_fleet_connected"] == 1.0


async def test_clean_stop_publishes_death_and_a_lost_node_gets_its_will(broker, tmp_path):
    async with Collector(broker) as col:
        async with running(agent_settings(broker, "n1", tmp_path), tmp_path) as (svc, _):
            await until(lambda: svc.connected, timeout=WAIT, what="connected")
        await until(lambda: any(o["body"].get("reason") == "shutdown" for _, o in col.received
                                if o["schema"].endswith("death/1")), timeout=WAIT, what="death on a clean stop")


async def test_messages_published_while_the_broker_is_down_arrive_oldest_first(broker, tmp_path):
    async with Collector(broker) as col, running(agent_settings(broker, "n1", tmp_path), tmp_path) as (svc, ctx):
        await until(lambda: svc.connected, timeout=WAIT, what="connected")
        broker.stop()
        await until(lambda: not svc.connected, timeout=WAIT, what="the loss noticed")
        keys = [await svc.send_event("heal", "incident_opened", {"n": i}) for i in range(60)]
        assert svc.depth >= 60
        assert "fleet_broker_unreachable" in ctx.health.codes
        broker.start()
        await col.wait_for(keys)
        assert [k for k in col.ids() if k in set(keys)] == keys  # oldest first
        await until(lambda: svc.depth == 0, timeout=WAIT, what="outbox drained")
        assert svc.session >= 2
        metrics = {s.name: s.value for m in ctx.registry.collect() for s in m.samples}
        assert metrics["x0tta_fleet_reconnects_total"] >= 1


async def test_a_broker_restart_loses_nothing(broker, tmp_path):
    async with Collector(broker) as col, running(agent_settings(broker, "n1", tmp_path), tmp_path) as (svc, _):
        await until(lambda: svc.connected, timeout=WAIT, what="connected")
        keys = []
        for i in range(150):
            keys.append(svc.event("heal", "verified", {"n": i}))
            if i in (40, 100):
                broker.stop()
                await asyncio.sleep(0.3)
                broker.start()
            await asyncio.sleep(0.005)
        await col.wait_for(keys, timeout=60)
        await until(lambda: svc.depth == 0, timeout=WAIT, what="outbox drained")


async def test_a_node_cannot_publish_on_another_nodes_topics(broker, tmp_path):
    files = broker.files("n2")
    tls = await asyncio.to_thread(tls_context, _paths(files))
    async with Collector(broker) as col:
        settings = fleet_settings(broker, "n2")
        async with Connection(settings, "n2", tls, "x0tta/nodes/n2/status", b"{}") as conn:
            assert await conn.publish("x0tta/nodes/n1/state", b'{"forged": true}', retain=True) == 0x87
            own = payloads.event("k1", "n2", time.time(), "test", "tick", None, {})
            assert await conn.publish("x0tta/nodes/n2/events/test", payloads.encode(own)) < 0x80
        # The fleet service of a node whose certificate is n2's but which calls itself n1: refused,
        # counted, reported; nothing reaches n1's topics.
        state = tmp_path / "imposter"
        async with running(agent_settings(broker, "n1", state, cert="n2"), state) as (svc, ctx):
            svc.event("heal", "incident_opened", {})
            await until(lambda: "fleet_publish_refused" in ctx.health.codes, timeout=WAIT, what="the refusal reported")
            await until(lambda: svc.depth == 0, timeout=WAIT, what="the refused messages leave the outbox")
            metrics = {s.name: s.value for m in ctx.registry.collect() for s in m.samples}
            assert metrics["x0tta_fleet_refused_total"] >= 2
        await asyncio.sleep(0.3)
        assert not [t for t, _ in col.received if t.startswith("x0tta/nodes/n1/")], col.received


PUBLISHER = textwrap.dedent("""
    import asyncio, json, sys
    from x0tta.config.fleet import FleetSettings
    from x0tta.config.schema import AgentSettings, NodeSettings
    from x0tta.fleet.service import FleetService
    from x0tta.telemetry.testing import StandaloneContext

    async def main():
        state, count, fleet = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
        connect_first = sys.argv[4] == "connect-first"
        settings = AgentSettings(node=NodeSettings(id="n1", state_dir=state), fleet=FleetSettings(**fleet))
        svc = FleetService(settings.fleet)
        task = asyncio.create_task(svc.run(StandaloneContext(settings, name="fleet", node_id="n1", state_dir=state)))
        while not (svc.connected if connect_first else svc.outbox):
            await asyncio.sleep(0.01)
        print("> connected" if connect_first else "> running", flush=True)
        for i in range(count):
            print(">", await svc.send_event("test", "tick", {"i": i}), flush=True)  # on disk: acknowledged
            await asyncio.sleep(0.01)
        while svc.depth:
            await asyncio.sleep(0.01)
        print("> drained", flush=True)
        await task

    asyncio.run(main())
""")


def publisher(state: Path, count: int, fleet: dict, connect_first: bool = True) -> subprocess.Popen[str]:
    """A process running the fleet service on the outbox in ``state``: it says "connected" (or,
    without ``connect_first``, "running" as soon as its outbox is open, broker or not), then
    publishes ``count`` events, printing each one's key once it is on disk, and "drained" when the
    broker acknowledged everything."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    mode = "connect-first" if connect_first else "at-once"
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(state), str(count), json.dumps(fleet), mode],
                            stdout=subprocess.PIPE, text=True, env=env)


async def readline(proc: subprocess.Popen[str]) -> str:
    """The publisher's next line of its own ("> ..."); its logs go to the same stdout."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line, f"the publisher exited ({proc.poll()})"
        if line.startswith("> "):
            return line[2:].strip()


def reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


def publisher_fleet(broker: Broker) -> dict:
    """The publisher's ``[fleet]``: n1's certificate, quick reconnection."""
    return {"broker": "127.0.0.1", "port": broker.port, "reconnect_initial": 0.05, "reconnect_max": 0.5,
            "publish_timeout": 30.0, "keepalive": 30, **broker.files("n1")}


async def test_kill_9_between_enqueue_and_puback_loses_nothing(broker, tmp_path):
    fleet = publisher_fleet(broker)
    state = tmp_path / "node"
    async with Collector(broker) as col:
        first = publisher(state, 1000, fleet)
        try:
            assert await readline(first) == "connected"
            acked = [await readline(first) for _ in range(10)]
            broker.pause()  # connections stay up, no PUBACK comes: what is sent now is in flight
            acked += [await readline(first) for _ in range(40)]
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            reap(first)
        # What the caller was told is stored and the broker never acknowledged is still in the outbox.
        # As in the outage test below, the first lines read after the pause may be ones printed and
        # acknowledged by the broker before it: the oldest, delivered (the collector waits for them).
        box = Outbox(state / "fleet-outbox.sqlite3", capacity=10_000)
        kept = set(box.keys())
        box.close()
        assert_kept_but_delivered_prefix(acked[10:], kept)
        broker.resume()
        second = publisher(state, 0, fleet)  # the same outbox, after the "crash"
        try:
            assert await readline(second) == "connected"
            assert await readline(second) == "drained"
            await col.wait_for(acked)
        finally:
            second.send_signal(signal.SIGTERM)
            reap(second)


def assert_kept_but_delivered_prefix(told: list[str], kept: set[str]) -> None:
    """Every key in ``told`` (what a publisher printed after the broker went away) is still in its
    outbox, except a few of the oldest the broker acknowledged before it went: the outbox delivers
    oldest first, so those missing are a strict prefix."""
    gone = [k for k in told if k not in kept]
    assert told and gone == told[:len(gone)] and len(gone) < len(told), f"acknowledged messages are missing: {gone}"


def printed(proc: subprocess.Popen[str]) -> list[str]:
    """What a killed publisher printed that the test has not read yet: its last keys."""
    assert proc.stdout is not None
    return [line[2:].strip() for line in proc.stdout.read().splitlines() if line.startswith("> ")]


def stored_events(state: Path) -> list[str]:
    """The keys of the events waiting in the outbox on disk, in delivery order."""
    box = Outbox(state / "fleet-outbox.sqlite3", capacity=10_000)
    try:
        return [q.message.key for q in box.pending(10_000) if "/events/" in q.message.topic]
    finally:
        box.close()


OUTAGE = 30.0  # s: how long the broker is down


async def test_a_30_s_broker_outage_with_a_kill_9_in_it_loses_nothing(broker, tmp_path):
    """The issue's acceptance: the broker stopped for 30 s while incidents happen, the agent killed
    with -9 once in that time; after the restarts every message arrives, a duplicate only as QoS 1
    allows it (the same message again, with the same id)."""
    fleet, state = publisher_fleet(broker), tmp_path / "node"
    async with Collector(broker) as col:
        first = publisher(state, 100_000, fleet)  # publishes until it is killed
        try:
            assert await readline(first) == "connected"
            published = [await readline(first) for _ in range(20)]  # the broker up: most are delivered
            await asyncio.to_thread(broker.stop)
            stopped = time.monotonic()
            published += [await readline(first) for _ in range(60)]  # and on while the broker is down
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            published += printed(first)
        finally:
            reap(first)
        # Stored and undelivered is on disk; stored is a superset of what the caller was told, plus
        # what the process stored and died before reporting (it counts as published too), but for
        # a few it printed before the stop and the broker acknowledged (the final check shows them).
        waiting = await asyncio.to_thread(stored_events, state)
        assert_kept_but_delivered_prefix(published[20:], set(waiting))
        published += [k for k in waiting if k not in set(published)]
        second = publisher(state, 40, fleet, connect_first=False)  # the agent back, the broker still down
        try:
            assert await readline(second) == "running"
            published += [await readline(second) for _ in range(40)]
            await asyncio.sleep(max(0.0, stopped + OUTAGE - time.monotonic()))  # the outage itself
            await asyncio.to_thread(broker.start)
            assert await readline(second) == "drained"
            await col.wait_for(published, timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            reap(second)
        events = [o for _, o in col.received if o["schema"] == payloads.SCHEMA_PREFIX + "event/1"]
        assert set(col.ids()) == set(published)  # nothing missing, nothing that was not published
        assert col.ids() == published  # oldest first, across the kill and both reconnections
        first_copy: dict[str, dict] = {}
        for obj in events:  # a duplicate is the same message again: same id, same payload
            assert first_copy.setdefault(obj["id"], obj) == obj, obj
        assert len(published) == len(set(published)) >= 120
