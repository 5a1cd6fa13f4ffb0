"""``x0tta incidents`` and ``x0tta incident ID``: the heal loop's history, with its reasoning.

They ask the running agent (admin commands ``heal.incidents`` and ``heal.incident``). When no
agent answers, they read the knowledge store itself (``<state_dir>/heal.sqlite3``, read-only; WAL
lets this run beside a writer), so the history is there after a crash or on a stopped node.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from x0tta.admin.client import AdminCallFailed, AgentUnavailable
from x0tta.cli.common import add_json_flag, ask, emit, table
from x0tta.common.errors import PermanentError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("incidents", help="incidents seen and handled by the heal loop")
    add_json_flag(p)
    p.add_argument("--limit", type=int, default=50, help="newest N incidents (default 50)")
    p.add_argument("--status", choices=("open", "closed"), help="only open or only closed incidents")
    p.add_argument("--db", help="read this knowledge store instead of asking the agent")
    p.set_defaults(func=run_list)
    q = sub.add_parser("incident", help="one incident: symptoms, decisions with their reasons, outcomes")
    q.add_argument("id", help="incident id (from x0tta incidents)")
    add_json_flag(q)
    q.add_argument("--db", help="read this knowledge store instead of asking the agent")
    q.set_defaults(func=run_one)


def _db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    from x0tta.config.loader import load_settings
    from x0tta.heal.store import FILENAME

    return Path(load_settings(getattr(args, "config", None)).node.state_dir) / FILENAME


def _local(args: argparse.Namespace, fn: Any) -> Any:
    from x0tta.heal.store import Store

    path = _db_path(args)
    if not path.exists():
        raise PermanentError(f"no agent answers and there is no knowledge store at {path}")
    store = Store(path, readonly=True)
    try:
        return fn(store)
    finally:
        store.close()


def _fetch(args: argparse.Namespace, command: str, cmd_args: dict[str, Any], fn: Any) -> Any:
    if args.db:
        return _local(args, fn)
    try:
        return ask(args, command, cmd_args)
    except AgentUnavailable:
        return _local(args, fn)
    except AdminCallFailed as exc:
        # The agent runs but its heal loop does not (degraded, disabled): the store still holds
        # the history. Say the agent's answer only when there is no store either.
        if not _db_path(args).exists():
            raise exc from None
        return _local(args, fn)


def _t(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _secs(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{b - a:.2f}s"


def render_list(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        actions = ", ".join(
            a["kind"] + ("" if a["state"] in ("effective", "applied") else f"({a['state']})") for a in r["actions"]
        )
        out.append((r["id"], _t(r["opened"]), r["kind"], r["target"], r["status"],
                    _secs(r["onset"], r["healed"]), actions or "-", r["resolution"]))
    return table(out, ("id", "opened (UTC)", "symptom", "target", "status", "healed in", "actions", "resolution"))


def render_one(inc: dict[str, Any]) -> str:
    sym = inc["symptom"]
    lines = [
        f"incident {inc['id']}  {sym['kind']} on {sym['target']}  [{inc['status']}]",
        f"  onset {_t(inc['onset'])}  detected {_t(inc['opened'])} (+{_secs(inc['onset'], inc['opened'])})"
        f"  healed {_t(inc.get('healed'))}  closed {_t(inc.get('closed'))}",
        f"  evidence: {', '.join(f'{k}={v}' for k, v in sorted(inc.get('evidence', {}).items()))}",
    ]
    if inc.get("resolution"):
        lines.append(f"  resolution: {inc['resolution']}")
    for note in inc.get("notes", ()):
        lines.append(f"  note: {note}")
    lines.append("")
    lines.append("actions:")
    for a in inc.get("actions", ()):
        act = a["action"]
        lines.append(f"  {a['id']}  {act['kind']} on {act['target']}  state={a['state']}"
                     + (f"  undo={a['undo_op']}:{a['undo_state']}" if a.get("undo_op") else ""))
        for r in a.get("reasons", ()):
            lines.append(f"      why: {r}")
        if a.get("outcome"):
            lines.append(f"      outcome: {a['outcome']}")
        if a.get("undo_reason"):
            lines.append(f"      undo because: {a['undo_reason']}")
    if inc.get("events"):
        lines.append("")
        lines.append("timeline:")
        for e in inc["events"]:
            d = e["data"]
            detail = ""
            if e["name"] == "decision":
                detail = f"{d['op']} {d['action']['kind']} on {d['action']['target']}"
            elif e["name"] in ("verified", "executed"):
                detail = ", ".join(f"{k}={d[k]}" for k in ("id", "ok", "outcome", "reason", "detail") if k in d)
            elif "symptom" in d:
                detail = f"{d['symptom']['kind']} on {d['symptom']['target']}"
            elif e["name"] == "healed":
                detail = f"time to heal {d['time_to_heal']:.3f}s by {d['action']}"
            lines.append(f"  {_t(e['at'])}  {e['name']:<16} {detail}")
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    cmd_args: dict[str, Any] = {"limit": args.limit}
    if args.status:
        cmd_args["status"] = args.status
    rows = _fetch(args, "heal.incidents", cmd_args, lambda s: s.incidents(args.limit, args.status))
    emit(args, rows, render_list)
    return 0


def run_one(args: argparse.Namespace) -> int:
    def local(s: Any) -> Any:
        found = s.incident(args.id)
        if found is None:
            raise PermanentError(f"no incident {args.id}")
        return found

    emit(args, _fetch(args, "heal.incident", {"id": args.id}, local), render_one)
    return 0
