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

``origin`` is the sender's originator address (its primary interface MAC); ``seq`` grows with each
new alert of that sender, and a repeat of the same alert (sent twice, in case one copy is lost)
carries the same ``seq``. ``kind``: 2 silent loss, 3 link down (1, link suspect, is understood but
not sent: a mere suspicion stays the business of the node that has it). With flag bit 0 set
the datagram ends with a 16-byte HMAC-SHA256 tag keyed by the probe key (``[heal]
probe_key_file``); a receiver with a key drops untagged or badly tagged alerts. Without a key a
forged alert can only make nodes forward OGMs without aggregating them for ``alert_hold_max``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from x0tta.common.errors import DecodeError

MAGIC = b"X0MA"
VERSION = 1
FLAG_AUTH = 0x01
TAG_LEN = 16
_FRAME = struct.Struct("!4sBBHI6sBB")
KINDS = {1: "link_suspect", 2: "silent_loss", 3: "link_down"}
KIND_CODES = {v: k for k, v in KINDS.items()}


class AlertDecodeError(DecodeError):
    """A datagram that is not a valid mesh alert (or fails its authentication)."""


@dataclass(frozen=True, slots=True)
class Alert:
    origin: str  # MAC, aa:bb:cc:dd:ee:ff
    seq: int
    kind: str  # one of KINDS' values
    hold_ms: int


def encode(a: Alert, key: bytes | None = None) -> bytes:
    if a.kind not in KIND_CODES:
        raise ValueError(f"unknown alert kind {a.kind!r}")
    out = _FRAME.pack(MAGIC, VERSION, FLAG_AUTH if key else 0, max(0, min(a.hold_ms, 0xFFFF)),
                      a.seq & 0xFFFFFFFF, bytes.fromhex(a.origin.replace(":", "")), KIND_CODES[a.kind], 0)
    if key:
        out += hmac.new(key, out, hashlib.sha256).digest()[:TAG_LEN]
    return out


def decode(data: bytes, key: bytes | None = None) -> Alert:
    """Parse one datagram; raises :class:`AlertDecodeError` and nothing else on bad input."""
    if len(data) < _FRAME.size:
        raise AlertDecodeError(f"alert too short ({len(data)} bytes)")
    magic, version, flags, hold, seq, origin, kind, _r = _FRAME.unpack_from(data)
    if magic != MAGIC:
        raise AlertDecodeError("not a mesh alert")
    if version != VERSION:
        raise AlertDecodeError(f"alert version {version} not understood")
    if flags & ~FLAG_AUTH or _r:
        raise AlertDecodeError("alert has reserved bits set")
    tagged = bool(flags & FLAG_AUTH)
    if len(data) != _FRAME.size + (TAG_LEN if tagged else 0):
        raise AlertDecodeError(f"alert length {len(data)} is wrong")
    if key is not None:
        if not tagged:
            raise AlertDecodeError("unauthenticated alert while a probe key is configured")
        want = hmac.new(key, data[:_FRAME.size], hashlib.sha256).digest()[:TAG_LEN]
        if not hmac.compare_digest(want, data[_FRAME.size:]):
            raise AlertDecodeError("alert authentication failed")
    if kind not in KINDS:
        raise AlertDecodeError(f"unknown alert kind {kind}")
    if origin[0] & 0x01:
        raise AlertDecodeError("alert origin is a multicast address")
    return Alert(origin=":".join(f"{b:02x}" for b in origin), seq=seq, kind=KINDS[kind], hold_ms=hold)


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
        """Record ``a``; True when it is new (not a repeat or an older one)."""
        last = self.seqs.get(a.origin)
        if last is not None:
            diff = (a.seq - last) & 0xFFFFFFFF
            if diff == 0 or diff >= 0x80000000:
                return False  # the same seq, or older (serial number arithmetic)
        self.expire(now)
        if a.origin not in self.seqs and len(self.seqs) >= self.max_origins:
            return False  # full: what is in force stays; a storm of fake origins gains nothing
        self.seqs[a.origin] = a.seq
        self.heard[a.origin] = Heard(a.origin, a.kind, now + min(a.hold_ms / 1000.0, self.hold_max))
        return True

    def expire(self, now: float) -> None:
        for origin in [o for o, h in self.heard.items() if h.until <= now]:
            del self.heard[origin]
        # forget the seq of an origin quiet for long (a restarted agent starts its seq again)
        for origin in [o for o in self.seqs if o not in self.heard]:
            del self.seqs[origin]

    def active(self, now: float) -> tuple[Heard, ...]:
        self.expire(now)
        return tuple(sorted(self.heard.values(), key=lambda h: h.origin))
