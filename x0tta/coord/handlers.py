"""Change handlers: how a rollout's change reaches this node.

:class:`LiveSettings` is the agent's: a change of ``mesh.<name>`` goes to the running mesh
subsystem through a :class:`SettingHold` the wiring gives (the mesh subsystem's operator hold, the
one the fleet's ``set_mesh`` command takes too), which applies it at once and keeps the
reconcile from putting it back; what rollback needs is whether that setting was held before, and
at what value: held again at that value, or released (the ``[mesh]`` value applies again).
A setting no running subsystem takes goes to the file below.

:class:`FileSettings` keeps settings in one JSON file (``{"setting": value}``), written atomically
(temporary file, fsync, rename) off the event loop; the value before the change is what rollback
restores (a setting that did not exist is removed again).

Health is sampled by a callable the wiring gives (the agent's subsystems, the heal loop's harm,
the originators the mesh sees).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

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


class SettingHold(Protocol):
    """A running subsystem's hold on one of its settings (``MeshService.set_setting`` and
    ``release_setting``, handed over by the wiring)."""

    async def hold(self, name: str, value: Any) -> Mapping[str, Any]:
        """Apply ``value`` and keep it; the answer says whether ``name`` was ``held`` before and what it ``was``."""

    async def release(self, name: str) -> Mapping[str, Any]:
        """Stop holding ``name``: the configured value applies again."""


class LiveSettings:
    """``area.name`` goes to ``holds[area]`` as ``name``; a setting of another area to ``fallback``."""

    def __init__(self, holds: Mapping[str, SettingHold], fallback: FileSettings,
                 sample: Callable[[], Awaitable[Sample]] | None = None) -> None:
        self.holds = holds
        self.fallback = fallback
        self._sample = sample

    def _route(self, setting: str) -> tuple[SettingHold, str] | None:
        area, _, name = setting.partition(".")
        hold = self.holds.get(area)
        return (hold, name) if hold is not None and name else None

    async def apply(self, change: Change) -> Any:
        route = self._route(change.setting)
        if route is None:
            return await self.fallback.apply(change)
        hold, name = route
        answer = await hold.hold(name, change.value)
        return {"held": bool(answer.get("held")), "was": answer.get("was")}

    async def rollback(self, change: Change, previous: Any) -> None:
        """Hold the value held before again, or release; with no record of before (``None``), release."""
        route = self._route(change.setting)
        if route is None:
            await self.fallback.rollback(change, previous)
            return
        hold, name = route
        if isinstance(previous, Mapping) and previous.get("held"):
            await hold.hold(name, previous.get("was"))
        else:
            await hold.release(name)

    async def sample(self) -> Sample:
        return await self._sample() if self._sample is not None else Sample()
