"""What every CLI command shares: finding the agent, printing tables or JSON, exiting cleanly."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from x0tta.admin import client as admin_client

DEFAULT_SOCKET = "/run/x0tta/admin.sock"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def socket_path(args: argparse.Namespace) -> str:
    """``--socket``, else the admin socket named by ``--config``, else the default."""
    if getattr(args, "socket", None):
        return str(args.socket)
    if getattr(args, "config", None):
        from x0tta.config.loader import load_settings

        return load_settings(args.config).admin_socket
    return DEFAULT_SOCKET


def ask(args: argparse.Namespace, command: str, cmd_args: dict[str, Any] | None = None) -> Any:
    return admin_client.call(socket_path(args), command, cmd_args)


def read_passphrase(path: str | None) -> bytes | None:
    """The passphrase in ``path`` (one line; its newline dropped), None without a path."""
    from pathlib import Path

    from x0tta.common.errors import PermanentError

    if not path:
        return None
    try:
        secret = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise PermanentError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if not secret:
        raise PermanentError(f"the passphrase file {path} is empty")
    return secret


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table, like batctl's."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(render(data))


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``24h``, ``30d``, ``2w``, ``10y`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 24h, 30d)")
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if value <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    return value
