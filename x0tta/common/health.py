"""Health declared as data.

A subsystem reports a list of :class:`Condition` (a stable machine-readable ``code``, a
:class:`Severity`, a human ``message``). Its state is the worst severity among them; no condition
means ``ok``. Operators see the same data in ``/readyz``, ``x0tta status`` and the
``x0tta_subsystem_state`` metric, so a condition code is part of the public interface: name it
after what is wrong (``batman_adv_missing``, ``svid_expiring``), not after the code that found it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """Ordered so that ``max()`` picks the worst."""

    OK = 0
    STARTING = 1
    DEGRADED = 2
    FAILING = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Condition:
    code: str
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity.label, "message": self.message}


@dataclass(frozen=True)
class Health:
    """The health of one subsystem at one moment."""

    subsystem: str
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    restarts: int = 0
    since: float = 0.0  # wall-clock time (unix seconds) when the state last changed

    @property
    def state(self) -> Severity:
        return max((c.severity for c in self.conditions), default=Severity.OK)

    def to_json(self) -> dict[str, object]:
        return {
            "subsystem": self.subsystem,
            "state": self.state.label,
            "restarts": self.restarts,
            "since": self.since,
            "conditions": [c.to_json() for c in self.conditions],
        }


def overall(healths: list[Health]) -> Severity:
    return max((h.state for h in healths), default=Severity.OK)
