"""Peers this node refuses whatever their certificates say: revoked SPIFFE IDs and serials.

A peer's SVID is checked against the trust bundle and the CRLs the identity subsystem holds; a
revocation can reach a node before its CRL does (the replicated mesh state carries the CA node's
revocations, docs/fleet.md). The composition root hands the peer subsystem a :class:`DenyList`
of them (:meth:`x0tta.peer.service.PeerService.deny`): an authenticated session whose SPIFFE ID or
leaf serial is on it is refused before anyone hears of it, and one that is up is sent away, both
with the reason ``revoked``. Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DenyList:
    """``ids``: SPIFFE ID -> why; ``serials``: certificate serial -> why."""

    ids: Mapping[str, str] = field(default_factory=dict)
    serials: Mapping[int, str] = field(default_factory=dict)

    def refusal(self, spiffe_id: str, serial: int | None = None) -> str:
        """Why a peer authenticated as ``spiffe_id`` with a leaf of ``serial`` is refused, or ""."""
        if spiffe_id in self.ids:
            return f"{spiffe_id} is revoked: {self.ids[spiffe_id]}"
        if serial is not None and serial in self.serials:
            return f"certificate {serial:x} is revoked: {self.serials[serial]}"
        return ""

    def __bool__(self) -> bool:
        return bool(self.ids or self.serials)
