"""What every CLI command shares: finding the agent, printing tables or JSON, exiting cleanly."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from x0tta.admin import client as admin_client

DEFAULT_SOCKET = "/run/x0tta/admin.sock"


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
