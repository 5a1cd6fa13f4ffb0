"""The peer subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

IDENTITY_UNAVAILABLE = ConditionSpec(
    "identity_unavailable", Severity.DEGRADED, "no SVID of this node to open sessions with (identity not ready or off)"
)
LISTEN_FAILED = ConditionSpec(
    "listen_failed", Severity.FAILING, "the peer port could not be bound ([peer] port, listen_address)"
)
PEERS_UNREACHABLE = ConditionSpec(
    "peers_unreachable", Severity.DEGRADED, "configured or neighbour peers without a session (no answer, or refused)"
)

CLASSICAL_AUTHENTICATION = ConditionSpec(
    "classical_authentication", Severity.OK,
    "sessions whose peer authenticated with a classical signature (e.g. SPIRE's ECDSA P-256 SVIDs); "
    "their key exchange is still post-quantum",
)

CONDITIONS = (IDENTITY_UNAVAILABLE, LISTEN_FAILED, PEERS_UNREACHABLE, CLASSICAL_AUTHENTICATION)
