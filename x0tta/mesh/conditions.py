"""The mesh subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

The heal loop reads batman-adv through the same client, so it reports ``batman_adv_missing`` too.
Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

BATMAN_ADV_MISSING = ConditionSpec(
    "batman_adv_missing", Severity.DEGRADED, "the kernel has no batman-adv (generic netlink family 'batadv')"
)
BATMAN_ADV_NO_CONFIG_GROUP = ConditionSpec(
    "batman_adv_no_config_group", Severity.DEGRADED, "batman-adv is too old: no 'config' multicast group"
)
MESH_MISSING = ConditionSpec(
    "mesh_missing", Severity.DEGRADED, "the mesh interface does not exist and [mesh] create is false"
)
MESH_ALGO_MISMATCH = ConditionSpec(
    "mesh_algo_mismatch", Severity.DEGRADED, "the mesh interface runs another routing algorithm than configured"
)
MESH_RECONCILE_FAILED = ConditionSpec(
    "mesh_reconcile_failed", Severity.DEGRADED, "the kernel refused a change that reconciles the mesh with [mesh]"
)

CONDITIONS = (BATMAN_ADV_MISSING, BATMAN_ADV_NO_CONFIG_GROUP, MESH_MISSING, MESH_ALGO_MISMATCH, MESH_RECONCILE_FAILED)
