"""Settings of the MAPE-K loop (section [heal])."""

from __future__ import annotations

from dataclasses import dataclass

from x0tta.config.fields import setting


@dataclass(frozen=True)
class HealSettings:
    enabled: bool = setting(True, doc="Run this subsystem. It degrades by itself when the node lacks what it needs.")
