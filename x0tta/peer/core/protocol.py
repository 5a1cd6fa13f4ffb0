"""The peer session state machine, sans I/O (after h11): bytes and ``now`` in, events and bytes out.

Everything that affects the session's state lives here. The adapter (``x0tta.peer.session``) only
moves bytes between this object and a TLS stream and calls :meth:`PeerConnection.tick` at
:meth:`PeerConnection.next_deadline`.

Theory of operation
-------------------
Both ends are equal: each queues its :class:`~x0tta.peer.core.frames.Hello` at once and the session
is ``OPEN`` when the peer's hello has arrived and a common version exists (the highest version in
both ranges). Then either side may send requests (ids it picks, unique among its unanswered ones),
answer the peer's requests, and send ``Ping``; a ``Ping`` is answered with a ``Pong`` by this
machine, and the ``Pong`` gives the round-trip time. ``GoAway`` says "no new requests from me";
the receiver answers with its own ``GoAway`` (this machine queues it). Because the stream is
ordered, a side that has both sent and received a ``GoAway`` has seen every request the peer will
ever send; once those are answered and its own are answered it is :attr:`drained` and the
adapter may close, losing nothing that crossed the ``GoAway`` on the wire.

The transitions are the table :data:`TRANSITIONS`: ``(state, what) -> next state``, where ``what``
is ``recv_<frame>`` or ``send_<frame>``. Anything not in the table is an error that moves the
machine to ``ERROR`` (terminal): :class:`RemoteProtocolError` for what the peer sent,
:class:`LocalProtocolError` for what this node tried.

Limits, all from :class:`Limits`:

* frame size: ours bounds what we accept (told to the peer in the hello), the peer's bounds what we
  send;
* in-flight requests: we send at most the peer's ``max_in_flight`` unanswered requests (more is
  :class:`Backpressure`); a peer that sends more than ours is in breach (``too_many_requests``);
* outgoing buffer: bytes queued and not yet taken by :meth:`data_to_send` are bounded by
  ``max_buffered``; a new request above it is :class:`Backpressure` (responses, pings and the
  goaway are always queued: refusing them would stall the peer's window or the session);
* time: the hello must arrive within ``hello_timeout``; a frame started must complete within
  ``read_timeout``; with nothing received for ``idle_timeout`` the session is dead (the peer pings
  every ``heartbeat_interval`` when it has nothing else to say, so a live peer is never idle);
  each request has a deadline after which it fails locally with :class:`RequestTimedOut` (its late
  response is then dropped, not an error).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from x0tta.peer.core.errors import Backpressure, FrameError, LocalProtocolError, RemoteProtocolError
from x0tta.peer.core.frames import (
    STATUS_OK,
    FrameDecoder,
    GoAway,
    Hello,
    Ping,
    Pong,
    Request,
    Response,
    encode,
)

PROTOCOL_MIN_VERSION = 1
PROTOCOL_VERSION = 1


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    OPEN = "open"
    DRAINING = "draining"  # a GoAway was sent or received
    CLOSED = "closed"  # timed out or closed by the adapter
    ERROR = "error"


_S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (_S.AWAIT_HELLO, "send_hello"): _S.AWAIT_HELLO,
    (_S.AWAIT_HELLO, "recv_hello"): _S.OPEN,
    (_S.AWAIT_HELLO, "send_goaway"): _S.DRAINING,
    (_S.AWAIT_HELLO, "recv_goaway"): _S.DRAINING,
    (_S.OPEN, "recv_request"): _S.OPEN,
    (_S.OPEN, "recv_response"): _S.OPEN,
    (_S.OPEN, "recv_ping"): _S.OPEN,
    (_S.OPEN, "recv_pong"): _S.OPEN,
    (_S.OPEN, "recv_goaway"): _S.DRAINING,
    (_S.OPEN, "send_request"): _S.OPEN,
    (_S.OPEN, "send_response"): _S.OPEN,
    (_S.OPEN, "send_ping"): _S.OPEN,
    (_S.OPEN, "send_pong"): _S.OPEN,
    (_S.OPEN, "send_goaway"): _S.DRAINING,
    # Draining: requests already on the wire when the GoAway crossed them are still served.
    (_S.DRAINING, "recv_request"): _S.DRAINING,
    (_S.DRAINING, "recv_response"): _S.DRAINING,
    (_S.DRAINING, "recv_ping"): _S.DRAINING,
    (_S.DRAINING, "recv_pong"): _S.DRAINING,
    (_S.DRAINING, "recv_goaway"): _S.DRAINING,
    (_S.DRAINING, "send_response"): _S.DRAINING,
    (_S.DRAINING, "send_ping"): _S.DRAINING,
    (_S.DRAINING, "send_pong"): _S.DRAINING,
    (_S.DRAINING, "send_goaway"): _S.DRAINING,
}
"""``(state, what) -> next state``. Not in the table: protocol error."""

_FRAME_NAMES = {Hello: "hello", Ping: "ping", Pong: "pong", Request: "request", Response: "response", GoAway: "goaway"}


@dataclass(frozen=True)
class Limits:
    max_frame: int = 65536
    max_in_flight: int = 64
    max_buffered: int = 1024 * 1024
    hello_timeout: float = 10.0
    read_timeout: float = 10.0
    idle_timeout: float = 30.0
    heartbeat_interval: float = 10.0
    request_timeout: float = 10.0
    remember_timed_out: int = 1024  # ids of timed-out requests whose late response is dropped


# -- events handed to the adapter ------------------------------------------------------------------


class NeedData:
    """Sentinel: no complete event until more bytes arrive."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True)
class Established:
    """The peer's hello arrived; ``version`` is the one both speak."""

    hello: Hello
    version: int


@dataclass(frozen=True)
class RequestTimedOut:
    id: int
    method: str


@dataclass(frozen=True)
class TimedOut:
    """The session is dead: ``kind`` is ``hello``, ``read`` or ``idle``."""

    kind: str


@dataclass(frozen=True)
class RemoteGoAway:
    reason: str


Event = Established | Request | Response | RequestTimedOut | TimedOut | RemoteGoAway


@dataclass
class _Outgoing:
    method: str
    deadline: float


class PeerConnection:
    """One peer session's protocol state. Not thread-safe; no I/O."""

    def __init__(self, hello: Hello, now: float, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        if hello.max_frame != self.limits.max_frame or hello.max_in_flight != self.limits.max_in_flight:
            hello = Hello(
                hello.node_id,
                hello.min_version,
                hello.max_version,
                self.limits.max_frame,
                self.limits.max_in_flight,
                hello.capabilities,
            )
        self.our_hello = hello
        self.their_hello: Hello | None = None
        self.version: int | None = None
        self.state = State.AWAIT_HELLO
        self.error: Exception | None = None
        self.rtt: float | None = None
        self._decoder = FrameDecoder(self.limits.max_frame)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._outgoing: dict[int, _Outgoing] = {}  # our unanswered requests
        self._incoming: set[int] = set()  # the peer's requests we have not answered
        self._timed_out: deque[int] = deque()
        self._timed_out_set: set[int] = set()
        self._next_id = 1
        self._ping_nonce = 0
        self._ping_sent_at: dict[int, float] = {}
        self._started = now
        self._last_recv = now
        self._last_send = now
        self._partial_since: float | None = None
        self.goaway_sent = False
        self.goaway_received = False
        self.frames_in = 0
        self.frames_out = 0
        self._queue(hello, "send_hello")

    # -- state -------------------------------------------------------------------------------------

    def _transition(self, what: str, remote: bool) -> None:
        nxt = TRANSITIONS.get((self.state, what))
        if nxt is None:
            cls = RemoteProtocolError if remote else LocalProtocolError
            err = cls("unexpected_frame", f"{what} in state {self.state.value}")
            if remote:
                self._fail(err)
            raise err
        self.state = nxt

    def _fail(self, err: Exception) -> None:
        self.state = State.ERROR
        self.error = err

    def _check_usable(self) -> None:
        if self.state in (State.CLOSED, State.ERROR):
            raise LocalProtocolError("session_closed", f"session is {self.state.value}")

    @property
    def peer_max_frame(self) -> int:
        return self.their_hello.max_frame if self.their_hello else self.limits.max_frame

    @property
    def window(self) -> int:
        """Requests we may still send before the peer's in-flight limit."""
        cap = self.their_hello.max_in_flight if self.their_hello else 0
        return max(0, min(cap, self.limits.max_in_flight) - len(self._outgoing))

    @property
    def in_flight(self) -> int:
        return len(self._outgoing)

    @property
    def unanswered(self) -> int:
        return len(self._incoming)

    @property
    def drained(self) -> bool:
        """GoAway sent and received, nothing in flight either way: the adapter may close."""
        return (
            self.state is State.DRAINING
            and self.goaway_sent
            and self.goaway_received
            and not self._outgoing
            and not self._incoming
        )

    @property
    def can_request(self) -> bool:
        return self.state is State.OPEN and self.window > 0 and len(self._out) < self.limits.max_buffered

    @property
    def buffered(self) -> int:
        return len(self._out)

    # -- sending -----------------------------------------------------------------------------------

    def _queue(self, frame, what: str) -> None:
        data = encode(frame, self.peer_max_frame)
        self._transition(what, remote=False)
        self._out += data
        self.frames_out += 1

    def send_request(self, method: str, body: bytes, now: float, *, traceparent: str | None = None,
                     timeout: float | None = None) -> int:
        """Queue a request; returns its id. :class:`Backpressure` when the window or buffer is full."""
        self._check_usable()
        if self.state is State.OPEN:
            if not self.window:
                raise Backpressure("window_full", f"{len(self._outgoing)} requests in flight")
            if len(self._out) >= self.limits.max_buffered:
                raise Backpressure("buffer_full", f"{len(self._out)} bytes not yet sent")
        rid = self._next_id
        while rid in self._outgoing or rid in self._timed_out_set:
            rid = rid % 0xFFFFFFFF + 1
        self._queue(Request(rid, method, body, traceparent), "send_request")
        self._next_id = rid % 0xFFFFFFFF + 1
        deadline = now + (self.limits.request_timeout if timeout is None else timeout)
        self._outgoing[rid] = _Outgoing(method, deadline)
        self._last_send = now
        return rid

    def send_response(self, rid: int, body: bytes, now: float, *, status: int = STATUS_OK,
                      traceparent: str | None = None) -> None:
        self._check_usable()
        if rid not in self._incoming:
            raise LocalProtocolError("unknown_request", f"no unanswered request {rid}")
        self._queue(Response(rid, status, body, traceparent), "send_response")
        self._incoming.discard(rid)
        self._last_send = now

    def send_goaway(self, reason: str, now: float) -> None:
        self._check_usable()
        if self.goaway_sent:
            return
        self._queue(GoAway(reason), "send_goaway")
        self.goaway_sent = True
        self._last_send = now

    def send_ping(self, now: float) -> None:
        self._check_usable()
        self._ping_nonce += 1
        self._queue(Ping(self._ping_nonce), "send_ping")
        self._ping_sent_at[self._ping_nonce] = now
        while len(self._ping_sent_at) > 8:  # unanswered pings are forgotten, oldest first
            del self._ping_sent_at[next(iter(self._ping_sent_at))]
        self._last_send = now

    def data_to_send(self) -> bytes:
        """Everything queued for the peer (the adapter writes it all)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        """The adapter closed the transport; nothing more happens on this session."""
        if self.state is not State.ERROR:
            self.state = State.CLOSED

    # -- receiving ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the peer. Protocol errors are raised by :meth:`next_event`."""
        self._check_usable()
        if not data:
            return
        self._last_recv = now
        try:
            self._decoder.feed(data)
        except FrameError as exc:
            self._fail(exc)
            raise
        if self._partial_since is None:
            self._partial_since = now

    def next_event(self, now: float) -> Event | NeedData:
        """The next event, :data:`NEED_DATA`, or raise the protocol error that ended the session."""
        while True:
            if self._events:
                return self._events.popleft()
            if self.state is State.ERROR:
                raise self.error  # type: ignore[misc]
            if self.state is State.CLOSED:
                return NEED_DATA
            try:
                frame = self._decoder.next_frame()
            except FrameError as exc:
                self._fail(exc)
                raise
            if frame is None:
                if not self._decoder.buffered:
                    self._partial_since = None
                return NEED_DATA
            self._partial_since = now if self._decoder.buffered else None
            self.frames_in += 1
            self._handle(frame, now)

    def _handle(self, frame, now: float) -> None:
        self._transition("recv_" + _FRAME_NAMES[type(frame)], remote=True)
        if isinstance(frame, Hello):
            lo = max(frame.min_version, self.our_hello.min_version)
            hi = min(frame.max_version, self.our_hello.max_version)
            if lo > hi:
                self._breach("no_common_version", f"peer speaks {frame.min_version}..{frame.max_version}")
            self.their_hello, self.version = frame, hi
            self._events.append(Established(frame, hi))
        elif isinstance(frame, Request):
            if frame.id in self._incoming:
                self._breach("duplicate_request_id", str(frame.id))
            if len(self._incoming) >= self.limits.max_in_flight:
                self._breach("too_many_requests", f"more than {self.limits.max_in_flight} in flight")
            self._incoming.add(frame.id)
            self._events.append(frame)
        elif isinstance(frame, Response):
            if self._outgoing.pop(frame.id, None) is not None:
                self._events.append(frame)
            elif frame.id in self._timed_out_set:
                self._timed_out_set.discard(frame.id)  # late answer to a request given up on
            else:
                self._breach("unknown_response", f"response to {frame.id}, which was never asked")
        elif isinstance(frame, Ping):
            self._queue(Pong(frame.nonce), "send_pong")
            self._last_send = now
        elif isinstance(frame, Pong):
            sent = self._ping_sent_at.pop(frame.nonce, None)
            if sent is not None:
                self.rtt = now - sent
        elif isinstance(frame, GoAway):
            self.goaway_received = True
            if not self.goaway_sent:
                self._queue(GoAway("reply"), "send_goaway")
                self.goaway_sent = True
                self._last_send = now
            self._events.append(RemoteGoAway(frame.reason))

    def _breach(self, code: str, message: str) -> None:
        err = RemoteProtocolError(code, message)
        self._fail(err)
        raise err

    # -- time --------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do (None: never, the session is over)."""
        if self.state in (State.CLOSED, State.ERROR):
            return None
        lim = self.limits
        times = [self._last_recv + lim.idle_timeout]
        if self.state is State.AWAIT_HELLO:
            times.append(self._started + lim.hello_timeout)
        else:
            times.append(self._last_send + lim.heartbeat_interval)
        if self._partial_since is not None:
            times.append(self._partial_since + lim.read_timeout)
        if self._outgoing:
            times.append(min(o.deadline for o in self._outgoing.values()))
        return min(times)

    def tick(self, now: float) -> list[Event]:
        """Advance time: fail overdue requests, send a heartbeat when due, detect a dead session.

        Returns the events it produced (also what :meth:`next_event` would not otherwise report):
        :class:`RequestTimedOut` for each overdue request and at most one :class:`TimedOut`, after
        which the session is ``CLOSED``.
        """
        if self.state in (State.CLOSED, State.ERROR):
            return []
        lim = self.limits
        events: list[Event] = []
        for rid, out in [(r, o) for r, o in self._outgoing.items() if o.deadline <= now]:
            del self._outgoing[rid]
            self._timed_out.append(rid)
            self._timed_out_set.add(rid)
            while len(self._timed_out) > lim.remember_timed_out:
                self._timed_out_set.discard(self._timed_out.popleft())
            events.append(RequestTimedOut(rid, out.method))
        dead = None
        if self.state is State.AWAIT_HELLO and now >= self._started + lim.hello_timeout:
            dead = "hello"
        elif self._partial_since is not None and now >= self._partial_since + lim.read_timeout:
            dead = "read"
        elif now >= self._last_recv + lim.idle_timeout:
            dead = "idle"
        if dead:
            self.state = State.CLOSED
            events.append(TimedOut(dead))
            return events
        if self.state is not State.AWAIT_HELLO and now >= self._last_send + lim.heartbeat_interval:
            self.send_ping(now)
        return events
