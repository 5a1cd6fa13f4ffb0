"""Health declared as data.

Every condition a subsystem can report is declared once, as a :class:`ConditionSpec` (a stable
machine-readable ``code``, a :class:`Severity`, a one-line ``summary`` of what it means and the
``anchor`` of its entry in docs/troubleshooting.md), in a module-level table: ``CONDITIONS`` of
``x0tta/<subsystem>/conditions.py``, and below for the supervisor's own. A service raises one by
reference, giving only what is dynamic: ``MESH_RECONCILE_FAILED(str(exc))`` is a
:class:`Condition`; a :class:`~x0tta.common.errors.CapabilityMissing` is raised with its spec too. A
``Condition`` cannot be built from a bare string, so every code an operator sees is declared, and
a unit test (tests/unit/test_conditions.py) holds each declared code to its documentation.

A subsystem reports a list of conditions; its state is the worst severity among them; no condition
means ``ok``. Operators see the same data in ``/readyz``, ``x0tta status`` (``--explain`` adds
each condition's summary and docs anchor) and the ``x0tta_subsystem_state`` metric, so a condition
code is part of the public interface: name it after what is wrong (``batman_adv_missing``,
``svid_expiring``), not after the code that found it.
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


TROUBLESHOOTING = "docs/troubleshooting.md"


@dataclass(frozen=True)
class ConditionSpec:
    """One declared condition. ``anchor`` is the id of its entry in docs/troubleshooting.md; it
    defaults to the code. Calling the spec with the message of the moment gives the condition."""

    code: str
    severity: Severity
    summary: str
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            object.__setattr__(self, "anchor", self.code)

    @property
    def docs(self) -> str:
        return f"{TROUBLESHOOTING}#{self.anchor}"

    def __call__(self, message: str) -> Condition:
        return Condition(self, message)


@dataclass(frozen=True)
class Condition:
    """A declared condition as reported at one moment: the spec, and the message that says what
    exactly is wrong now."""

    spec: ConditionSpec
    message: str

    def __post_init__(self) -> None:
        if not isinstance(self.spec, ConditionSpec):
            raise TypeError(f"a Condition is raised from a declared ConditionSpec, not {self.spec!r}")

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def severity(self) -> Severity:
        return self.spec.severity

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


# The supervisor's own conditions, which any subsystem can carry (docs/troubleshooting.md, "Any
# subsystem"). A missing capability carries the code its CapabilityMissing was raised with.
STARTING = ConditionSpec("starting", Severity.STARTING, "the subsystem has not run yet")
SUBSYSTEM_ERROR = ConditionSpec(
    "subsystem_error", Severity.FAILING, "the subsystem stopped with one of x0tta's typed errors and is restarted"
)
SUBSYSTEM_CRASH = ConditionSpec(
    "subsystem_crash", Severity.FAILING, "the subsystem stopped with an unexpected exception (a bug) and is restarted"
)

CONDITIONS = (STARTING, SUBSYSTEM_ERROR, SUBSYSTEM_CRASH)
