"""Client side of the admin API (see :mod:`x0tta.agent.admin`); blocking, for the CLI."""

from __future__ import annotations

import json
import socket
from typing import Any

from x0tta.common.errors import X0ttaError

DEFAULT_TIMEOUT = 10.0


class AgentUnavailable(X0ttaError):
    """No agent answers on the socket (not running, or no permission)."""


class AdminCallFailed(X0ttaError):
    """The agent answered with an error."""


def call(socket_path: str, command: str, args: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(socket_path)
        except OSError as exc:
            raise AgentUnavailable(f"no agent at {socket_path}: {exc.strerror or exc}") from None
        s.sendall(json.dumps({"cmd": command, "args": args or {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise AgentUnavailable(f"agent at {socket_path} closed the connection")
            buf += chunk
    except TimeoutError:
        raise AgentUnavailable(f"agent at {socket_path} did not answer within {timeout}s") from None
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise AdminCallFailed(reply.get("error", "unknown error"))
    return reply.get("result")
