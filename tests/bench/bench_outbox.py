"""The fleet outbox against publishing without it: throughput and delivery latency, in one run.

    .venv/bin/python tests/bench/bench_outbox.py [--messages 2000] [--paced 200] [--rate 100]

A real mosquitto (tests/kit/mosquitto.py: TLS 1.3, client certificates, the ACL of
configs/mosquitto/) on a free loopback port, and a subscriber as the ACL's ``fleet-monitor`` user
on ``x0tta/nodes/+/events/#`` at QoS 1. The same heal events (``event/1`` JSON payloads of the
size the heal loop hands over) go to the broker two ways, one after the other:

* **outbox** - the real :class:`x0tta.fleet.service.FleetService` of node ``n1``: each event is
  handed over with ``heal_event`` (as the heal loop does), stored in the SQLite outbox off the
  loop (WAL, ``synchronous=FULL``), published QoS 1 ``window`` at a time and removed on its PUBACK.
* **direct** - an aiomqtt client with n1's certificate publishing the same payloads at QoS 1
  with the same ``max_inflight_messages`` (``[fleet] window``), nothing stored.

Two loads each: a **burst** of ``--messages`` handed over at once (throughput: messages / time
from the first hand-over to the last receipt at the subscriber), and ``--paced`` messages at
``--rate`` per second (latency when the path is not saturated). Latency is from the hand-over to
the subscriber's receipt, by the payload's ``id``; p50 and p99. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.kit.mosquitto import MONITOR, Broker
from tests.kit.wait import until
from x0tta.config.fleet import FleetPaths, FleetSettings
from x0tta.config.schema import AgentSettings, NodeSettings
from x0tta.fleet.core import payloads
from x0tta.fleet.mqtt import tls_context
from x0tta.fleet.service import FleetService
from x0tta.telemetry.testing import StandaloneContext, running

NODE = "n1"
TOPIC = f"x0tta/nodes/{NODE}/events/heal"
WAIT = 120.0  # s: every message of a phase must arrive within this


def heal_data(i: int) -> dict[str, object]:
    """What the heal loop hands over with an ``incident_opened``: the incident and its evidence."""
    return {"kind": "link_down", "target": "eth1", "neighbour": "02:00:00:00:00:02", "seq": i,
            "evidence": {"tq": 0, "last_seen_ms": 4200, "hard_interface": "eth1", "detector": "tq_drop"},
            "action": "reset_interface", "attempt": 1}


class BenchBroker(Broker):
    """The kit's broker with no limit on the messages queued for a client: mosquitto's default
    (``max_queued_messages 1000``) drops QoS 1 messages for a subscriber that lags more than that
    behind a burst, and the bench would count those as never delivered."""

    def config(self) -> str:
        return super().config() + "max_queued_messages 0\n"


def tls_of(broker: Broker, name: str):
    f = broker.files(name)
    return tls_context(FleetPaths(f["cert_file"], f["key_file"], f["ca_file"], ""))


class Subscriber:
    """The monitor, on its own thread and event loop (as a receiver elsewhere would be: the sender's
    loop does not delay its reads): the receipt time (perf_counter) of every event id, the first
    time it comes."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.at: dict[str, float] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="bench-subscriber", daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        if not self.ready.wait(15) or self.error is not None:
            raise SystemExit(f"the subscriber did not start: {self.error}\n{self.broker.log()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(15)

    def _main(self) -> None:
        async def go() -> None:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run()

        try:
            asyncio.run(go())
        except BaseException as exc:  # reported by __enter__ or wait
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        tls = tls_of(self.broker, MONITOR)
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=MONITOR, tls_context=tls,
                                  protocol=aiomqtt.ProtocolVersion.V5, keepalive=30) as client:
            await client.subscribe(f"x0tta/nodes/{NODE}/events/#", qos=1)
            self.ready.set()
            async for m in client.messages:
                key = payloads.decode(bytes(m.payload))["id"]  # type: ignore[arg-type]
                self.at.setdefault(key, time.perf_counter())

    async def wait(self, keys: list[str]) -> None:
        deadline = time.monotonic() + WAIT
        while not all(k in self.at for k in keys):
            if self.error is not None:
                raise SystemExit(f"the subscriber failed: {self.error}")
            if time.monotonic() > deadline:
                missing = sum(k not in self.at for k in keys)
                raise SystemExit(f"{missing} of {len(keys)} messages never arrived\n{self.broker.log()}")
            await asyncio.sleep(0.02)


async def load(send: Callable[[int], Awaitable[str] | str], n: int, rate: float | None,
               sub: Subscriber) -> dict[str, float]:
    """Hand over ``n`` messages (all at once, or ``rate`` a second); measure until all arrived."""
    sent: dict[str, float] = {}
    t0 = time.perf_counter()
    for i in range(n):
        if rate:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        at = time.perf_counter()
        key = send(i)
        sent[key if isinstance(key, str) else await key] = at
    await sub.wait(list(sent))
    last = max(sub.at[k] for k in sent)
    lat = sorted((sub.at[k] - t) * 1000 for k, t in sent.items())
    return {"msg/s": n / (last - t0), "p50 ms": statistics.median(lat),
            "p99 ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


async def through_outbox(broker: Broker, state: Path, settings: FleetSettings, sub: Subscriber,
                         n: int, paced: int, rate: float) -> dict[str, dict[str, float]]:
    agent = AgentSettings(node=NodeSettings(id=NODE, state_dir=str(state)), fleet=settings)
    ctx = StandaloneContext(agent, name="fleet", node_id=NODE, state_dir=state)
    svc = FleetService(settings)
    async with running(svc, ctx):
        await until(lambda: svc.connected, timeout=30, what=f"the fleet service connected ({broker.log()})")

        def send(i: int) -> str:
            # heal_event returns nothing; event() is what it calls, and returns the key.
            return svc.event("heal", "incident_opened", heal_data(i), incident=f"i{i}")

        out = {"burst": await load(send, n, None, sub), "paced": await load(send, paced, rate, sub)}
        await until(lambda: svc.depth == 0, timeout=WAIT, what="every PUBACK processed: the outbox empty")
    return out


async def direct(broker: Broker, settings: FleetSettings, sub: Subscriber,
                 n: int, paced: int, rate: float) -> dict[str, dict[str, float]]:
    tls = await asyncio.to_thread(tls_of, broker, NODE)
    pending: set[asyncio.Task[None]] = set()
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"{NODE}-direct", tls_context=tls,
                              protocol=aiomqtt.ProtocolVersion.V5, keepalive=30,
                              max_inflight_messages=settings.window) as client:
        client.pending_calls_threshold = n + paced  # the burst is meant: no warning per publish

        def send(i: int) -> str:
            key = uuid.uuid4().hex
            body = payloads.event(key, NODE, time.time(), "heal", "incident_opened", f"i{i}", heal_data(i))
            task = asyncio.create_task(client.publish(TOPIC, payloads.encode(body), qos=1))
            pending.add(task)
            task.add_done_callback(pending.discard)
            return key

        out = {"burst": await load(send, n, None, sub), "paced": await load(send, paced, rate, sub)}
        await asyncio.gather(*pending)  # every PUBACK in
    return out


async def bench(n: int, paced: int, rate: float) -> tuple[dict[str, dict[str, dict[str, float]]], int, int]:
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-outbox-") as tmp:
        broker = BenchBroker(Path(tmp) / "broker")
        broker.start()
        try:
            settings = FleetSettings(broker="127.0.0.1", port=broker.port, publish_timeout=30.0, keepalive=30,
                                     **broker.files(NODE))
            size = len(payloads.encode(payloads.event(uuid.uuid4().hex, NODE, time.time(), "heal",
                                                      "incident_opened", "i0", heal_data(0))))
            with Subscriber(broker) as sub:
                res = {"outbox": await through_outbox(broker, Path(tmp) / "state", settings, sub, n, paced, rate),
                       "direct": await direct(broker, settings, sub, n, paced, rate)}
        finally:
            broker.stop()
    return res, size, settings.window


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=2000, help="messages of the burst")
    p.add_argument("--paced", type=int, default=200, help="messages of the paced load")
    p.add_argument("--rate", type=float, default=100.0, help="messages a second of the paced load")
    args = p.parse_args()
    t0 = time.perf_counter()
    res, size, window = asyncio.run(bench(args.messages, args.paced, args.rate))
    took = time.perf_counter() - t0
    print(f"{platform.node()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{took:.0f} s\n")
    print(f"Payload {size} B (event/1 JSON), QoS 1, window {window}, TLS 1.3 to a local mosquitto.\n")
    print("| load | measure | outbox | direct | outbox / direct |")
    print("|---|---|---|---|---|")
    for phase, label in (("burst", f"burst of {args.messages}"), ("paced", f"{args.paced} at {args.rate:g}/s")):
        for key in ("msg/s", "p50 ms", "p99 ms"):
            a, b = res["outbox"][phase][key], res["direct"][phase][key]
            print(f"| {label} | {key} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
