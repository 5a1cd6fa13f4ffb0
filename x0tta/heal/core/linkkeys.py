"""Per-link keys for liveness probes, from the neighbours' PQ mTLS sessions (sans-IO).

Why: a probe that anyone can forge lets anyone fake or hide loss on a link, and the loop acts on
loss. Every authenticated session with a neighbour gives both ends one secret nobody else holds:
the TLS exporter (RFC 8446 section 7.5) with label :data:`LABEL`. Each such secret keys the probes
on the link that session runs over, in both directions, and it rotates with the session (every
re-authentication is a new full handshake, so a new secret).

A probe is multicast to every neighbour on the link at once, so it carries one tag per session the
sender holds on that link (:func:`~x0tta.heal.core.liveness.encode`): a 4-byte key id (derived from
the secret, :func:`key_id`) and a 12-byte HMAC-SHA256 tag. The receiver finds its entry by key id
among its own sessions on that interface.

``required``: once this node takes its probe keys from sessions (it has an identity and a peer
subsystem), a probe that does not verify under one of them is refused: unkeyed, wrongly keyed,
tagged for nobody here, or from another sender than the one first seen under that key (a key is
*pinned* to the sender MAC of the first probe it verified). A session that closed keeps verifying
for ``grace`` seconds: probes in flight, and the other end's view of the close, arrive late.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LABEL = b"EXPORTER-x0tta-link-v1"  # the TLS exporter label; both ends of a session derive the same bytes
KEY_LEN = 32
KID_LEN = 4
GRACE = 2.0
MAX_PER_LINK = 64  # sessions whose keys tag one probe: two per neighbour (in and out) on a busy link
TAG_LEN = 12
ENTRY_LEN = KID_LEN + TAG_LEN


class LinkTagError(Exception):
    """No entry verifies; ``reason``: ``not_for_us`` (none is for a key of this node) or ``bad_tag``.
    The codecs turn it into their own decode error."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")  # one C call: probes are tagged ten times a second per link


def key_id(key: bytes) -> bytes:
    """The key's public name on the wire: says which entry is for whom, reveals nothing of it."""
    return _mac(key, b"x0tta link key id")[:KID_LEN]


def tag_entries(body: bytes, link_keys: Sequence[tuple[bytes, bytes]]) -> bytes:
    """One entry per (key id, key): the key id, then HMAC-SHA256(key, body) cut to TAG_LEN."""
    return b"".join(kid + _mac(k, body)[:TAG_LEN] for kid, k in link_keys)


def verify_entries(data: bytes, start: int, count: int, lookup: Callable[[bytes], bytes | None]) -> bytes:
    """The key id of the entry (of ``count`` from ``start``) that verifies ``data[:start]``."""
    body = data[:start]
    for i in range(count):
        at = start + i * ENTRY_LEN
        kid = data[at:at + KID_LEN]
        k = lookup(kid)
        if k is None:
            continue
        if hmac.compare_digest(_mac(k, body)[:TAG_LEN], data[at + KID_LEN:at + ENTRY_LEN]):
            return kid
        raise LinkTagError("session tag does not verify", "bad_tag")
    raise LinkTagError(f"tagged for none of this node's sessions ({count} tags)", "not_for_us")


SHARED_TAG_LEN = 16  # the one tag of a shared key ([heal] probe_key_file)


def authenticate(data: bytes, end: int, *, session: bool, count: int = 0, key: bytes | None = None,
                 lookup: Callable[[bytes], bytes | None] | None = None) -> bytes | None:
    """The policy of both datagrams (probes, alerts) once their structure is checked: ``data[:end]``
    is what is signed; after it come the session entries (``session``: a count byte, then
    ``count`` entries) or the shared key's tag (or nothing). With ``lookup`` (key id -> key) a
    session entry must verify; else with ``key`` the shared tag must. Returns the key id that
    verified (None without ``lookup``); LinkTagError says why not."""
    if session:
        if lookup is not None:
            return verify_entries(data, end + 1, count, lookup)
        if key is not None:
            raise LinkTagError("carries session tags, this node a shared key", "unauthenticated")
        return None
    if lookup is not None:
        raise LinkTagError("carries no session tag while keys come from sessions", "unauthenticated")
    if key is not None:
        if len(data) == end:
            raise LinkTagError("is unauthenticated while a shared key is configured", "unauthenticated")
        want = _mac(key, data[:end])[:SHARED_TAG_LEN]
        if not hmac.compare_digest(want, data[end:]):
            raise LinkTagError("authentication failed", "bad_tag")
    return None


def shared_tag(key: bytes, body: bytes) -> bytes:
    return _mac(key, body)[:SHARED_TAG_LEN]


@dataclass(slots=True)
class LinkKey:
    hardif: str
    peer: str  # the session's peer address (fe80::...%hardif)
    key: bytes
    kid: bytes
    since: float
    closed_at: float | None = None
    pinned: str | None = None  # the sender MAC of the first probe verified under this key


@dataclass
class LinkKeys:
    """The probe keys of this node's sessions, per hard interface."""

    grace: float = GRACE
    required: bool = False
    keys: dict[str, dict[bytes, LinkKey]] = field(default_factory=dict)  # hardif -> kid -> key
    _signing: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)  # until the next change

    def up(self, hardif: str, peer: str, key: bytes, now: float) -> None:
        if len(key) < 16:
            raise ValueError("a link key needs at least 16 bytes")
        kid = key_id(key)
        link = self.keys.setdefault(hardif, {})
        old = link.get(kid)
        link[kid] = LinkKey(hardif, peer, key, kid, now, pinned=old.pinned if old else None)
        self._changed()

    def down(self, hardif: str, key: bytes, now: float) -> None:
        k = self.keys.get(hardif, {}).get(key_id(key))
        if k is not None and k.closed_at is None:
            k.closed_at = now
            self._changed()

    def _changed(self) -> None:
        self._signing.clear()

    def _live(self, k: LinkKey, now: float) -> bool:
        return k.closed_at is None or now - k.closed_at < self.grace

    def expire(self, now: float) -> None:
        for hardif, link in list(self.keys.items()):
            for kid in [kid for kid, k in link.items() if not self._live(k, now)]:
                del link[kid]
                self._changed()
            if not link:
                del self.keys[hardif]

    def signing(self, hardif: str) -> list[tuple[bytes, bytes]]:
        """(key id, key) to tag a probe on ``hardif`` with: every open session there, newest first."""
        cached = self._signing.get(hardif)
        if cached is None:
            link = self.keys.get(hardif, {})
            live = sorted((k for k in link.values() if k.closed_at is None), key=lambda k: -k.since)
            cached = self._signing[hardif] = [(k.kid, k.key) for k in live[:MAX_PER_LINK]]
        return cached

    def find(self, hardif: str, kid: bytes, now: float) -> LinkKey | None:
        k = self.keys.get(hardif, {}).get(kid)
        return k if k is not None and self._live(k, now) else None

    def senders(self, hardif: str, now: float) -> set[str | None]:
        """Whom the live keys on ``hardif`` are pinned to (None: a key not pinned yet)."""
        return {k.pinned for k in self.keys.get(hardif, {}).values() if self._live(k, now)}

    def count(self, now: float) -> int:
        return sum(1 for link in self.keys.values() for k in link.values() if self._live(k, now))
