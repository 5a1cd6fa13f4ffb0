"""The agent: telemetry first, then the admin API and HTTP endpoint, then the subsystems.

Lifecycle::

    start   configure logs/traces/metrics -> admin socket -> /metrics -> subsystems -> READY=1
    SIGHUP  read the config again; invalid -> logged, old settings stay; valid -> subsystems reload

A config that uses a deprecated key (``x0tta.config.loader.MOVED``) is taken, and each such key
is logged as ``config_key_deprecated`` with its old and new name, at start and at every reload.
    SIGTERM STOPPING=1 -> subsystems cancelled (bounded by supervisor.shutdown_timeout) -> exit 0

The watchdog ping runs on the event loop on purpose: if the loop stalls, the pings stop and
systemd restarts the agent, which is exactly the failure the watchdog is there to catch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from x0tta import __version__
from x0tta.agent.admin import AdminServer
from x0tta.agent.health import HealthBoard, Reporter
from x0tta.agent.sdnotify import Notifier
from x0tta.agent.supervisor import Supervisor
from x0tta.agent.wiring import AgentHooks, Factory, factories
from x0tta.common.health import overall
from x0tta.config.fields import ConfigError, to_data
from x0tta.config.loader import MovedKey, load_settings
from x0tta.config.schema import AgentSettings
from x0tta.telemetry import logging as tlog
from x0tta.telemetry import tracing
from x0tta.telemetry.http import HttpEndpoint
from x0tta.telemetry.metrics import AgentMetrics


@dataclass
class AgentContext:
    """What one subsystem sees of the agent (implements :class:`x0tta.common.subsystem.Context`)."""

    name: str
    node_id: str
    state_dir: Path
    health: Reporter
    admin: AdminServer
    registry: CollectorRegistry
    tracer: Any
    log: Any
    agent: Agent = field(repr=False)

    @property
    def settings(self) -> AgentSettings:
        return self.agent.settings


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        config_path: str | None = None,
        environ: Mapping[str, str] | None = None,
        extra: Mapping[str, Factory] | None = None,
        moved: list[MovedKey] | None = None,
    ) -> None:
        self.settings = settings
        self._moved = list(moved or [])
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)
        self.node_id = settings.node.resolved_id(socket.gethostname())
        self.started_at = time.time()
        self._extra = dict(extra or {})
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = AgentMetrics(self.registry, self.node_id)
        self.metrics.start_time.set(self.started_at)
        self.board = HealthBoard(on_change=self.metrics.observe_health)
        self.log = tlog.get_logger("agent")
        self.admin = AdminServer(self.log)
        self.http = HttpEndpoint(self.registry, self._readiness)
        self.notifier = Notifier(self.environ)
        self.supervisor = Supervisor(lambda: self.settings, self._count_restart, self.log)
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    def _count_restart(self, name: str) -> None:
        self.metrics.restarts.labels(name).inc()
        self.board.post(name, self.board.get(name).conditions, restarts=self.supervisor.restarts(name))

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        healths = self.board.all()
        return {
            "node": self.node_id,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "state": overall(healths).label,
            "config": self.config_path,
            "subsystems": [h.to_json() for h in healths],
        }

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.board.ready(), self.status()

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self._on_hup)):
            loop.add_signal_handler(sig, handler)
        try:
            await self._start()
            await self._stop.wait()
        finally:
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def stop(self) -> None:
        self._stop.set()

    async def _start(self) -> None:
        s = self.settings
        self._warn_moved(self._moved)
        await asyncio.to_thread(Path(s.node.state_dir).mkdir, parents=True, exist_ok=True, mode=0o700)
        self._register_admin()
        await self.admin.start(s.admin_socket)
        if s.metrics.enabled:
            self.http_port = await self.http.start(s.metrics.address, s.metrics.port)
        hooks = AgentHooks(
            subsystem_health=lambda: self.status()["subsystems"], restart_subsystem=self.supervisor.restart
        )
        table = dict(factories(s, hooks))
        table.update(self._extra)
        for name, factory in table.items():
            self.board.add(name)
            sub = factory(s)
            self.supervisor.start(sub, self._context(name))
        await asyncio.sleep(0)  # let subsystems take their first step before READY
        self.log.info(
            "agent_ready",
            version=__version__,
            subsystems=list(table),
            metrics=f"{s.metrics.address}:{self.http_port}" if s.metrics.enabled else None,
            admin=s.admin_socket,
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        self.notifier.ready(f"running {len(table)} subsystems")
        if self.notifier.watchdog_interval:
            self._watchdog_task = asyncio.create_task(self._watchdog(self.notifier.watchdog_interval))

    def _context(self, name: str) -> AgentContext:
        return AgentContext(
            name=name,
            node_id=self.node_id,
            state_dir=Path(self.settings.node.state_dir),
            health=Reporter(self.board, name),
            admin=self.admin,
            registry=self.registry,
            tracer=tracing.get_tracer(name),
            log=tlog.get_logger(name),
            agent=self,
        )

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        self.log.info("agent_stopping")
        task = getattr(self, "_watchdog_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stuck = await self.supervisor.stop(self.settings.supervisor.shutdown_timeout)
        if stuck:
            self.log.warning("subsystems_did_not_stop", subsystems=stuck)
        await self.http.stop()
        await self.admin.stop()
        self.log.info("agent_stopped")
        self.notifier.close()

    # -- reload -------------------------------------------------------------------------------
    def _on_hup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Re-read the config file; keep the old settings when the new ones are invalid."""
        async with self._reload_lock:
            self.notifier.reloading()
            moved: list[MovedKey] = []
            try:
                new = await asyncio.to_thread(load_settings, self.config_path, self.environ, moved)
            except ConfigError as exc:
                self.metrics.reloads.labels("rejected").inc()
                self.log.error(
                    "config_reload_rejected",
                    source=exc.source,
                    problems=[str(p) for p in exc.problems],
                    kept="previous configuration stays in force",
                )
                self.notifier.ready("reload rejected: previous configuration in force")
                return False
            self.settings = new
            self._warn_moved(moved)
            tlog.LEVELS.update(new.logging.level, new.logging.levels)
            await self.supervisor.reload(new)
            self.metrics.reloads.labels("applied").inc()
            self.log.info("config_reloaded", source=self.config_path)
            self.notifier.ready("configuration reloaded")
            return True

    def _warn_moved(self, moved: list[MovedKey]) -> None:
        for m in moved:
            self.log.warning("config_key_deprecated", old=m.old, new=m.new, source=self.config_path, hint=str(m))

    # -- admin --------------------------------------------------------------------------------
    def _register_admin(self) -> None:
        async def status(_: dict[str, Any]) -> dict[str, Any]:
            return self.status()

        async def config(_: dict[str, Any]) -> Any:
            return to_data(self.settings)

        async def reload(_: dict[str, Any]) -> dict[str, bool]:
            return {"applied": await self.reload()}

        self.admin.register("status", status)
        self.admin.register("config", config)
        self.admin.register("reload", reload)
