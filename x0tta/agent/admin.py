"""The local admin API's server: JSON lines over a Unix socket (mode 0600, so only root and the
agent's user). The wire format is :mod:`x0tta.admin.core`; this module only moves bytes and calls
handlers. Bad JSON, unknown commands and failing handlers get an error reply; they never reach the
rest of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from pathlib import Path
from typing import Any

from x0tta.admin import core as wire
from x0tta.common.errors import X0ttaError
from x0tta.common.subsystem import AdminHandler

MAX_LINE = wire.MAX_LINE


class AdminError(X0ttaError):
    pass


class AdminServer:
    def __init__(self, log: Any) -> None:
        self._handlers: dict[str, AdminHandler] = {}
        self._server: asyncio.AbstractServer | None = None
        self._path: Path | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._log = log

    def register(self, command: str, handler: AdminHandler) -> None:
        self._handlers[command] = handler

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def start(self, path: str) -> None:
        p = Path(path)
        await asyncio.to_thread(_clear_stale, p)
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(p), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(p, 0o600)
        self._path = p

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, wire.too_long())
                    return
                if not line:
                    return
                await _send(writer, await self.dispatch(line))
        except ConnectionError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            req = wire.decode_request(line)
        except wire.AdminRequestError as exc:
            return wire.error(str(exc))
        handler = self._handlers.get(req.cmd)
        if handler is None:
            return wire.error(f"unknown command {req.cmd!r}; known: {', '.join(self.commands)}")
        try:
            return wire.ok(await handler(req.args))
        except X0ttaError as exc:
            return wire.error(str(exc))
        except Exception as exc:
            self._log.error("admin_command_failed", cmd=req.cmd, reason=repr(exc), exc_info=True)
            return wire.error(f"internal error: {type(exc).__name__}: {exc}")


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(wire.encode_reply(obj))
    await writer.drain()


def _clear_stale(p: Path) -> None:
    """Make room for the socket: remove a stale one, refuse to touch anything else."""
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise AdminError(f"{p} exists and is not a socket; refusing to replace it")
        if _answers(p):
            raise AdminError(f"another agent is serving {p}")
        p.unlink()


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
