"""``x0tta status``: version, uptime and health per subsystem of the running agent; ``--explain`` adds
what each reported condition means and its entry in docs/troubleshooting.md (from the declarations)."""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table
from x0tta.cli.conditions_registry import declared


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="state of the running agent")
    add_json_flag(p)
    p.add_argument(
        "--explain", action="store_true",
        help="say what each reported condition means and where docs/troubleshooting.md says what to do",
    )
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
    out = head + "\n\n" + table(rows, ("subsystem", "state", "restarts", "reason"))
    explained = [(s["subsystem"], c) for s in st["subsystems"] for c in s["conditions"] if "summary" in c]
    if explained:
        out += "\n\n" + "\n".join(
            f"{name}: {c['code']} ({c['severity']}) - {c['summary']}\n    see {c['docs']}" for name, c in explained
        )
    return out


def explain(st: dict[str, Any]) -> dict[str, Any]:
    """``st`` with each condition's declared summary and docs anchor added (a code this CLI does
    not know, from an agent of another version, is left as it came)."""
    specs = declared()
    for s in st["subsystems"]:
        for c in s["conditions"]:
            spec = specs.get(c["code"])
            if spec is not None:
                c.update(summary=spec.summary, docs=spec.docs)
    return st


def _duration(sec: float) -> str:
    sec = int(sec)
    d, rem = divmod(sec, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d" if d else "") + (f"{h}h" if h or d else "") + f"{m}m{s:02d}s"


def run(args: argparse.Namespace) -> int:
    st = ask(args, "status")
    emit(args, explain(st) if args.explain else st, render)
    return 0
