"""The admin API's wire format, sans-IO: JSON lines, one request and one reply per line.

Request: ``{"cmd": "status", "args": {}}``. Reply: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. A connection may carry several requests. Both sides encode and
decode here; the socket code (the agent's server, :mod:`x0tta.admin.client`) only moves bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from x0tta.common.errors import DecodeError, X0ttaError

MAX_LINE = 64 * 1024  # a request longer than this is refused, not buffered


class AdminRequestError(DecodeError):
    """A request line that is not a valid admin request; the text is sent back as the error."""


class AdminCallFailed(X0ttaError):
    """The agent answered with an error."""


@dataclass(frozen=True, slots=True)
class Request:
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


def encode_request(cmd: str, args: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    """One request line; :class:`AdminRequestError` says what is wrong with it."""
    try:
        req = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdminRequestError(f"request is not JSON: {exc}") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise AdminRequestError('request must be an object with a string "cmd"')
    args = req.get("args") or {}
    if not isinstance(args, dict):
        raise AdminRequestError('"args" must be an object')
    return Request(req["cmd"], args)


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


def too_long() -> dict[str, Any]:
    return error(f"request longer than {MAX_LINE} bytes")


def encode_reply(reply: dict[str, Any]) -> bytes:
    """A reply as one line; values JSON cannot carry (paths, enums) are sent as their text."""
    return json.dumps(reply, default=str).encode() + b"\n"


def decode_reply(line: bytes) -> Any:
    """The result of a reply line; :class:`AdminCallFailed` for an error reply or a garbled line."""
    try:
        reply = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdminCallFailed(f"the agent's reply is not JSON: {exc}") from None
    if not isinstance(reply, dict):
        raise AdminCallFailed("the agent's reply is not an object")
    if not reply.get("ok"):
        raise AdminCallFailed(str(reply.get("error", "unknown error")))
    return reply.get("result")
