"""Mesh alerts on the wire: one UDP socket on the mesh interface (``bat0``), IPv6 link-local.

The wire format and the board of alerts in force are in :mod:`x0tta.heal.core.alert`; this
adapter only moves bytes. The socket is bound to the mesh interface on ``[::]:alert_port``; an
alert goes to ``ff02::1`` there, which batman-adv floods to every node of the mesh. Each alert is
sent twice, 200 ms apart (same sequence number: receivers take it once), so that one lost copy
does not lose it. Reading never blocks (``loop.add_reader``); a datagram that is not a valid alert
is counted and logged (at most once a minute per sender address) and dropped.

The socket is opened lazily: the mesh interface may appear (or get its link-local address) after
the agent started; :meth:`Alerter.ensure` retries at most every few seconds. It comes through the
:class:`~x0tta.heal.datagrams.Datagrams` the alerter is given (the host's by default), and the
repeat waits on its :class:`~x0tta.clock.Clock`: a test runs both on a fake net and a manual clock.

Hop by hop: once this node takes its keys from sessions (``link_keys.required``), alerts no longer
ride batman-adv's flood. They go out on every hard interface through the prober's sockets
(``hops``, :meth:`~x0tta.heal.liveness.Prober.flood`), tagged for that link's sessions, and arrive
through them (:meth:`Alerter.hop_receive`); an agent that takes a new alert sends it on over its
other links. Anything arriving on the ``bat0`` socket is then refused: nobody there shares a key
with this node.

Traces: an alert carries the trace context of the incident that raised it (``traceparent``), and a
node that takes a new alert makes a ``heal.alert_heard`` span in that trace (its log line
``heal_alert_heard`` carries the trace id), so the incident on one node and its alert heard on the
others are one trace in the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from x0tta.clock import SYSTEM, Clock
from x0tta.heal.core.alert import Alert, AlertDecodeError, Board, decode, encode
from x0tta.heal.core.linkkeys import LinkKeys
from x0tta.heal.datagrams import ALL_NODES, HOST, Datagrams, Endpoint
from x0tta.telemetry.tracing import context_of


class Hops(Protocol):
    """How alerts go hop by hop: the prober's sockets, one per hard interface."""

    def flood(self, build: Callable[[str], bytes | None], skip: str | None = None) -> int: ...

REPEAT_AFTER = 0.2
RETRY_OPEN = 5.0


class Alerter:
    def __init__(
        self,
        board: Board,
        meshif: str,
        port: int,
        hold: float,
        *,
        key: bytes | None = None,
        wake: Callable[[], None] | None = None,
        log: Any = None,
        link_keys: LinkKeys | None = None,
        hops: Hops | None = None,
        tracer: Any = None,
        datagrams: Datagrams = HOST,
        clock: Clock = SYSTEM,
    ) -> None:
        self.datagrams = datagrams
        self.clock = clock
        self._repeats: set[asyncio.Task[None]] = set()
        self.tracer = tracer
        self.link_keys = link_keys
        self.hops = hops
        self.rejects: dict[str, int] = {}
        self.relayed = 0
        self.board = board
        self.meshif = meshif
        self.port = port
        self.hold = hold
        self.key = key
        self.wake = wake
        self.log = log
        self.sock: Endpoint | None = None
        self.index = 0
        self.origin: str | None = None
        self.seq = int(clock.time() * 10) & 0xFFFFFFFF  # a restarted agent's alerts are newer
        self.sent = 0
        self.received = 0
        self.rejected = 0
        self._next_open = 0.0
        self._logged: dict[str, float] = {}

    @property
    def keyed(self) -> bool:
        """Whether the alerts this node takes are authenticated: hop by hop under its sessions'
        keys, or flooded under the shared key (unkeyed ones are refused either way)."""
        return self.hop_by_hop or self.key is not None

    async def ensure(self, now: float) -> bool:
        """Open the socket if it is not open yet (and not tried within RETRY_OPEN)."""
        if self.sock is not None:
            return True
        if now < self._next_open:
            return False
        self._next_open = now + RETRY_OPEN
        mac = await self.datagrams.mac(self.meshif)
        if mac is None:
            return False
        try:
            self.sock = self.datagrams.link(self.meshif, self.port)
        except OSError as exc:
            if self.log is not None:
                self.log.warning("heal_alert_socket_failed", interface=self.meshif, error=str(exc))
            return False
        self.index = self.sock.index
        self.origin = mac
        self.sock.watch(self._readable)
        return True

    def close(self) -> None:
        for task in self._repeats:
            task.cancel()
        self._repeats.clear()
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None

    def _later(self, delay: float, send: Callable[..., None], *args: Any) -> None:
        """``send(*args)`` once ``delay`` has passed on the clock (the second copy of an alert);
        nothing outside a running loop."""

        async def later() -> None:
            await self.clock.sleep(delay)
            send(*args)

        with contextlib.suppress(RuntimeError):  # no running loop
            task = asyncio.get_running_loop().create_task(later())
            self._repeats.add(task)
            task.add_done_callback(self._repeats.discard)

    @property
    def hop_by_hop(self) -> bool:
        return self.link_keys is not None and self.link_keys.required

    def raise_alert(self, kind: str, now: float, traceparent: str | None = None) -> Alert | None:
        """Tell the mesh that a link of this node is ``kind``; this node takes it as heard too.
        None while the socket is not open (see :meth:`ensure`, called every cycle), or when alerts
        go hop by hop and there is nothing to send them through. ``traceparent``: the incident's
        span, which the receivers' spans of this alert join."""
        if self.sock is None or self.origin is None or (self.hop_by_hop and self.hops is None):
            return None
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        alert = Alert(origin=self.origin, seq=self.seq, kind=kind, hold_ms=int(self.hold * 1000),
                      traceparent=traceparent)
        self.board.hear(alert, now)
        if self.hop_by_hop:
            self._relay(alert)
            self._later(REPEAT_AFTER, self._relay, alert)
            return alert
        data = encode(alert, self.key)
        self._send(data)
        self._later(REPEAT_AFTER, self._send, data)
        return alert

    def _relay(self, alert: Alert, skip: str | None = None) -> None:
        """Send ``alert`` on every hard interface but ``skip``, tagged for that link's sessions."""
        ring, hops = self.link_keys, self.hops
        if ring is None or hops is None:
            return

        def build(ifname: str) -> bytes | None:
            keys = ring.signing(ifname)
            return encode(alert, link_keys=keys) if keys else None

        self.sent += hops.flood(build, skip)

    def hop_receive(self, hardif: str, data: bytes, sender: str = "") -> None:
        """An alert that arrived on a hard interface (through the prober's socket there)."""
        now = self.clock.monotonic()
        ring = self.link_keys
        if ring is None or not ring.required:
            self._refuse("unauthenticated", sender, "a hop-by-hop alert while alerts ride bat0's flood", now)
            return

        def lookup(kid: bytes) -> bytes | None:
            k = ring.find(hardif, kid, now)
            return k.key if k is not None else None

        try:
            alert = decode(data, None, lookup)
        except AlertDecodeError as exc:
            self._refuse(exc.reason, sender, str(exc), now)
            return
        self.received += 1
        if alert.origin == self.origin:
            return  # ours, sent back by a neighbour that relayed it
        if self._take(alert, now):
            self.relayed += 1
            self._relay(alert, skip=hardif)

    def _take(self, alert: Alert, now: float) -> bool:
        if not self.board.hear(alert, now):
            return False
        with self._heard_span(alert):
            if self.log is not None:
                self.log.info("heal_alert_heard", origin=alert.origin, kind=alert.kind, seq=alert.seq,
                              hold_ms=alert.hold_ms)
        if self.wake is not None:
            self.wake()
        return True

    def _heard_span(self, alert: Alert) -> Any:
        """A span in the sender's trace, when the alert carries one and this node traces."""
        if self.tracer is None or alert.traceparent is None:
            return contextlib.nullcontext()
        from opentelemetry.trace import SpanKind

        return self.tracer.start_as_current_span(
            "heal.alert_heard", context=context_of(alert.traceparent), kind=SpanKind.CONSUMER,
            attributes={"heal.alert.origin": alert.origin, "heal.alert.kind": alert.kind,
                        "heal.alert.seq": alert.seq, "heal.alert.hold_ms": alert.hold_ms})

    def _refuse(self, reason: str, sender: str, why: str, now: float) -> None:
        self.rejected += 1
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        self._log_rejected(sender, why, now)

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(data, (ALL_NODES, self.port, 0, self.index))
            self.sent += 1
        except OSError as exc:  # no link-local address yet, interface gone
            if self.log is not None:
                self.log.warning("heal_alert_send_failed", interface=self.meshif, error=str(exc))

    def _readable(self) -> None:
        sock = self.sock
        while sock is not None:
            try:
                data, addr = sock.recvfrom(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now = self.clock.monotonic()
            if self.hop_by_hop:
                self._refuse("unauthenticated", str(addr[0]),
                             "an alert over bat0's flood while alerts go hop by hop, keyed by sessions", now)
                continue
            try:
                alert = decode(data, self.key)
            except AlertDecodeError as exc:
                self._refuse(exc.reason, str(addr[0]), str(exc), now)
                continue
            self.received += 1
            if alert.origin == self.origin:
                continue  # ours (looped back), or someone else's in our name: this node's own are taken when raised
            self._take(alert, now)

    def _log_rejected(self, sender: str, why: str, now: float) -> None:
        if self.log is None or now - self._logged.get(sender, -1e9) < 60.0:
            return
        if len(self._logged) > 1024:
            self._logged.clear()
        self._logged[sender] = now
        self.log.warning("heal_alert_rejected", sender=sender, error=why)
