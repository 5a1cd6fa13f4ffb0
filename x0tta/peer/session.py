"""The thin adapter between the protocol core and a TLS stream (after httpcore around h11).

A :class:`PeerSession` owns one :class:`~x0tta.peer.tls.TlsStream` and one
:class:`~x0tta.peer.core.PeerConnection`. Its reader task feeds received bytes to the core and acts
on the events (requests go to the handler, each in its own task; responses resolve the waiting
:meth:`PeerSession.request`); its timer task calls ``tick`` at the core's deadline. Every write
goes through one lock, so frames from concurrent tasks never interleave. Time is the service's
:class:`~x0tta.clock.Clock` here (the core's ``now``, the timer's and the hello's waits) and nowhere
in the core: on a test's manual clock a heartbeat, an idle or read timeout happens when the test
moves the time, not when real seconds pass.

Backpressure reaches the caller: :meth:`PeerSession.request` waits while the peer's in-flight
window or our outgoing buffer is full, instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from x0tta.clock import SYSTEM, Clock
from x0tta.common.errors import TemporaryError
from x0tta.peer.core import (
    NEED_DATA,
    Backpressure,
    Established,
    Hello,
    Limits,
    PeerConnection,
    ProtocolError,
    RemoteGoAway,
    Request,
    RequestTimedOut,
    Response,
    State,
    TimedOut,
)
from x0tta.peer.core.frames import STATUS_ERROR, STATUS_OK
from x0tta.peer.tls import TlsClosed, TlsStream

Handler = Callable[["PeerSession", Request], Awaitable[tuple[int, bytes]]]


class SessionClosed(TemporaryError):
    """The session ended before the request could be sent or answered; ``sent`` says whether it left."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class RequestFailed(TemporaryError):
    """The peer answered with an error status (``status``), or the request timed out (``status`` None)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


async def wait_first(*events: asyncio.Event, timeout: float | None) -> None:
    """Return when any of ``events`` is set or ``timeout`` passes."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class PeerSession:
    def __init__(self, stream: TlsStream, hello: Hello, limits: Limits, handler: Handler, *,
                 log: Any = None, clock: Clock = SYSTEM) -> None:
        self.stream = stream
        self.peer = stream.peer
        self._clock = clock
        self._now = clock.monotonic  # the core's now
        self.core = PeerConnection(hello, self._now(), limits)
        self._handler = handler
        self._log = log
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Event()  # the window, buffer or state may have changed
        self._wake_timer = asyncio.Event()  # the core's next deadline may have moved
        self._waiters: dict[int, asyncio.Future[Response]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: list[asyncio.Task[None]] = []
        self.established = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.sent_away = ""  # why this end sent the peer away (PeerService.send_away), if it did
        self._finishing = False
        self.requests_served = 0
        self.opened_at = clock.time()
        self.link_key = b""  # set by the service once established (PeerChange.link_key)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._main = [asyncio.create_task(self._reader()), asyncio.create_task(self._timer())]
        self._spawn(self._flush())  # our hello

    async def wait_established(self, timeout: float) -> None:
        """Wait for the peer's hello; :class:`SessionClosed` if the session dies first."""
        with contextlib.suppress(TimeoutError):
            await self._clock.wait_for(wait_first(self.established, self.closed, timeout=None), timeout)
        if not self.established.is_set():
            await self.close(self.close_reason or "hello_timeout")
            raise SessionClosed(f"no hello from the peer: {self.close_reason or 'timeout'}")

    @property
    def state(self) -> State:
        return self.core.state

    @property
    def usable(self) -> bool:
        return self.core.state is State.OPEN and not self.closed.is_set()

    @property
    def drained(self) -> bool:
        return self.core.drained

    async def goaway(self, reason: str) -> None:
        """No new requests from either side; in-flight ones complete, then the session closes."""
        if self.core.state in (State.OPEN, State.AWAIT_HELLO):
            self.core.send_goaway(reason, self._now())
            await self._flush()
        self._changed.set()
        self._maybe_finish()

    async def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.close_reason = self.close_reason or reason
        self.closed.set()
        self.core.close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(SessionClosed(f"session closed: {self.close_reason}", sent=True))
        self._waiters.clear()
        current = asyncio.current_task()
        for task in [*self._main, *self._tasks]:
            if task is not current:
                task.cancel()
        await self.stream.close()
        self._changed.set()
        self._wake_timer.set()

    def _maybe_finish(self) -> None:
        if self.core.drained and not self.closed.is_set() and not self._finishing:
            self._finishing = True
            self._spawn(self._finish())

    async def _finish(self) -> None:
        await self._flush()  # our GoAway reply or last response goes out before the close
        await self.close("drained")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- I/O ---------------------------------------------------------------------------------------

    async def _flush(self) -> None:
        async with self._write_lock:
            data = self.core.data_to_send()
            if not data or self.closed.is_set():
                return
            try:
                await self.stream.send(data)
            except TlsClosed as exc:
                self._spawn(self.close(f"send failed: {exc}"))
        self._changed.set()

    async def _reader(self) -> None:
        reason = "eof"
        try:
            while True:
                data = await self.stream.recv()
                if not data:
                    break
                now = self._now()
                self.core.receive_data(data, now)
                while (ev := self.core.next_event(now)) is not NEED_DATA:
                    self._on_event(ev)
                await self._flush()  # pongs
                self._changed.set()
                self._wake_timer.set()
        except TlsClosed as exc:
            reason = str(exc)
        except ProtocolError as exc:
            reason = f"protocol error {exc.code}"
            if self._log is not None:
                self._log.warning("peer_protocol_error", peer=str(self.peer.spiffe_id), code=exc.code,
                                  error=str(exc))
        except asyncio.CancelledError:
            return
        self._spawn(self.close(reason))

    def _on_event(self, ev: object) -> None:
        if isinstance(ev, Established):
            self.established.set()
            self.core.send_ping(self._now())  # an RTT right away, not after a heartbeat interval
        elif isinstance(ev, Request):
            self._spawn(self._serve(ev))
        elif isinstance(ev, Response):
            fut = self._waiters.pop(ev.id, None)
            if fut is not None and not fut.done():
                fut.set_result(ev)
            self._maybe_finish()
        elif isinstance(ev, RemoteGoAway):
            self._maybe_finish()

    async def _timer(self) -> None:
        try:
            while True:
                deadline = self.core.next_deadline()
                if deadline is None:
                    return
                self._wake_timer.clear()
                delay = max(0.0, deadline - self._now())
                with contextlib.suppress(TimeoutError):
                    await self._clock.wait_for(self._wake_timer.wait(), delay)
                for ev in self.core.tick(self._now()):
                    if isinstance(ev, RequestTimedOut):
                        fut = self._waiters.pop(ev.id, None)
                        if fut is not None and not fut.done():
                            fut.set_exception(RequestFailed(f"{ev.method} timed out", None))
                    elif isinstance(ev, TimedOut):
                        self._log_timeout(ev.kind)
                        self._spawn(self.close(f"{ev.kind} timeout"))
                        return
                if self.core.buffered:
                    await self._flush()
        except asyncio.CancelledError:
            return

    def _log_timeout(self, kind: str) -> None:
        """A session closed for a timeout says so in the log, not only in a metric. The hello's is
        logged by the service, as the handshake's refusal (``no_hello``)."""
        if self._log is None or kind == "hello":
            return
        why = {"read": "a frame started arriving and did not complete within read_timeout",
               "idle": "nothing received within idle_timeout"}.get(kind, kind)
        self._log.warning("peer_session_timed_out", peer=str(self.peer.spiffe_id), address=self.stream.address,
                          reason=f"{kind} timeout", detail=why)

    async def _serve(self, req: Request) -> None:
        try:
            status, body = await self._handler(self, req)
        except Exception as exc:  # the handler's failure is the peer's answer, not our crash
            status, body = STATUS_ERROR, f"{type(exc).__name__}: {exc}".encode()[:1000]
        if self.closed.is_set():
            return
        try:
            self.core.send_response(req.id, body, self._now(), status=status, traceparent=req.traceparent)
        except ProtocolError:
            return
        self.requests_served += 1
        await self._flush()
        self._maybe_finish()

    # -- the API -----------------------------------------------------------------------------------

    async def request(self, method: str, body: bytes = b"", *, timeout: float | None = None,
                      traceparent: str | None = None) -> bytes:
        """Send a request and wait for its response body.

        Waits while the window is full. :class:`SessionClosed` (``sent=False``) if the session stops
        taking requests before this one left: safe to retry elsewhere. :class:`RequestFailed` for an
        error status or a timeout.
        """
        while True:
            if self.closed.is_set() or self.core.state is not State.OPEN:
                raise SessionClosed(f"session is {self.core.state.value}", sent=False)
            try:
                rid = self.core.send_request(method, body, self._now(), traceparent=traceparent,
                                             timeout=timeout)
                break
            except Backpressure:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await self._clock.wait_for(self._changed.wait(), 1.0)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._wake_timer.set()  # the timer must see the new deadline
        await self._flush()
        resp = await fut
        if resp.status != STATUS_OK:
            raise RequestFailed(f"{method}: status {resp.status}: {resp.body[:200]!r}", resp.status)
        return resp.body
