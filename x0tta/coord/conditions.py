"""The coord subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

COORD_CONNECTING = ConditionSpec("coord_connecting", Severity.STARTING, "the first request to the etcd cluster")
COORD_ETCD_UNREACHABLE = ConditionSpec(
    "coord_etcd_unreachable", Severity.DEGRADED,
    "no etcd member answers: rollouts wait, everything else works as before",
)
COORD_ROLLOUT_UNVERIFIED = ConditionSpec(
    "coord_rollout_unverified", Severity.DEGRADED,
    "a rollout in etcd is not signed by the operator's key: this node ignores it",
)
COORD_TURN_LOST = ConditionSpec(
    "coord_turn_lost", Severity.DEGRADED,
    "this node lost its turn before it finished (lease expired): its change was undone",
)
COORD_CERTIFICATE_UNUSABLE = ConditionSpec(
    "coord_certificate_unusable", Severity.DEGRADED, "the etcd client certificate or CA cannot be used",
)

CONDITIONS = (
    COORD_CONNECTING, COORD_ETCD_UNREACHABLE, COORD_ROLLOUT_UNVERIFIED, COORD_TURN_LOST, COORD_CERTIFICATE_UNUSABLE,
)
