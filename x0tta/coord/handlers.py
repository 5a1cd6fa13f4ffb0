"""Change handlers: how a rollout's change reaches this node.

:class:`FileSettings` keeps the settings rollouts manage in one JSON file (``{"setting": value}``),
written atomically (temporary file, fsync, rename) off the event loop; the value before the change
is what rollback restores (a setting that did not exist is removed again). Health is sampled by a
callable the wiring gives (the agent's subsystems, the heal loop's harm, the originators seen).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from x0tta.common.errors import DecodeError
from x0tta.coord.core.rollout import Change, Sample

ABSENT = {"absent": True}  # what rollback restores for a setting the file did not have


class FileSettings:
    def __init__(self, path: str, sample: Callable[[], Awaitable[Sample]] | None = None) -> None:
        self.path = path
        self._sample = sample

    def read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DecodeError(f"rollout settings file {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise DecodeError(f"rollout settings file {self.path}: not a JSON object")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _set(self, setting: str, value: Any) -> Any:
        data = self.read()
        previous = data.get(setting, ABSENT)
        if value == ABSENT:
            data.pop(setting, None)
        else:
            data[setting] = value
        self._write(data)
        return previous

    async def apply(self, change: Change) -> Any:
        return await asyncio.to_thread(self._set, change.setting, change.value)

    async def rollback(self, change: Change, previous: Any) -> None:
        await asyncio.to_thread(self._set, change.setting, ABSENT if previous is None else previous)

    async def sample(self) -> Sample:
        return await self._sample() if self._sample is not None else Sample()
