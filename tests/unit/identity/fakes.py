"""A subsystem context for driving the identity subsystem in tests (the agent's is in x0tta.agent)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.telemetry.testing import StandaloneContext


@dataclass
class FakeContext(StandaloneContext):
    name: str = "identity"
    node_id: str = "r1"


def settings(state: Path, **identity: Any) -> AgentSettings:
    return build(AgentSettings, {"node": {"id": "r1", "state_dir": str(state)}, "identity": identity})
