"""Blocking client of the admin API, for the CLI and the lab (the format is :mod:`x0tta.admin.core`)."""

from __future__ import annotations

import socket
from typing import Any

from x0tta.admin.core import AdminCallFailed, decode_reply, encode_request
from x0tta.common.errors import X0ttaError

DEFAULT_TIMEOUT = 10.0

__all__ = ["DEFAULT_TIMEOUT", "AdminCallFailed", "AgentUnavailable", "call"]


class AgentUnavailable(X0ttaError):
    """No agent answers on the socket (not running, or no permission)."""


def call(socket_path: str, command: str, args: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send one request and return its result; :class:`AdminCallFailed` when the agent says no."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(socket_path)
        except OSError as exc:
            raise AgentUnavailable(f"no agent at {socket_path}: {exc.strerror or exc}") from None
        s.sendall(encode_request(command, args))
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
    return decode_reply(buf)
