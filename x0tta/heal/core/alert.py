"""Mesh alerts: a node that sees one of its links fail tells every agent of the mesh (sans-IO).

Why: a node beyond a dead link keeps routing through it until five newer OGMs of the node on the
other side reached it another way (BATMAN_IV). The nodes in between forward those OGMs, and with
OGM aggregation on (batman-adv's default) each holds a forwarded OGM up to 100 ms to send it with
others: three hops of the 5-node lab ring add a quarter to a third of a second. A node whose link
is confirmed silent or went down therefore floods one small datagram over the mesh interface
(UDP to ``ff02::1`` on ``bat0``: batman-adv floods it to every node, around the dead link), and
every agent that hears it pauses OGM aggregation for the alert's ``hold`` (see
:mod:`~x0tta.heal.core.plan`, ``mesh_alert``).

Wire format, version 1 (network byte order)::

    0      4   5     6          8       12             18     19  20
    | X0MA | 1 | flg | hold (ms) | seq   | origin MAC   | kind | 0 | tag? |

With flag bit 3 (``FLAG_TRACE``) the header is followed by the W3C trace context of the incident
that raised the alert (Trace Context, section 3.2, in binary: trace id 16 bytes, parent span id 8,
trace flags 1), so the spans a receiver makes of the alert join the sender's trace. It is inside
what the tags cover. An agent older than this field refuses such an alert (reserved bits set).

``origin`` is the sender's originator address (its primary interface MAC); ``seq`` grows with each
new alert of that sender, and a repeat of the same alert (sent twice, in case one copy is lost)
carries the same ``seq``. ``kind``: 2 silent loss, 3 link down (1, link suspect, is understood but
not sent: a mere suspicion stays the business of the node that has it).

Authentication, two ways, as for the liveness probes:

* **Hop by hop, keyed by sessions** (version 2, flag bit 2), once the node has an identity: the
  alert does not ride batman-adv's flood, whose far ends share no key with the sender. It goes to
  ``ff02::1`` on every hard interface (the probe port), with one entry per session on that link:
  count (u8), then key id (4) | tag (12) (:mod:`~x0tta.heal.core.linkkeys`). Every agent that
  verifies a new alert acts on it and sends it on over its other links, re-tagged for them, so it
  crosses the mesh one authenticated hop at a time; the board's sequence numbers stop the flood.
* **A shared key** (version 1, flag bit 0; ``[heal] probe_key_file``): flooded over ``bat0`` with a
  16-byte HMAC-SHA256 tag. A receiver with a key drops untagged or badly tagged alerts.

Without either, a forged alert can only make nodes forward OGMs without aggregating them for
``alert_hold_max`` (an unkeyed alert never moves a node's own OGM interval). A replayed alert
changes nothing: the board remembers the newest ``seq`` of every origin it tracks, also after the
alert's hold ran out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from x0tta.common.errors import DecodeError
from x0tta.heal.core.linkkeys import (
    ENTRY_LEN,
    MAX_PER_LINK,
    SHARED_TAG_LEN,
    LinkTagError,
    authenticate,
    shared_tag,
    tag_entries,
)

MAGIC = b"X0MA"
VERSION = 1  # flooded over bat0: unkeyed, or tagged with a shared key
VERSION_SESSION = 2  # hop by hop, tagged per session
FLAG_AUTH = 0x01
FLAG_SESSION = 0x04
FLAG_TRACE = 0x08
_TRACE = struct.Struct("!16s8sB")  # trace id, parent span id, trace flags
TAG_LEN = SHARED_TAG_LEN
_FRAME = struct.Struct("!4sBBHI6sBB")
KINDS = {1: "link_suspect", 2: "silent_loss", 3: "link_down"}
KIND_CODES = {v: k for k, v in KINDS.items()}


class AlertDecodeError(DecodeError):
    """A datagram that is not a valid mesh alert (or fails its authentication); ``reason`` as for
    probes: malformed, unauthenticated, not_for_us, bad_tag."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Alert:
    origin: str  # MAC, aa:bb:cc:dd:ee:ff
    seq: int
    kind: str  # one of KINDS' values
    hold_ms: int
    traceparent: str | None = None  # W3C traceparent of the incident that raised it


def _trace_bytes(traceparent: str) -> bytes:
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] != "00" or [len(p) for p in parts[1:]] != [32, 16, 2]:
        raise ValueError(f"not a version 00 traceparent: {traceparent!r}")
    trace_id, span_id, flags = (bytes.fromhex(p) for p in parts[1:])
    if not any(trace_id) or not any(span_id):
        raise ValueError(f"traceparent with an all-zero id: {traceparent!r}")
    return _TRACE.pack(trace_id, span_id, flags[0])


def _traceparent(data: bytes) -> str:
    trace_id, span_id, flags = _TRACE.unpack_from(data, _FRAME.size)
    if not any(trace_id) or not any(span_id):
        raise AlertDecodeError("alert trace context has an all-zero id")
    return f"00-{trace_id.hex()}-{span_id.hex()}-{flags:02x}"


def encode(a: Alert, key: bytes | None = None, link_keys: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """``link_keys``: (key id, key) of every session on the link it goes out on (version 2);
    else ``key``: a shared key (version 1, one tag); else untagged."""
    if a.kind not in KIND_CODES:
        raise ValueError(f"unknown alert kind {a.kind!r}")
    entries = list(link_keys[:MAX_PER_LINK])
    version, flags = (VERSION_SESSION, FLAG_SESSION) if entries else (VERSION, FLAG_AUTH if key else 0)
    trace = _trace_bytes(a.traceparent) if a.traceparent else b""
    out = _FRAME.pack(MAGIC, version, flags | (FLAG_TRACE if trace else 0), max(0, min(a.hold_ms, 0xFFFF)),
                      a.seq & 0xFFFFFFFF, bytes.fromhex(a.origin.replace(":", "")), KIND_CODES[a.kind], 0) + trace
    if entries:
        out += bytes([len(entries)])
        return out + tag_entries(out, entries)
    if key:
        out += shared_tag(key, out)
    return out


def decode(data: bytes, key: bytes | None = None, lookup: Callable[[bytes], bytes | None] | None = None) -> Alert:
    """Parse one datagram; raises :class:`AlertDecodeError` and nothing else on bad input.

    ``lookup`` (key id -> key): this node takes alerts hop by hop, keyed by its sessions, and the
    alert must carry an entry that verifies under one of them. Else ``key``: a shared key."""
    if len(data) < _FRAME.size:
        raise AlertDecodeError(f"alert too short ({len(data)} bytes)")
    magic, version, flags, hold, seq, origin, kind, _r = _FRAME.unpack_from(data)
    if magic != MAGIC:
        raise AlertDecodeError("not a mesh alert")
    if version not in (VERSION, VERSION_SESSION):
        raise AlertDecodeError(f"alert version {version} not understood")
    if _r or flags & ~((FLAG_SESSION if version == VERSION_SESSION else FLAG_AUTH) | FLAG_TRACE):
        raise AlertDecodeError("alert has reserved bits set")
    session = version == VERSION_SESSION
    end = _FRAME.size + (_TRACE.size if flags & FLAG_TRACE else 0)  # what the tags cover
    count = 0
    if session:
        count = data[end] if len(data) > end else 0
        if not flags & FLAG_SESSION or count == 0 or len(data) != end + 1 + count * ENTRY_LEN:
            raise AlertDecodeError(f"alert length {len(data)} does not match its session tags")
    elif len(data) != end + (TAG_LEN if flags & FLAG_AUTH else 0):
        raise AlertDecodeError(f"alert length {len(data)} is wrong")
    try:
        authenticate(data, end, session=session, count=count, key=key, lookup=lookup)
    except LinkTagError as exc:
        raise AlertDecodeError(f"alert {exc}", exc.reason) from None
    if kind not in KINDS:
        raise AlertDecodeError(f"unknown alert kind {kind}")
    if origin[0] & 0x01:
        raise AlertDecodeError("alert origin is a multicast address")
    return Alert(origin=":".join(f"{b:02x}" for b in origin), seq=seq, kind=KINDS[kind], hold_ms=hold,
                 traceparent=_traceparent(data) if flags & FLAG_TRACE else None)


@dataclass(frozen=True, slots=True)
class Heard:
    """An alert in force on this node: from ``origin``, about ``kind``, until ``until``."""

    origin: str
    kind: str
    until: float


@dataclass
class Board:
    """The alerts in force (one per origin: its latest), bounded by ``max_origins``.

    ``hold_max`` caps what a sender may ask for; a repeat (same ``seq``) or an older alert of an
    origin changes nothing, so a flood of copies is as good as one."""

    hold_max: float
    max_origins: int = 256
    heard: dict[str, Heard] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def hear(self, a: Alert, now: float) -> bool:
        """Record ``a``; True when it is new (not a repeat, an older one, or a replay)."""
        last = self.seqs.get(a.origin)
        if last is not None:
            diff = (a.seq - last) & 0xFFFFFFFF
            if diff == 0 or diff >= 0x80000000:
                return False  # the same seq, or older (serial number arithmetic)
        self.expire(now)
        if a.origin not in self.seqs and len(self.seqs) >= self.max_origins:
            quiet = next((o for o in self.seqs if o not in self.heard), None)
            if quiet is None:
                return False  # full of alerts in force: a storm of fake origins gains nothing
            del self.seqs[quiet]  # the origin heard longest ago whose alert is over
        self.seqs.pop(a.origin, None)
        self.seqs[a.origin] = a.seq  # kept in the order last heard
        self.heard[a.origin] = Heard(a.origin, a.kind, now + min(a.hold_ms / 1000.0, self.hold_max))
        return True

    def expire(self, now: float) -> None:
        """Drop the alerts whose hold is over. Their origins' newest ``seq`` stays (a replay of an
        alert whose hold ran out is still old); an agent that restarts starts its ``seq`` from its
        clock, so its alerts are newer."""
        for origin in [o for o, h in self.heard.items() if h.until <= now]:
            del self.heard[origin]

    def active(self, now: float) -> tuple[Heard, ...]:
        self.expire(now)
        return tuple(sorted(self.heard.values(), key=lambda h: h.origin))
