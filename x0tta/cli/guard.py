"""``x0tta guard``: the admission guard of the running agent (admin commands ``guard.*``).

``list`` shows the mode and the admitted MACs (static from the config, dynamic from handshakes or
this command); ``admit MAC`` / ``revoke MAC`` change them at once in the kernel; ``mode
observe|enforce`` switches enforcement (until the next restart or reload: set ``[guard] mode``
to keep it); ``threats`` shows the latest threat records of the detectors (``--json``: the
EVE-style records themselves, docs/guard.md).
"""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table
from x0tta.guard.core.detect import SEVERITY_NAMES


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
    q = g.add_parser("threats", help="the latest threat records of the detectors")
    q.add_argument("--limit", type=int, default=50, help="at most this many, the newest (default 50)")
    add_json_flag(q)
    q.set_defaults(func=lambda a: _threats(a, ask(a, "guard.threats", {"limit": a.limit})))


def render(data: dict[str, Any]) -> str:
    rows = [(r["mac"], r["origin"], r["reason"]) for r in data["admitted"]]
    head = f"mode {data['mode']}" + ("" if data.get("enforced_in_kernel") else " (probes not loaded: not enforced)")
    return head + "\n" + (table(rows, ("mac", "origin", "reason")) if rows else "no MAC admitted")


def render_threats(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no threat recorded"
    rows = [
        (r["timestamp"], SEVERITY_NAMES.get(r["alert"]["severity"], str(r["alert"]["severity"])),
         r["batman"]["detector"], r["batman"]["subject"], r["in_iface"] or "-", r["alert"]["action"])
        for r in records
    ]
    return table(rows, ("time", "severity", "signature", "subject", "interface", "action"))


def _threats(args: argparse.Namespace, data: Any) -> int:
    emit(args, data, render_threats)
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
