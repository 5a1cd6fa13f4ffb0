"""One rollout worker: the coord subsystem (x0tta.coord.service.CoordService) of one node, run in
a process of its own so that a test can SIGSTOP, SIGCONT and kill it. Not a whole agent: the
subsystem with a StandaloneContext, a file of settings as its change handler, and the stand-in
operator verifier (Ed25519: the hybrid one is plugged in by the wiring, docs/coordination.md).

Its health for the rollout (``Sample``): one unhealthy subsystem while its settings file holds the
value ``breaks-routing`` - the test's stand-in for a setting that breaks the mesh.

    python worker.py CONFIG.json     (CONFIG: node, endpoints, cert/key/ca, settings file, key file, ...)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from x0tta.config.coord import CoordSettings
from x0tta.config.schema import AgentSettings, NodeSettings
from x0tta.coord.core.rollout import Sample
from x0tta.coord.handlers import FileSettings
from x0tta.coord.service import CoordService
from x0tta.telemetry.testing import StandaloneContext

BREAKS = "breaks-routing"


def stand_in_verify(public: bytes, data: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


async def main(cfg: dict) -> None:
    settings_file = cfg["settings_file"]
    handler: FileSettings

    async def sample() -> Sample:
        data = await asyncio.to_thread(handler.read)
        return Sample(unhealthy=int(BREAKS in data.values()))

    handler = FileSettings(settings_file, sample)
    coord = CoordSettings(endpoints=tuple(cfg["endpoints"]), cert_file=cfg["cert_file"], key_file=cfg["key_file"],
                          ca_file=cfg["ca_file"], operator_key_file=cfg["operator_key_file"], prefix=cfg["prefix"],
                          poll_interval=cfg.get("poll_interval", 0.2), turn_ttl=cfg.get("turn_ttl", 3),
                          request_timeout=cfg.get("request_timeout", 1.0), segment=cfg.get("segment", ""))
    settings = AgentSettings(node=NodeSettings(id=cfg["node"], state_dir=str(Path(settings_file).parent)), coord=coord)
    ctx = StandaloneContext(settings, name="coord", node_id=cfg["node"])
    service = CoordService(coord, handler=handler, verifier=stand_in_verify)
    print("ready", flush=True)
    await service.run(ctx)


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
