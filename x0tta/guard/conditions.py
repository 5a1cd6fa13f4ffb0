"""The guard subsystem's health conditions, declared as data (see :mod:`x0tta.common.health`).

Each code has its entry in docs/troubleshooting.md, under its anchor.
"""

from __future__ import annotations

from x0tta.common.health import ConditionSpec, Severity

GUARD_NOT_ENFORCED = ConditionSpec(
    "guard_not_enforced", Severity.DEGRADED, "the probes have not loaded the guard's eBPF maps: nothing is dropped"
)

CONDITIONS = (GUARD_NOT_ENFORCED,)
