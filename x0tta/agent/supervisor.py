"""Runs each subsystem as a task and keeps it running.

Policy (see :mod:`x0tta.common.subsystem` for the subsystem's side):

* a subsystem that raises is reported ``failing`` with the exception, and restarted after a
  delay that doubles up to ``restart_max_delay``; once it has run ``stable_after`` seconds the
  delay starts over;
* one that raises :class:`CapabilityMissing` is ``degraded`` with the reason and looked at again
  every ``capability_retry`` seconds, without counting as a restart;
* nothing a subsystem does can stop the supervisor or the other subsystems.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from x0tta.common.errors import CapabilityMissing, X0ttaError
from x0tta.common.health import SUBSYSTEM_CRASH, SUBSYSTEM_ERROR
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.schema import AgentSettings


@dataclass
class _Slot:
    subsystem: Subsystem
    ctx: Context
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    delay: float = 0.0
    running_since: float = field(default=0.0)


class Supervisor:
    def __init__(
        self,
        settings: Callable[[], AgentSettings],
        on_restart: Callable[[str], None],
        log: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._on_restart = on_restart
        self._log = log
        self._clock = clock
        self._slots: dict[str, _Slot] = {}

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def start(self, subsystem: Subsystem, ctx: Context) -> None:
        slot = _Slot(subsystem, ctx, delay=self._settings().supervisor.restart_initial_delay)
        self._slots[subsystem.name] = slot
        slot.task = asyncio.create_task(self._keep(slot), name=f"subsystem:{subsystem.name}")

    def restarts(self, name: str) -> int:
        return self._slots[name].restarts

    async def _keep(self, slot: _Slot) -> None:
        sub, ctx, log = slot.subsystem, slot.ctx, slot.ctx.log
        while True:
            conf = self._settings().supervisor
            slot.running_since = self._clock()
            ctx.health.ok()
            try:
                await sub.run(ctx)
                log.info("subsystem_stopped")
                return
            except asyncio.CancelledError:
                raise
            except CapabilityMissing as exc:
                ctx.health.set(exc.spec(str(exc)))
                log.warning("subsystem_degraded", code=exc.code, reason=str(exc), retry_in=conf.capability_retry)
                await asyncio.sleep(conf.capability_retry)
                continue
            except Exception as exc:
                ran = self._clock() - slot.running_since
                if ran >= conf.stable_after:
                    slot.delay = conf.restart_initial_delay
                slot.restarts += 1
                self._on_restart(sub.name)
                kind = "error" if isinstance(exc, X0ttaError) else "crash"
                reason = f"{type(exc).__name__}: {exc}"
                ctx.health.set(
                    (SUBSYSTEM_ERROR if kind == "error" else SUBSYSTEM_CRASH)(
                        f"{reason} (restart #{slot.restarts} in {slot.delay:.1f}s)"
                    )
                )
                log.error(
                    "subsystem_failed",
                    reason=reason,
                    ran_seconds=round(ran, 3),
                    restart=slot.restarts,
                    retry_in=slot.delay,
                    exc_info=kind == "crash",
                )
                await asyncio.sleep(slot.delay)
                slot.delay = min(slot.delay * 2, conf.restart_max_delay)

    async def restart(self, name: str) -> None:
        """Stop and start one subsystem again (a reload it could not take live, an operator's ask)."""
        slot = self._slots[name]
        await self._cancel(slot, self._settings().supervisor.shutdown_timeout)
        slot.task = asyncio.create_task(self._keep(slot), name=f"subsystem:{name}")

    async def reload(self, settings: AgentSettings) -> None:
        for name, slot in self._slots.items():
            try:
                applied = await slot.subsystem.reload(slot.ctx, settings)
            except Exception as exc:
                slot.ctx.log.error("reload_failed", reason=f"{type(exc).__name__}: {exc}")
                applied = False
            if not applied:
                slot.ctx.log.info("restarting_for_reload")
                await self.restart(name)

    async def stop(self, timeout: float) -> list[str]:
        """Cancel every subsystem; return the names of those that did not stop in time."""
        results = await asyncio.gather(*(self._cancel(s, timeout) for s in self._slots.values()))
        return [name for name, ok in zip(self._slots, results, strict=True) if not ok]

    @staticmethod
    async def _cancel(slot: _Slot, timeout: float) -> bool:
        task = slot.task
        if task is None or task.done():
            return True
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

