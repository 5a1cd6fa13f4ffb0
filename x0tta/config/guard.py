"""Settings of the admission guard (section [guard]).

The guard's programs and maps are part of the eBPF object the probes load (``[probes]``); these
settings say what the guard does with them. Until 2026-12 the keys lived in ``[probes]``
(``guard_mode``, ``admitted_macs``, ``admitted_map_size``): the loader still takes them there,
maps them here and says so (:data:`x0tta.config.loader.MOVED`).
"""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting

MAC_PATTERN = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"


@dataclass(frozen=True)
class GuardSettings:
    enabled: bool = setting(
        True,
        doc="Run this subsystem: admissions by authenticated handshake and the guard.* admin "
        "commands. Off: nothing admits a neighbour, so the kernel guard is put in observe when the "
        "probes load (nothing dropped, would-be drops still counted).",
    )
    mode: str = setting(
        "observe",
        doc="observe: batman-adv frames from non-admitted MACs pass and are counted as would-be "
        "drops; enforce: they are dropped. observe by default so that turning the guard on cannot "
        "partition a running mesh before every node admits its neighbours.",
        choices=("observe", "enforce"),
    )
    admitted_macs: tuple[str, ...] = setting(
        default_factory=tuple,
        doc="MACs admitted without a handshake (aa:bb:cc:dd:ee:ff): nodes that run no x0tta, and "
        "the seeds of a new mesh. They cannot be revoked at run time.",
        pattern=MAC_PATTERN,
    )
    admitted_map_size: int = setting(
        1024,
        doc="Capacity of the guard's admitted-MAC map: every neighbour interface of a large mesh, "
        "with room to spare. Admissions beyond it fail loudly. The probes create the map, so a "
        "change restarts them (the pinned map starts again from the admissions in force).",
        min=16,
        max=65_536,
    )
