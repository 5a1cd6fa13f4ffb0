"""Who stands behind an admitted MAC, and who is shut out for a while. Pure: data and ``now`` in.

**Bindings.** A neighbour's MAC is admitted by the peer subsystem once a PQ mTLS handshake on that
link authenticated a SPIFFE ID; :class:`Bindings` records that pair (the MAC, the interface its
link-local address named, the SPIFFE ID, the sessions up) so that an operator sees who each
admission belongs to. A binding ends:

* when its last session closed for a revocation (the CRL lists its SVID): at once;
* when its SPIFFE ID is revoked while no session of it is up (the CA node's revocation through the
  replicated mesh state, :meth:`Bindings.revoke`): at once, not after the grace;
* when its last session closed otherwise and no new one came within ``grace`` seconds: a
  re-authentication or a restart of the neighbour's agent reconnects within seconds, and its
  frames keep passing meanwhile (:meth:`Bindings.expire`);
* when it is quarantined.

**Quarantine.** :meth:`Bindings.quarantine` shuts a neighbour out for ``ttl`` seconds: its binding
and admission end, and a new session from that MAC, or with that SPIFFE ID from any MAC, is
refused (:meth:`Bindings.refusal`) until the TTL runs out (:meth:`Bindings.expire`) or an operator
releases it (:meth:`Bindings.release`, by MAC or SPIFFE ID). Never more than ``share`` of the
neighbours this node has are quarantined at once: with the one asked for, ``quarantined /
neighbours`` must stay at or below it, so a detector gone wrong cannot cut a node off its mesh.

Times are the caller's monotonic seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from x0tta.guard.core.admission import BadMac, format_mac, parse_mac

REVOKED = "revoked"  # the peer subsystem's close reason when the CRL lists a session's SVID


@dataclass(frozen=True)
class Binding:
    spiffe_id: str
    interface: str  # the zone of the link-local address the handshake came from ("" when none)
    since: float
    sessions: int = 1
    lost_at: float | None = None  # when its last session closed; None while one is up


@dataclass(frozen=True)
class Quarantined:
    spiffe_id: str | None  # the identity bound to the MAC when it was quarantined, if any
    since: float
    until: float
    reason: str


@dataclass(frozen=True)
class Bindings:
    bound: Mapping[bytes, Binding] = field(default_factory=dict)
    quarantined: Mapping[bytes, Quarantined] = field(default_factory=dict)

    # -- sessions -------------------------------------------------------------------------------

    def up(self, mac: bytes, spiffe_id: str, interface: str, now: float) -> tuple[Bindings, str]:
        """A session authenticated ``spiffe_id`` on ``mac``'s link: the new state and "" when the
        MAC may be admitted, or the reason it is refused (quarantined)."""
        why = self.refusal(mac, spiffe_id)
        if why:
            return self, why
        old = self.bound.get(mac)
        if old is None or old.spiffe_id != spiffe_id:
            b = Binding(spiffe_id, interface, now)
        else:
            b = replace(old, sessions=(old.sessions if old.lost_at is None else 0) + 1, lost_at=None,
                        interface=interface or old.interface)
        return replace(self, bound={**self.bound, mac: b}), ""

    def down(self, mac: bytes, now: float, reason: str = "") -> tuple[Bindings, bool]:
        """A session of ``mac`` closed (``reason``: why): the new state and whether the binding,
        and with it the admission, ends now (its last session closed for a revocation)."""
        b = self.bound.get(mac)
        if b is None or b.lost_at is not None:
            return self, False
        if b.sessions > 1:
            return replace(self, bound={**self.bound, mac: replace(b, sessions=b.sessions - 1)}), False
        if reason.split(":", 1)[0] == REVOKED:
            return self._without(mac), True
        return replace(self, bound={**self.bound, mac: replace(b, sessions=0, lost_at=now)}), False

    def expire(self, now: float, grace: float) -> tuple[Bindings, list[bytes], list[bytes]]:
        """(state, MACs whose binding ended: no session for ``grace`` s, quarantines over)."""
        lost = sorted(m for m, b in self.bound.items() if b.lost_at is not None and now - b.lost_at >= grace)
        over = sorted(m for m, q in self.quarantined.items() if now >= q.until)
        if not lost and not over:
            return self, [], []
        bound = {m: b for m, b in self.bound.items() if m not in lost}
        quarantined = {m: q for m, q in self.quarantined.items() if m not in over}
        return Bindings(bound, quarantined), lost, over

    def next_due(self, grace: float) -> float | None:
        """The earliest time :meth:`expire` has something to do, or None."""
        due = [b.lost_at + grace for b in self.bound.values() if b.lost_at is not None]
        due += [q.until for q in self.quarantined.values()]
        return min(due, default=None)

    # -- quarantine -----------------------------------------------------------------------------

    def refusal(self, mac: bytes, spiffe_id: str | None = None) -> str:
        """Why a session from ``mac`` authenticated as ``spiffe_id`` is refused, or ""."""
        if mac in self.quarantined:
            return f"{format_mac(mac)} is quarantined"
        if spiffe_id and any(q.spiffe_id == spiffe_id for q in self.quarantined.values()):
            return f"{spiffe_id} is quarantined"
        return ""

    def quarantine(self, mac: bytes, now: float, ttl: float, reason: str, neighbours: Iterable[bytes],
                   share: float) -> tuple[Bindings, str]:
        """Quarantine ``mac`` until ``now + ttl``: the new state and "", or the state unchanged and
        why not. ``neighbours``: the MACs this node hears now (the quarantined one among them);
        ``share``: at most this share of them (those quarantined already counted among them)
        quarantined at once. Quarantining a MAC again
        extends its TTL and needs no room."""
        if ttl <= 0:
            return self, "the TTL must be positive"
        old = self.quarantined.get(mac)
        if old is None:
            heard = set(neighbours) | {mac} | set(self.quarantined)  # the quarantined are neighbours too
            active = len(self.quarantined) + 1
            if active > share * len(heard):
                return self, (f"{active} of {len(heard)} neighbours quarantined would be more than the share "
                              f"allowed ({share:g})")
        b = self.bound.get(mac)
        spiffe_id = b.spiffe_id if b is not None else (old.spiffe_id if old else None)
        q = Quarantined(spiffe_id, old.since if old else now, max(now + ttl, old.until if old else 0.0), reason)
        return replace(self._without(mac), quarantined={**self.quarantined, mac: q}), ""

    def revoke(self, spiffe_id: str) -> tuple[Bindings, list[bytes]]:
        """End every binding of ``spiffe_id`` at once, its sessions up or lost (its certificate is
        revoked): the new state and the MACs whose binding ended."""
        macs = sorted(m for m, b in self.bound.items() if b.spiffe_id == spiffe_id)
        if not macs:
            return self, []
        return replace(self, bound={m: b for m, b in self.bound.items() if m not in macs}), macs

    def bound_macs(self, who: str) -> list[bytes]:
        """The MACs ``who`` names: a MAC itself, or a SPIFFE ID's every bound MAC (none: [])."""
        try:
            return [parse_mac(who)]
        except BadMac:
            return sorted(m for m, b in self.bound.items() if b.spiffe_id == who)

    def release(self, who: str) -> tuple[Bindings, list[bytes]]:
        """End the quarantines of ``who``: a MAC, or a SPIFFE ID (every MAC quarantined with it)."""
        try:
            macs = [parse_mac(who)] if parse_mac(who) in self.quarantined else []
        except BadMac:
            macs = sorted(m for m, q in self.quarantined.items() if q.spiffe_id == who)
        if not macs:
            return self, []
        return replace(self, quarantined={m: q for m, q in self.quarantined.items() if m not in macs}), macs

    def _without(self, mac: bytes) -> Bindings:
        return replace(self, bound={m: b for m, b in self.bound.items() if m != mac})

    def to_json(self, now: float) -> dict[str, list[dict[str, object]]]:
        return {
            "bindings": [
                {"mac": format_mac(m), "spiffe_id": b.spiffe_id, "interface": b.interface or None,
                 "sessions": b.sessions, "age": round(now - b.since, 1),
                 "lost_for": None if b.lost_at is None else round(now - b.lost_at, 1)}
                for m, b in sorted(self.bound.items())
            ],
            "quarantined": [
                {"mac": format_mac(m), "spiffe_id": q.spiffe_id, "reason": q.reason,
                 "age": round(now - q.since, 1), "expires_in": round(q.until - now, 1)}
                for m, q in sorted(self.quarantined.items())
            ],
        }


def effective_mode(configured: str, identity_since: float | None, started: float, grace: float, now: float) -> str:
    """The mode the kernel guard runs in. ``configured``: ``[guard] mode``; ``auto`` enforces once
    this node has an identity (``identity_since``: when it got it, None before) and ``grace``
    seconds have passed since the later of that and ``started``, so that its neighbours' handshakes
    admit them first; observe before. ``observe`` and ``enforce`` are taken as they are."""
    if configured != "auto":
        return configured
    if identity_since is None:
        return "observe"
    return "enforce" if now - max(identity_since, started) >= grace else "observe"
