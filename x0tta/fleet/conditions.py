"""The fleet subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

FLEET_CONNECTING = ConditionSpec("fleet_connecting", Severity.STARTING, "the first connection to the broker")
FLEET_BROKER_UNREACHABLE = ConditionSpec(
    "fleet_broker_unreachable", Severity.DEGRADED,
    "the fleet broker cannot be reached: messages wait in the outbox",
)
FLEET_PUBLISH_REFUSED = ConditionSpec(
    "fleet_publish_refused", Severity.DEGRADED, "the broker's ACL refused this node's topics",
)
FLEET_OUTBOX_FULL = ConditionSpec(
    "fleet_outbox_full", Severity.DEGRADED, "the outbox is full: the oldest informational messages are dropped",
)
FLEET_CERTIFICATE_MISSING = ConditionSpec(
    "fleet_certificate_missing", Severity.DEGRADED, "no client certificate for the fleet broker",
)
FLEET_CERTIFICATE_UNUSABLE = ConditionSpec(
    "fleet_certificate_unusable", Severity.DEGRADED, "the fleet client certificate cannot be used",
)

CONDITIONS = (
    FLEET_CONNECTING, FLEET_BROKER_UNREACHABLE, FLEET_PUBLISH_REFUSED, FLEET_OUTBOX_FULL,
    FLEET_CERTIFICATE_MISSING, FLEET_CERTIFICATE_UNUSABLE,
)
