"""``x0tta identity``: this node's SPIFFE ID and SVID as the running agent holds them."""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("identity", help="this node's SPIFFE ID, SVID expiry and trust domains")
    add_json_flag(p)
    p.set_defaults(func=run)


def render(d: dict[str, Any]) -> str:
    if "spiffe_id" not in d:
        return f"no SVID ({d.get('source')} source): {d.get('error') or 'not ready'}"
    rows = [
        ("spiffe id", d["spiffe_id"]),
        ("source", d["source"]),
        ("key", d["key_algorithm"]),
        ("serial", d["serial"]),
        ("valid", f"{d['not_before']} .. {d['not_after']}"),
        ("expires in", f"{d['expires_in']:.0f} s"),
        ("trust domains", ", ".join(d["trust_domains"])),
        ("revoked serials", d["revoked_serials"]),
        ("rotations", d["rotations"]),
    ]
    if d.get("last_error"):
        rows.append(("last error", d["last_error"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    emit(args, ask(args, "identity.show"), render)
    return 0
