"""The identity subsystem's settings and context in tests (the agent's context is in x0tta.agent)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.telemetry.testing import StandaloneContext

# the kit's standalone context, named for the identity subsystem of node r1
identity_context = functools.partial(StandaloneContext, name="identity", node_id="r1")


def settings(state: Path, **identity: Any) -> AgentSettings:
    return build(AgentSettings, {"node": {"id": "r1", "state_dir": str(state)}, "identity": identity})
