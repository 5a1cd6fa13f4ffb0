"""The fleet subsystem: this node's state, birth, death and events, published to the fleet's broker
through the durable outbox.

Lifecycle (``run``), once ``[fleet] broker`` is set (docs/fleet.md):

1. open the outbox (:mod:`x0tta.fleet.outbox`; what other subsystems handed over before is written
   first), register the metrics and ``fleet.status``;
2. three tasks: the **writer** stores what other subsystems hand over (:meth:`FleetService.event`,
   synchronous and cheap for them) in the outbox; the **state** task queues the node's health on
   every change and every ``state_interval`` (a retained message that supersedes the undelivered
   one); the **connection** loop connects (TLS, client certificate, the death message as Last
   Will; while commands are on, a persistent session, so that commands sent while this node was
   away are queued by the broker and delivered now), publishes the birth, then drains the outbox
   oldest first, ``window`` messages in flight, removing each on its PUBACK. A failure closes the
   connection and the loop connects again after a jittered exponential delay
   (:mod:`x0tta.fleet.core.backoff`); what was not acknowledged is still in the outbox and goes first.
3. on stop, the death (reason ``shutdown``) is published if the broker is there, then the
   connection is closed cleanly (which tells the broker not to publish the Will).

Health: ``fleet_connecting`` (starting), ``fleet_broker_unreachable``, ``fleet_publish_refused``
(the broker refused a message: its ACL does not let this node write the topic),
``fleet_outbox_full`` (messages are being dropped), ``fleet_certificate_missing`` /
``fleet_certificate_unusable`` (raised as a missing capability). Metrics:
``x0tta_fleet_connected``, ``x0tta_fleet_outbox_depth``, ``x0tta_fleet_outbox_dropped_total``,
``x0tta_fleet_published_total``, ``x0tta_fleet_refused_total``, ``x0tta_fleet_reconnects_total``.

API for other subsystems (the wiring hands them this instance): :meth:`FleetService.event` (queued
now, durable within milliseconds), :meth:`FleetService.send_event` (awaitable: on disk when it
returns), and :meth:`FleetService.heal_event`, the heal loop's listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from x0tta import __version__
from x0tta.clock import SYSTEM
from x0tta.common.errors import X0ttaError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.fleet import FleetPaths, FleetSettings
from x0tta.config.schema import AgentSettings
from x0tta.fleet.commands import Actions, Counters, Unsupported, load_operators
from x0tta.fleet.conditions import FLEET_BROKER_UNREACHABLE, FLEET_CONNECTING, FLEET_OUTBOX_FULL, FLEET_PUBLISH_REFUSED
from x0tta.fleet.core import command, payloads
from x0tta.fleet.core.backoff import backoff_delay
from x0tta.fleet.core.command import Accepted, Reason, Refused
from x0tta.fleet.core.outbox import Priority, delivered
from x0tta.fleet.core.payloads import Topics
from x0tta.fleet.core.signing import sign_status
from x0tta.fleet.mqtt import BrokerError, Connection, status_signer, tls_context
from x0tta.fleet.outbox import AsyncOutbox, Message, PutResult, Queued

# Heal events an operator acts on; the others (symptoms raised and cleared) are informational and
# are the first dropped from a full outbox.
HEAL_IMPORTANT = frozenset({
    "incident_opened", "incident_resumed", "incident_closed", "executed", "verified", "harm", "healed",
    "handed_over", "transition_refused",
})
DEATH_TIMEOUT = 2.0  # s: the death on a clean stop, within the supervisor's shutdown budget
RESULTS_KEPT = 50  # the last command results fleet.status shows
HEALTH_POLL = 5.0  # s: how often the state task looks for a change of health


@dataclass(frozen=True)
class _Event:
    """An event handed over before the writer stores it (its payload is built then, once the node
    id is known)."""

    key: str
    at: float
    source: str
    name: str
    incident: str | None
    data: Mapping[str, Any]
    priority: Priority


class _Metrics:
    def __init__(self, r: CollectorRegistry, service: FleetService) -> None:
        self.connected = Gauge("x0tta_fleet_connected", "1 while connected to the fleet broker", registry=r)
        self.depth = Gauge("x0tta_fleet_outbox_depth", "Messages in the outbox, not yet acknowledged", registry=r)
        self.depth.set_function(lambda: float(service.depth))
        self.dropped = Counter("x0tta_fleet_outbox_dropped_total", "Messages dropped from a full outbox",
                               ["priority"], registry=r)
        self.published = Counter("x0tta_fleet_published_total", "Messages the broker acknowledged", registry=r)
        self.refused = Counter("x0tta_fleet_refused_total", "Messages the broker refused (PUBACK >= 0x80)",
                               registry=r)
        self.reconnects = Counter("x0tta_fleet_reconnects_total", "Connections to the broker lost or failed",
                                  registry=r)
        self.commands = Counter("x0tta_fleet_commands_total",
                                "Operator commands received, by outcome (executed, failed, refused) and reason",
                                ["outcome", "reason"], registry=r)


class FleetService(Subsystem):
    name = "fleet"

    def __init__(self, settings: FleetSettings | None = None, *,
                 subsystem_health: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.settings = settings or FleetSettings()
        self._subsystem_health = subsystem_health
        self.outbox: AsyncOutbox | None = None
        self.node = ""
        self.connected = False
        self.session = 0
        self.refused = ""  # the last refusal, until a batch goes through without one
        self.last_error = ""
        self.dropped = 0
        # What other subsystems handed over and the writer has not stored yet; bounded like the outbox.
        self._intake: deque[_Event | Message] = deque()
        self._wake_writer = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._metrics: _Metrics | None = None
        self._registry_id: int | None = None
        self._ctx: Context | None = None
        self._started = 0.0
        # Operator commands (docs/fleet.md): the wiring registers the handlers before run().
        self.actions = Actions()
        self.operators: dict[str, Any] = {}
        self.spiffe_id = ""
        self._counters: Counters | None = None
        self._last: dict[str, int] = {}
        self.results: deque[dict[str, Any]] = deque(maxlen=RESULTS_KEPT)

    @property
    def depth(self) -> int:
        return (self.outbox.depth if self.outbox else 0) + len(self._intake)

    # -- what other subsystems call ---------------------------------------------------------------

    def _event_message(self, ev: _Event) -> Message:
        topics = Topics(self.settings.topic_prefix, self.node)
        body = payloads.event(ev.key, topics.node, ev.at, ev.source, ev.name, ev.incident, ev.data)
        return Message(ev.key, topics.events(ev.source), payloads.encode(body), int(ev.priority))

    def event(self, source: str, name: str, data: Mapping[str, Any], incident: str | None = None,
              priority: Priority = Priority.IMPORTANT) -> str:
        """Queue an event of subsystem ``source``; returns its idempotency key. Never blocks: the
        writer stores it in the outbox within milliseconds (use :meth:`send_event` to wait)."""
        ev = _Event(uuid.uuid4().hex, time.time(), source, name, incident, data, priority)
        if len(self._intake) >= self.settings.outbox_capacity:
            self._count_dropped(PutResult(dropped={int(self._intake.popleft().priority): 1}))
        self._intake.append(ev)
        self._wake_writer.set()
        return ev.key

    async def send_event(self, source: str, name: str, data: Mapping[str, Any], incident: str | None = None,
                         priority: Priority = Priority.IMPORTANT) -> str:
        """Store an event in the outbox; once this returns it survives kill -9. Needs ``run``."""
        if self.outbox is None:
            raise BrokerError("the fleet subsystem is not running")
        msg = self._event_message(_Event(uuid.uuid4().hex, time.time(), source, name, incident, data, priority))
        self._count_dropped(await self.outbox.put([msg]))
        self._wake_sender.set()
        return msg.key

    def heal_event(self, name: str, incident: str | None, data: Mapping[str, Any]) -> None:
        """The heal loop's listener: each of its events, as an ``event/1`` on ``events/heal``."""
        self.event("heal", name, data, incident or None,
                   Priority.IMPORTANT if name in HEAL_IMPORTANT else Priority.INFO)

    # -- the subsystem ------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        s = self.settings = ctx.settings.fleet
        self.node, self._ctx = ctx.node_id, ctx
        topics = Topics(s.topic_prefix, ctx.node_id)
        state_dir = str(ctx.state_dir)
        paths = s.paths(state_dir, ctx.settings.identity.paths(state_dir))
        self._register(ctx)
        self.outbox = AsyncOutbox(paths.outbox, s.outbox_capacity)
        self._started = time.time()
        ctx.health.set(FLEET_CONNECTING(f"connecting to {s.broker}:{s.port}"))
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.outbox.open()
            await self._open_commands(ctx, paths.commands)
            tasks = [
                asyncio.create_task(self._writer(), name="fleet-writer"),
                asyncio.create_task(self._states(topics), name="fleet-state"),
                asyncio.create_task(self._connection(ctx, paths, topics), name="fleet-connection"),
            ]
            self._wake_writer.set()  # what was handed over before the outbox opened
            ctx.log.info("fleet_started", broker=f"{s.broker}:{s.port}", outbox=paths.outbox,
                         queued=self.outbox.depth, topics=topics.root)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # a task ends only by raising: the supervisor reports it
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if self._intake and tasks:  # handed over just before the stop: on disk for the next start
                with contextlib.suppress(Exception):
                    await self.outbox.put([m if isinstance(m, Message) else self._event_message(m)
                                           for m in self._intake])
                    self._intake.clear()
            await self.outbox.close()
            self.outbox = None
            if self._counters is not None:
                await self._counters.close()
                self._counters = None
            self._set_connected(False)

    async def reload(self, ctx: Context, settings: AgentSettings) -> bool:
        return settings.fleet == self.settings  # anything else: a new connection, by a restart

    def _register(self, ctx: Context) -> None:
        if self._registry_id != id(ctx.registry):
            self._registry_id = id(ctx.registry)
            self._metrics = _Metrics(ctx.registry, self)

            async def status(_: dict[str, Any]) -> dict[str, Any]:
                return self.status()

            ctx.admin.register("fleet.status", status)

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {"broker": f"{s.broker}:{s.port}", "connected": self.connected, "session": self.session,
                "node": self.node, "outbox_depth": self.depth, "dropped": self.dropped,
                "refused": self.refused, "last_error": self.last_error,
                "commands": {"on": self._counters is not None, "operators": sorted(self.operators),
                             "actions": self.actions.names, "results": list(self.results)[-10:]}}

    # -- tasks --------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._intake and self.outbox is not None:
                taken = list(self._intake)
                self._intake.clear()
                try:
                    res = await self.outbox.put([m if isinstance(m, Message) else self._event_message(m)
                                                 for m in taken])
                except BaseException:
                    self._intake.extendleft(reversed(taken))  # not stored: keep them, in order
                    raise
                self._count_dropped(res)
                self._wake_sender.set()

    async def _states(self, topics: Topics) -> None:
        last: Any = None
        last_at = 0.0
        while True:
            health = self._subsystem_health() if self._subsystem_health else []
            summary = [(h["subsystem"], h["state"], [c["code"] for c in h.get("conditions", ())]) for h in health]
            now = time.time()
            if summary != last or now - last_at >= self.settings.state_interval:
                key = uuid.uuid4().hex
                body = payloads.state(key, topics.node, now, __version__, health)
                self._intake.append(Message(key, topics.state, payloads.encode(body), int(Priority.IMPORTANT),
                                            retain=True, coalesce=True))
                self._wake_writer.set()
                last, last_at = summary, now
            await asyncio.sleep(min(HEALTH_POLL, self.settings.state_interval))

    async def _connection(self, ctx: Context, paths: FleetPaths, topics: Topics) -> None:
        s = self.settings
        attempt = 0
        while True:
            tls = await asyncio.to_thread(tls_context, paths)  # CapabilityMissing: degraded, retried
            session = await self._box().next_session()
            signer = await asyncio.to_thread(status_signer, paths)
            if signer is None and attempt == 0:
                ctx.log.warning("fleet_status_unsigned", key=paths.key,
                                reason="the key cannot sign (ECDSA P-256, Ed25519 or ML-DSA-65 needed)")
            will = await self._signed(payloads.death(uuid.uuid4().hex, topics.node, time.time(), session, "lost"),
                                      signer)
            try:
                # A persistent session while commands are on: the broker queues those sent while
                # this node is away, and delivers them when it is back (docs/fleet.md).
                expiry = s.command_session_expiry if self._counters is not None else 0
                async with Connection(s, ctx.node_id, tls, topics.status, will, expiry) as conn:
                    birth = await self._signed(payloads.birth(uuid.uuid4().hex, topics.node, time.time(), session,
                                                              __version__, self._started), signer)
                    code = await conn.publish(topics.status, birth, retain=True)
                    if not delivered(code):
                        self._refusal(ctx, topics.status, code)
                    self.session, self.last_error, attempt = session, "", 0
                    self._set_connected(True)
                    ctx.log.info("fleet_connected", broker=f"{s.broker}:{s.port}", session=session,
                                 queued=self.depth)
                    self._report(ctx)
                    reader = None
                    if self._counters is not None:
                        await conn.subscribe(topics.commands)
                        reader = asyncio.create_task(self._commands(ctx, conn, topics), name="fleet-commands")
                    try:
                        await self._drain(ctx, conn, reader)
                    except asyncio.CancelledError:
                        death = payloads.death(uuid.uuid4().hex, topics.node, time.time(), session, "shutdown")
                        with contextlib.suppress(Exception):
                            await SYSTEM.wait_for(self._last_word(conn, topics.status, death, signer), DEATH_TIMEOUT)
                        raise
                    finally:
                        if reader is not None:
                            reader.cancel()
                            with contextlib.suppress(asyncio.CancelledError, Exception):
                                await reader
            except BrokerError as exc:
                self.last_error = str(exc)
            self._set_connected(False)
            if self._metrics:
                self._metrics.reconnects.inc()
            delay = backoff_delay(attempt, s.reconnect_initial, max(s.reconnect_max, s.reconnect_initial),
                                  random.random())  # noqa: S311 - reconnect jitter, not a secret
            attempt += 1
            ctx.log.warning("fleet_disconnected", error=self.last_error, retry_in=round(delay, 3), queued=self.depth)
            self._report(ctx, retry_in=delay)
            await asyncio.sleep(delay)

    # -- operator commands ------------------------------------------------------------------------

    async def _open_commands(self, ctx: Context, path: str) -> None:
        """Load the authorized operators' keys and the replay counters; commands stay off without keys."""
        s = self.settings
        self.spiffe_id = str(ctx.settings.identity.own_spiffe_id(ctx.node_id))
        if not s.operator_keys:
            return
        self.operators, problems = await asyncio.to_thread(load_operators, s.operator_keys)
        for problem in problems:
            ctx.log.error("fleet_operator_key_unusable", problem=problem)
        if not self.operators:
            ctx.log.error("fleet_commands_off", reason="no usable operator key in [fleet] operator_keys",
                          sources=list(s.operator_keys))
            return
        self._counters = Counters(path)
        self._last = await self._counters.load()
        ctx.log.info("fleet_commands_on", operators=sorted(self.operators), actions=self.actions.names,
                     spiffe_id=self.spiffe_id)

    async def _commands(self, ctx: Context, conn: Connection, topics: Topics) -> None:
        async for _topic, data, ack in conn.messages():
            try:
                await self.handle_command(ctx, topics, data)
            except asyncio.CancelledError:
                raise  # not acknowledged: delivered again on the next connection, the counters decide
            except BaseException:
                ack()  # a handler's bug: once is enough
                raise
            ack()  # handled (its counter written, if it ran): the broker may forget it
        raise BrokerError("the broker closed the connection")

    async def handle_command(self, ctx: Context, topics: Topics, data: bytes) -> dict[str, Any] | None:
        """Decide on one envelope, run it if accepted, and queue its result; returns the result body
        (None for a command meant for other nodes: those are counted, not answered)."""
        decision = await asyncio.to_thread(command.check, data, time.time(), self.spiffe_id, self.operators,
                                           dict(self._last))
        if isinstance(decision, Accepted):
            cmd = decision.command
            handler = self.actions.get(cmd.action)
            if handler is None:
                decision = Refused(Reason.UNSUPPORTED, f"this node has no handler for {cmd.action}", cmd)
            elif self._counters is None or not await self._counters.take(cmd.operator, cmd.counter):
                decision = Refused(Reason.REPLAYED, f"counter {cmd.counter} of operator {cmd.operator} was taken",
                                   cmd)
            else:
                self._last[cmd.operator] = cmd.counter  # on disk before the action runs: never twice
                return self._result(ctx, topics, *await self._run_action(ctx, cmd, handler))
        cmd = decision.command
        self._count("refused", decision.reason.value)
        log = ctx.log.debug if decision.reason == Reason.WRONG_TARGET else ctx.log.warning
        log("fleet_command_refused", reason=decision.reason.value, message=decision.message,
            command=cmd.id if cmd else None, operator=cmd.operator if cmd else None,
            action=cmd.action if cmd else None)
        if decision.reason == Reason.WRONG_TARGET:
            return None
        return self._result(ctx, topics, cmd, "refused", decision.reason.value, decision.message, {})

    async def _run_action(self, ctx: Context, cmd: command.Command,
                          handler: Any) -> tuple[command.Command, str, str | None, str, Mapping[str, Any]]:
        ctx.log.info("fleet_command_accepted", command=cmd.id, operator=cmd.operator, action=cmd.action,
                     args=dict(cmd.args), counter=cmd.counter)
        reason = None
        try:
            detail = await SYSTEM.wait_for(handler(cmd), self.settings.command_timeout)
        except Unsupported as exc:
            outcome, reason, message, detail = "refused", Reason.UNSUPPORTED.value, str(exc), {}
        except TimeoutError:
            limit = self.settings.command_timeout
            outcome, message, detail = "failed", f"{cmd.action} did not finish within {limit:g} s", {}
        except X0ttaError as exc:
            outcome, message, detail = "failed", str(exc), {}
        except Exception as exc:  # a handler's bug: reported, not fatal to the fleet plane
            ctx.log.exception("fleet_command_handler_error", command=cmd.id, action=cmd.action)
            outcome, message, detail = "failed", f"{type(exc).__name__}: {exc}", {}
        else:
            outcome, message = "executed", f"{cmd.action} done"
        self._count(outcome, reason or "none")
        ctx.log.info("fleet_command_done", command=cmd.id, action=cmd.action, outcome=outcome, message=message)
        return cmd, outcome, reason, message, dict(detail or {})

    def _result(self, ctx: Context, topics: Topics, cmd: command.Command | None, outcome: str, reason: str | None,
                message: str, detail: Mapping[str, Any]) -> dict[str, Any]:
        key = uuid.uuid4().hex
        body = payloads.result(key, topics.node, time.time(), cmd.id if cmd else None, cmd.operator if cmd else None,
                               cmd.action if cmd else None, outcome, reason, message, detail)
        self.results.append(body["body"])
        self._intake.append(Message(key, topics.result, payloads.encode(body), int(Priority.IMPORTANT), retain=True))
        self._wake_writer.set()
        return body["body"]  # type: ignore[no-any-return]

    def _count(self, outcome: str, reason: str) -> None:
        if self._metrics:
            self._metrics.commands.labels(outcome, reason).inc()

    async def _last_word(self, conn: Connection, topic: str, death: dict[str, Any],
                         signer: tuple[Any, bytes] | None) -> None:
        await conn.publish(topic, await self._signed(death, signer), retain=True)

    @staticmethod
    async def _signed(obj: dict[str, Any], signer: tuple[Any, bytes] | None) -> bytes:
        """A birth or death, signed with the client certificate's key when it can sign (core/signing.py)."""
        if signer is not None:
            obj = await asyncio.to_thread(sign_status, obj, *signer)
        return payloads.encode(obj)

    def _box(self) -> AsyncOutbox:
        if self.outbox is None:
            raise BrokerError("the outbox is closed")
        return self.outbox

    async def _drain(self, ctx: Context, conn: Connection, reader: asyncio.Task[None] | None = None) -> None:
        """Publish the outbox oldest first, ``window`` at a time, and forget each message on its PUBACK."""
        box = self._box()
        while True:
            self._wake_sender.clear()
            batch = await box.pending(self.settings.window)
            if not batch:
                wake = asyncio.create_task(self._wake_sender.wait())
                watched: set[asyncio.Future[Any]] = {wake, conn.lost}
                if reader is not None:
                    watched.add(reader)
                try:
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                if reader is not None and reader.done():
                    reader.result()  # the command reader ends only by raising (a lost connection)
                if conn.lost.done():
                    raise BrokerError("the broker closed the connection")
                continue
            # Tasks start in creation order, so the packets leave in the outbox's order.
            sends = [asyncio.create_task(conn.publish(q.message.topic, q.message.payload, q.message.retain))
                     for q in batch]
            results = await asyncio.gather(*sends, return_exceptions=True)
            gone, refused = self._settle(ctx, batch, results)
            await box.remove(gone)
            if self._metrics:
                self._metrics.published.inc(len(gone) - refused)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed if isinstance(failed, BrokerError) else BrokerError(str(failed))
            if not refused and self.refused:
                self.refused = ""
            self._report(ctx)

    def _settle(self, ctx: Context, batch: list[Queued], results: list[Any]) -> tuple[list[int], int]:
        gone, refused = [], 0
        for q, r in zip(batch, results, strict=True):
            if isinstance(r, int):
                gone.append(q.seq)
                if not delivered(r):
                    refused += 1
                    self._refusal(ctx, q.message.topic, r)
        return gone, refused

    def _refusal(self, ctx: Context, topic: str, code: int) -> None:
        self.refused = f"the broker refused {topic} (PUBACK reason 0x{code:02x})"
        if self._metrics:
            self._metrics.refused.inc()
        ctx.log.error("fleet_publish_refused", topic=topic, reason_code=code)

    def _count_dropped(self, res: PutResult) -> None:
        for prio, n in res.dropped.items():
            self.dropped += n
            if self._metrics:
                self._metrics.dropped.labels(Priority(prio).name.lower()).inc(n)
        if res.dropped and self._ctx is not None:
            self._ctx.log.warning("fleet_outbox_dropped", dropped={Priority(p).name.lower(): n
                                                                   for p, n in res.dropped.items()})
            self._report(self._ctx)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        if self._metrics:
            self._metrics.connected.set(float(up))

    def _report(self, ctx: Context, retry_in: float | None = None) -> None:
        s = self.settings
        conds = []
        if not self.connected:
            when = f"; retrying in {retry_in:.1f} s" if retry_in is not None else ""
            conds.append(FLEET_BROKER_UNREACHABLE(
                                   f"cannot reach the fleet broker {s.broker}:{s.port}: {self.last_error or 'lost'}"
                                   f"{when}; {self.depth} messages wait in the outbox"))
        if self.refused:
            conds.append(FLEET_PUBLISH_REFUSED(
                                   f"{self.refused}: its ACL must let user {self.node} write {s.topic_prefix}/nodes/"
                                   f"{self.node}/# (configs/mosquitto/)"))
        if self.depth >= s.outbox_capacity:
            conds.append(FLEET_OUTBOX_FULL(
                                   f"the outbox holds {s.outbox_capacity} messages and drops the oldest "
                                   f"informational ones ({self.dropped} dropped so far)"))
        ctx.health.set(*conds)
