"""Settings of the replicated mesh state (section [meshstate]): the CRDT document every node of a
mesh holds, synced over the peer sessions (docs/fleet.md, "Replicated mesh state").

It runs only when turned on and the identity and peer subsystems run too: every update is signed
with the node's SVID key and carried by the PQ peer sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.common.spiffe_id import SpiffeId, SpiffeIdError
from x0tta.config.fields import setting


@dataclass(frozen=True)
class MeshStateSettings:
    enabled: bool = setting(
        False,
        doc="Hold and sync the replicated mesh state (node registry, quarantine claims, revocations, "
        "incident summaries). Off by default until it has run in the lab across a partition; needs "
        "the identity and peer subsystems.",
    )
    interval: float = setting(
        10.0,
        doc="How often this node pulls from every peer session what it lacks. A new write is pushed "
        "at once; the pull is what heals a partition, so this bounds how long a healed partition "
        "stays split (plus one round trip per 60 KiB page).",
        min=0.1,
        max=3600.0,
        unit="s",
    )
    compact_at_bytes: int = setting(
        1024 * 1024,
        doc="Size of the signed-update log of one epoch past which this node starts the next epoch "
        "(every node writes its own entries again there): bounds the disk and a newcomer's catch-up, "
        "~300 writes with ML-DSA-65 signatures.",
        min=64 * 1024,
        max=256 * 1024 * 1024,
        unit="B",
    )
    revokers: tuple[str, ...] = setting(
        (),
        doc="SPIFFE IDs of the nodes whose revocations the mesh takes and acts on (the CA nodes: "
        "their revoked nodes' peer sessions are closed and refused). Empty: the CA nodes of "
        "[identity] ca_ids. Give every node the same list, the CA node included: a CA node not on "
        "its own list writes no revocation. A revocation by anyone else is refused (not_revoker).",
    )
    role: str = setting(
        "node",
        doc="This node's role in its registry entry, as the operator names it (node, gateway, ca).",
        pattern=r"[a-z][a-z0-9_.-]{0,63}",
    )

    def __post_init__(self) -> None:
        for revoker in self.revokers:
            try:
                SpiffeId.parse(revoker)
            except SpiffeIdError as exc:
                raise ValueError(f"meshstate.revokers: {exc}") from exc
