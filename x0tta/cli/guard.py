"""``x0tta guard``: the admission guard of the running agent (admin commands ``guard.*``).

``list`` shows the mode (in force and configured) and the admitted MACs (static from the config,
dynamic from handshakes or this command), then which SPIFFE ID each neighbour's MAC is bound to
and who is quarantined; ``admit MAC`` / ``revoke MAC`` change them at once in the kernel; ``mode
observe|enforce`` switches enforcement (until the next restart or reload: set ``[guard] mode``
to keep it); ``release MAC|SPIFFE-ID`` ends a quarantine; ``threats`` shows the latest threat
records of the detectors (``--json``: the EVE-style records themselves, docs/guard.md; the same
as ``x0tta threats``).
"""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table
from x0tta.guard.core.detect import SEVERITY_NAMES

SEVERITY_LEVELS = {name: level for level, name in SEVERITY_NAMES.items()}  # high -> 1 ...


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("guard", help="admission guard: which neighbours' batman-adv frames are accepted")
    g = p.add_subparsers(dest="guard_command", required=True, metavar="ACTION")
    q = g.add_parser("list", help="mode and admitted MACs")
    add_json_flag(q)
    q.set_defaults(func=lambda a: _show(a, ask(a, "guard.list")))
    for action, text in (("admit", "admit a MAC"), ("revoke", "revoke a dynamically admitted MAC")):
        q = g.add_parser(action, help=text)
        q.add_argument("mac", help="aa:bb:cc:dd:ee:ff")
        if action == "admit":
            q.add_argument("--reason", default="operator", help="recorded with the admission")
        add_json_flag(q)
        q.set_defaults(func=_change, action=action)
    q = g.add_parser("mode", help="observe (count would-be drops) or enforce (drop)")
    q.add_argument("mode", choices=("observe", "enforce"))
    add_json_flag(q)
    q.set_defaults(func=lambda a: _emit_plain(a, ask(a, "guard.mode", {"mode": a.mode})))
    q = g.add_parser("release", help="end the quarantine of a neighbour (a MAC, or every MAC of a SPIFFE ID)")
    q.add_argument("who", help="aa:bb:cc:dd:ee:ff or spiffe://...")
    add_json_flag(q)
    q.set_defaults(func=lambda a: _emit_plain(a, ask(a, "guard.release", {"who": a.who})))
    add_threats_parser(g, "threats")


def add_threats_parser(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """The threat listing with its filters: ``x0tta guard threats`` and ``x0tta threats``."""
    q = sub.add_parser(name, help="the latest threat records of the detectors (EVE-style, docs/guard.md)")
    q.add_argument("--limit", type=int, default=50, help="at most this many, the newest (default 50)")
    q.add_argument("--since", help="at or after this UTC time, as in the records: 2026-12-06T03:40 (any prefix)")
    q.add_argument("--severity", choices=sorted(SEVERITY_LEVELS), help="this severity or more urgent")
    add_json_flag(q)
    q.set_defaults(func=_threats)
    return q


def render(data: dict[str, Any]) -> str:
    rows = [(r["mac"], r["origin"], r["reason"]) for r in data["admitted"]]
    configured = data.get("configured_mode")
    head = f"mode {data['mode']}" + (f" (configured {configured})" if configured and configured != data["mode"] else "")
    head += "" if data.get("enforced_in_kernel") else " (probes not loaded: not enforced)"
    out = [head, table(rows, ("mac", "origin", "reason")) if rows else "no MAC admitted"]
    bound = [(b["mac"], b["spiffe_id"], b["interface"] or "-", str(b["sessions"]),
              "-" if b["lost_for"] is None else f"{b['lost_for']} s") for b in data.get("bindings", [])]
    if bound:
        out += ["", table(bound, ("mac", "bound to", "interface", "sessions", "no session for"))]
    quarantined = [(q["mac"], q["spiffe_id"] or "-", q["reason"], f"{q['expires_in']} s")
                   for q in data.get("quarantined", [])]
    if quarantined:
        out += ["", "quarantined:", table(quarantined, ("mac", "spiffe id", "reason", "released in"))]
    return "\n".join(out)


def render_threats(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no threat recorded"
    rows = [
        (r["timestamp"], SEVERITY_NAMES.get(r["alert"]["severity"], str(r["alert"]["severity"])),
         r["batman"]["detector"], r["batman"]["subject"], r["in_iface"] or "-", r["alert"]["action"])
        for r in records
    ]
    return table(rows, ("time", "severity", "signature", "subject", "interface", "action"))


def _threats(args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"limit": args.limit}
    if args.since:
        query["since"] = args.since
    if args.severity:
        query["severity"] = SEVERITY_LEVELS[args.severity]
    emit(args, ask(args, "guard.threats", query), render_threats)
    return 0


def _show(args: argparse.Namespace, data: Any) -> int:
    emit(args, data, render)
    return 0


def _change(args: argparse.Namespace) -> int:
    cmd_args = {"mac": args.mac}
    if args.action == "admit":
        cmd_args["reason"] = args.reason
    return _emit_plain(args, ask(args, f"guard.{args.action}", cmd_args))


def _emit_plain(args: argparse.Namespace, data: Any) -> int:
    emit(args, data, lambda d: ", ".join(f"{k} {v}" for k, v in d.items()))
    return 0
