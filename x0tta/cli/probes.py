"""``x0tta probes``: what the eBPF probes of the running agent count (admin ``probes.*``).

``flows`` lists the top flows by bytes; ``neighbors`` lists batman-adv neighbours with the time
since their last frame (what the MAPE-K monitor reads as link liveness).
"""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("probes", help="eBPF flow and neighbour counters of the running agent")
    g = p.add_subparsers(dest="probes_command", required=True, metavar="WHAT")
    q = g.add_parser("flows", help="top flows by bytes")
    q.add_argument("--limit", type=int, default=20)
    add_json_flag(q)
    q.set_defaults(func=lambda a: _emit(a, ask(a, "probes.flows", {"limit": a.limit}), render_flows))
    q = g.add_parser("neighbors", help="batman-adv neighbours and when they were last heard")
    add_json_flag(q)
    q.set_defaults(func=lambda a: _emit(a, ask(a, "probes.neighbors"), render_neighbors))


def render_flows(rows: list[dict[str, Any]]) -> str:
    out = [
        (r["interface"], r["direction"], r["proto"], f"{r['src']}:{r['sport']}", f"{r['dst']}:{r['dport']}",
         r["packets"], r["bytes"], f"{r['age']:.1f} s")
        for r in rows
    ]  # fmt: skip
    heads = ("interface", "dir", "proto", "source", "destination", "packets", "bytes", "last seen")
    return table(out, heads) if out else "no flows counted (probes not loaded, or no traffic yet)"


def render_neighbors(rows: list[dict[str, Any]]) -> str:
    out = [
        (r["interface"], r["mac"], "never" if r["age"] is None else f"{r['age']:.1f} s ago", r["rx_packets"],
         r["denied_packets"])
        for r in rows
    ]  # fmt: skip
    heads = ("interface", "mac", "last heard", "rx packets", "denied")
    return table(out, heads) if out else "no batman-adv neighbour heard"


def _emit(args: argparse.Namespace, data: Any, render: Any) -> int:
    emit(args, data, render)
    return 0
