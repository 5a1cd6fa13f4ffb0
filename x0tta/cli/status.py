"""``x0tta status``: version, uptime and health per subsystem of the running agent."""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="state of the running agent")
    add_json_flag(p)
    p.set_defaults(func=run)


def render(st: dict[str, Any]) -> str:
    head = (
        f"node {st['node']}  x0tta {st['version']}  pid {st['pid']}  up {_duration(st['uptime_seconds'])}  "
        f"state {st['state']}"
    )
    rows = []
    for s in st["subsystems"]:
        reason = "; ".join(f"{c['code']}: {c['message']}" for c in s["conditions"])
        rows.append((s["subsystem"], s["state"], s["restarts"], reason))
    return head + "\n\n" + table(rows, ("subsystem", "state", "restarts", "reason"))


def _duration(sec: float) -> str:
    sec = int(sec)
    d, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if h or d else "") + f"{m}m{s:02d}s"


def run(args: argparse.Namespace) -> int:
    emit(args, ask(args, "status"), render)
    return 0
