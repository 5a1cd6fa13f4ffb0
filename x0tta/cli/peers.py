"""``x0tta peers [--json]``: the peer sessions of the running agent (admin command ``peers.list``).

One row per session: direction, the peer's SPIFFE ID (verified in the handshake), the negotiated key
exchange group, the peer certificate's signature algorithm (marked ``classical`` when it is not
ML-DSA: the peer authenticated classically, while the key exchange is still the group shown), when
its SVID expires, and the RTT of the last heartbeat.
"""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit, table


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("peers", help="peer sessions (PQC mTLS) of the running agent")
    add_json_flag(p)
    p.set_defaults(func=run)


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no peer sessions"
    out = []
    for r in rows:
        if r.get("state") == "connecting":
            out.append((r["direction"], r["address"], "-", "-", "-", "-", "-", "connecting: " + r.get("error", "")))
            continue
        rtt = "-" if r.get("rtt_ms") is None else f"{r['rtt_ms']:.2f} ms"
        out.append((
            r["direction"],
            r["address"],
            r["spiffe_id"],
            r["group"],
            r["signature_algorithm"] + (" (classical)" if r.get("authentication") == "classical" else ""),
            f"{r['svid_expires_in']:.0f} s",
            rtt,
            r["state"] + (" (resumed)" if r.get("resumed") else ""),
        ))
    return table(out, ("dir", "address", "spiffe id", "group", "signature", "svid expires in", "rtt", "state"))


def run(args: argparse.Namespace) -> int:
    emit(args, ask(args, "peers.list"), render)
    return 0
