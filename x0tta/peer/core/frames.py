"""Frames of the x0tta peer protocol: the wire format, encoded and decoded. Pure.

Every frame on a peer session (inside TLS) is::

    length   u32, big endian: the number of bytes that follow (type + payload), 1..max_frame
    type     u8
    payload  per type, below; all integers big endian

Strings are ``u16 length + UTF-8`` (``str8``: ``u8 length + ASCII``). A trace context is a ``str8``
holding a W3C ``traceparent`` (Trace Context, section 3.2: ``version-trace_id-parent_id-flags``,
``00-`` + 32 + 16 + 2 lowercase hex digits; an all-zero trace or parent id is invalid) or empty
when the sender has none.

=========  ====  ===========================================================================
frame      type  payload
=========  ====  ===========================================================================
Hello      1     min_version u16, max_version u16, node_id str, max_frame u32,
                 max_in_flight u16, capabilities u8 count + count * str8
Ping       2     nonce u64
Pong       3     nonce u64 (the Ping's)
Request    4     id u32, method str8, traceparent str8, body (the rest)
Response   5     id u32, status u8, traceparent str8, body (the rest)
GoAway     6     reason str: no new requests on this connection; in-flight ones complete
=========  ====  ===========================================================================

The length is checked against ``max_frame`` as soon as its four bytes are in, so a peer cannot make
us buffer more than one maximum frame. Bytes after a fixed-layout payload are an error, never
ignored: two implementations must not disagree about what a frame means.

The promise of :class:`FrameDecoder` (held by ``tests/fuzz``): any input bytes either decode to
frames or raise :class:`~x0tta.peer.core.errors.FrameError`; nothing else escapes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from x0tta.peer.core.errors import FrameError, LocalProtocolError

HEADER = struct.Struct("!IB")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_HELLO_FIXED = struct.Struct("!HH")
_HELLO_LIMITS = struct.Struct("!IH")
_ID = struct.Struct("!I")
_ID_STATUS = struct.Struct("!IB")

HELLO, PING, PONG, REQUEST, RESPONSE, GOAWAY = 1, 2, 3, 4, 5, 6

MIN_FRAME = 64  # the smallest max_frame a peer may advertise: a hello must fit
MAX_FRAME_LIMIT = 16 * 1024 * 1024  # the largest max_frame anyone may advertise
MAX_CAPABILITIES = 32
MAX_NODE_ID = 255
MAX_STATUS = 3

STATUS_OK = 0
STATUS_ERROR = 1  # the handler failed; body is a UTF-8 message
STATUS_UNKNOWN_METHOD = 2
STATUS_BUSY = 3  # the receiver refused it under load; retry later

_TOKEN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@dataclass(frozen=True)
class Hello:
    node_id: str
    min_version: int = 1
    max_version: int = 1
    max_frame: int = 65536
    max_in_flight: int = 64
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ping:
    nonce: int


@dataclass(frozen=True)
class Pong:
    nonce: int


@dataclass(frozen=True)
class Request:
    id: int
    method: str
    body: bytes = b""
    traceparent: str | None = None


@dataclass(frozen=True)
class Response:
    id: int
    status: int = STATUS_OK
    body: bytes = b""
    traceparent: str | None = None


@dataclass(frozen=True)
class GoAway:
    reason: str = ""


Frame = Hello | Ping | Pong | Request | Response | GoAway


def valid_traceparent(value: str) -> bool:
    m = _TRACEPARENT.fullmatch(value)
    return bool(m) and m.group(1) != "0" * 32 and m.group(2) != "0" * 16


def valid_token(value: str) -> bool:
    """Methods and capabilities: lowercase ASCII, digits, ``.-_``, 1-64 characters."""
    return bool(_TOKEN.fullmatch(value))


# -- encoding ---------------------------------------------------------------------------------------


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise LocalProtocolError("string_too_long", f"{len(raw)} bytes")
    return _U16.pack(len(raw)) + raw


def _str8(value: str | None) -> bytes:
    raw = (value or "").encode("ascii")
    if len(raw) > 0xFF:
        raise LocalProtocolError("string_too_long", f"{len(raw)} bytes")
    return bytes((len(raw),)) + raw


def _check_token(kind: str, value: str) -> None:
    if not valid_token(value):
        raise LocalProtocolError(f"bad_{kind}", repr(value))


def _check_traceparent(value: str | None) -> None:
    if value is not None and not valid_traceparent(value):
        raise LocalProtocolError("bad_traceparent", repr(value))


def encode_payload(frame: Frame) -> tuple[int, bytes]:
    """(type, payload) of ``frame``; :class:`LocalProtocolError` if it could never be decoded."""
    if isinstance(frame, Request):
        _check_token("method", frame.method)
        _check_traceparent(frame.traceparent)
        if not 0 <= frame.id <= 0xFFFFFFFF:
            raise LocalProtocolError("bad_id", str(frame.id))
        return REQUEST, _ID.pack(frame.id) + _str8(frame.method) + _str8(frame.traceparent) + frame.body
    if isinstance(frame, Response):
        _check_traceparent(frame.traceparent)
        if not 0 <= frame.id <= 0xFFFFFFFF or not 0 <= frame.status <= MAX_STATUS:
            raise LocalProtocolError("bad_response", f"id {frame.id} status {frame.status}")
        return RESPONSE, _ID_STATUS.pack(frame.id, frame.status) + _str8(frame.traceparent) + frame.body
    if isinstance(frame, (Ping, Pong)):
        if not 0 <= frame.nonce < 2**64:
            raise LocalProtocolError("bad_nonce", str(frame.nonce))
        return (PING if isinstance(frame, Ping) else PONG), _U64.pack(frame.nonce)
    if isinstance(frame, Hello):
        _check_hello(frame, LocalProtocolError)
        caps = b"".join(_str8(c) for c in frame.capabilities)
        return HELLO, (
            _HELLO_FIXED.pack(frame.min_version, frame.max_version)
            + _str(frame.node_id)
            + _HELLO_LIMITS.pack(frame.max_frame, frame.max_in_flight)
            + bytes((len(frame.capabilities),))
            + caps
        )
    if isinstance(frame, GoAway):
        return GOAWAY, _str(frame.reason)
    raise LocalProtocolError("not_a_frame", type(frame).__name__)


def encode(frame: Frame, max_frame: int = MAX_FRAME_LIMIT) -> bytes:
    """The bytes of ``frame`` on the wire; :class:`LocalProtocolError` above ``max_frame``."""
    ftype, payload = encode_payload(frame)
    length = 1 + len(payload)
    if length > max_frame:
        raise LocalProtocolError("frame_too_large", f"{length} bytes > peer maximum {max_frame}")
    return HEADER.pack(length, ftype) + payload


def _check_hello(h: Hello, error: type) -> None:
    if not 1 <= h.min_version <= h.max_version <= 0xFFFF:
        raise error("bad_version", f"versions {h.min_version}..{h.max_version}")
    if not h.node_id or len(h.node_id.encode("utf-8")) > MAX_NODE_ID or not h.node_id.isprintable():
        raise error("bad_node_id", repr(h.node_id[:80]))
    if not MIN_FRAME <= h.max_frame <= MAX_FRAME_LIMIT:
        raise error("bad_max_frame", str(h.max_frame))
    if not 1 <= h.max_in_flight <= 0xFFFF:
        raise error("bad_max_in_flight", str(h.max_in_flight))
    if len(h.capabilities) > MAX_CAPABILITIES:
        raise error("too_many_capabilities", str(len(h.capabilities)))
    for cap in h.capabilities:
        if not valid_token(cap):
            raise error("bad_capability", repr(cap[:80]))
    if len(set(h.capabilities)) != len(h.capabilities):
        raise error("duplicate_capability", ",".join(h.capabilities))


# -- decoding ---------------------------------------------------------------------------------------


class _Reader:
    """Cursor over one frame's payload; every short read is a FrameError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FrameError("truncated", f"payload ends at {len(self.data)}, needed {end}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        return st.unpack(self.take(st.size))

    def string(self) -> str:
        (n,) = self.unpack(_U16)
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FrameError("bad_utf8", str(exc)) from None

    def str8(self) -> str:
        n = self.take(1)[0]
        raw = self.take(n)
        if not raw.isascii():
            raise FrameError("bad_ascii", repr(raw[:40]))
        return raw.decode("ascii")

    def traceparent(self) -> str | None:
        value = self.str8()
        if not value:
            return None
        if not valid_traceparent(value):
            raise FrameError("bad_traceparent", repr(value))
        return value

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError("trailing_bytes", f"{len(self.data) - self.pos} bytes after the payload")


def decode_payload(ftype: int, payload: bytes) -> Frame:
    """One frame from its type and payload; :class:`FrameError` and nothing else on bad input."""
    r = _Reader(payload)
    frame: Frame
    if ftype == REQUEST:
        (rid,) = r.unpack(_ID)
        method = r.str8()
        if not valid_token(method):
            raise FrameError("bad_method", repr(method))
        frame = Request(rid, method, traceparent=r.traceparent(), body=r.rest())
    elif ftype == RESPONSE:
        rid, status = r.unpack(_ID_STATUS)
        if status > MAX_STATUS:
            raise FrameError("bad_status", str(status))
        frame = Response(rid, status, traceparent=r.traceparent(), body=r.rest())
    elif ftype in (PING, PONG):
        (nonce,) = r.unpack(_U64)
        frame = Ping(nonce) if ftype == PING else Pong(nonce)
    elif ftype == HELLO:
        lo, hi = r.unpack(_HELLO_FIXED)
        node_id = r.string()
        max_frame, max_in_flight = r.unpack(_HELLO_LIMITS)
        count = r.take(1)[0]
        if count > MAX_CAPABILITIES:
            raise FrameError("too_many_capabilities", str(count))
        caps = tuple(r.str8() for _ in range(count))
        frame = Hello(node_id, lo, hi, max_frame, max_in_flight, caps)
        _check_hello(frame, FrameError)
    elif ftype == GOAWAY:
        frame = GoAway(r.string())
    else:
        raise FrameError("unknown_type", str(ftype))
    r.end()
    return frame


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes as they come, take frames from :meth:`next_frame`.

    After a :class:`FrameError` the decoder is dead (every later call raises the same error): a
    stream that lost its framing cannot be resynchronised.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames (a partial frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) < HEADER.size:
            return None
        length, ftype = HEADER.unpack_from(buf)
        try:
            if length == 0 or length > self.max_frame:
                raise FrameError("bad_length", f"frame of {length} bytes, maximum {self.max_frame}")
            if len(buf) < 4 + length:
                return None
            payload = bytes(buf[HEADER.size : 4 + length])
            del buf[: 4 + length]
            return decode_payload(ftype, payload)
        except FrameError as exc:
            self._error = exc
            raise
