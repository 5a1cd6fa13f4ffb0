"""``x0tta meshstate [--json]``: the replicated mesh state as the running agent reads it (admin
command ``meshstate.show``; docs/fleet.md, "Replicated mesh state").

Four tables: the registry (every node's role, version and MACs), the quarantines each node claims
(target, MACs, reason, when each ends), the incident summaries per node (kind, target, severity,
opened, closed or open, summary), and the updates this node refused, by reason. ``--json`` prints
the admin answer itself: the state, the epoch, and the counts.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("meshstate", help="the replicated mesh state: registry, quarantines, incidents, refusals")
    add_json_flag(p)
    p.set_defaults(func=run)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _node(key: str) -> str:
    """The author part of a ``"<author> <rest>"`` key."""
    return key.split(" ", 1)[0]


def render(shown: dict[str, Any], now: float | None = None) -> str:
    if not shown.get("ready"):
        return "the replicated state is not ready: the meshstate subsystem waits for this node's SVID"
    now = time.time() if now is None else now
    state = shown["state"]
    out = [f"node {shown['author']}  epoch {shown['epoch']}  log {shown['log_bytes']} B  "
           f"applied {shown['applied']}  duplicates {shown['duplicates']}"]
    registry = state.get("registry", {})
    out += ["", f"registry ({len(registry)} nodes)", table(
        [(who, v["role"], v["version"], " ".join(v["macs"]) or "-", _when(v["at"])) for who, v in registry.items()],
        ("spiffe id", "role", "version", "macs", "written"))]
    quarantine = state.get("quarantine", {})
    out += ["", f"quarantines ({len(quarantine)})"]
    if quarantine:
        out.append(table([(_node(k), v["target"], " ".join(v["macs"]) or "-", v["reason"],
                           f"{max(0.0, v['until'] - now):.0f} s") for k, v in quarantine.items()],
                         ("by", "target", "macs", "reason", "ends in")))
    incidents = state.get("incidents", {})
    out += ["", f"incidents ({len(incidents)})"]
    if incidents:
        rows = sorted(incidents.items(), key=lambda kv: (_node(kv[0]), kv[1]["opened"]))
        out.append(table([(_node(k), k.split(" ", 1)[1], v["kind"], v["target"], v["severity"], _when(v["opened"]),
                           "open" if v["closed"] is None else _when(v["closed"]), v["summary"]) for k, v in rows],
                         ("node", "id", "kind", "target", "severity", "opened", "closed", "summary")))
    revocations = state.get("revocations", {})
    if revocations:
        out += ["", f"revocations ({len(revocations)})", table(
            [(k, v["by"], v["reason"], _when(v["at"]), " ".join(v.get("serials", []))) for k, v in revocations.items()],
            ("spiffe id", "by", "reason", "at", "serials"))]
    refused = {**shown.get("refused", {}), **({"malformed messages": shown["malformed"]} if shown.get("malformed")
                                             else {})}
    out += ["", "refused: " + (", ".join(f"{k} {n}" for k, n in sorted(refused.items())) or "none")]
    dropped = shown.get("dropped") or {}
    if dropped:
        out.append("writes dropped: " + ", ".join(f"{k} {n}" for k, n in sorted(dropped.items())))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    emit(args, ask(args, "meshstate.show"), render)
    return 0
