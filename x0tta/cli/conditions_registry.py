"""Every health condition x0tta declares, in one registry: what ``x0tta status --explain`` looks a
reported code up in, and what the tests hold to docs/troubleshooting.md.

Each subsystem declares its conditions in ``x0tta/<subsystem>/conditions.py`` (``CONDITIONS``);
the supervisor's own, which any subsystem can carry, are in :mod:`x0tta.common.health`. The CLI
sits above every subsystem package, so it can gather them without the agent.
"""

from __future__ import annotations

from x0tta.common import health as common
from x0tta.common.health import ConditionSpec
from x0tta.coord import conditions as coord
from x0tta.fleet import conditions as fleet
from x0tta.guard import conditions as guard
from x0tta.heal import conditions as heal
from x0tta.identity import conditions as identity
from x0tta.mesh import conditions as mesh
from x0tta.peer import conditions as peer
from x0tta.probes import conditions as probes

# (who declares, its conditions), in the order of docs/troubleshooting.md
TABLES: tuple[tuple[str, tuple[ConditionSpec, ...]], ...] = (
    ("supervisor", common.CONDITIONS),
    ("mesh", mesh.CONDITIONS),
    ("heal", heal.CONDITIONS),
    ("identity", identity.CONDITIONS),
    ("peer", peer.CONDITIONS),
    ("probes", probes.CONDITIONS),
    ("guard", guard.CONDITIONS),
    ("fleet", fleet.CONDITIONS),
    ("coord", coord.CONDITIONS),
)


def declared() -> dict[str, ConditionSpec]:
    """Every declared condition by code; a code declared twice is a ValueError."""
    out: dict[str, ConditionSpec] = {}
    for _, specs in TABLES:
        for spec in specs:
            if spec.code in out:
                raise ValueError(f"condition code {spec.code!r} is declared twice")
            out[spec.code] = spec
    return out
