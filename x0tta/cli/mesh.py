"""``x0tta mesh``: batman-adv's tables, in the spirit of batctl.

``x0tta mesh originators|neighbors|gateways|interfaces|settings|translocal|transglobal
[--meshif IF] [--json]``. It asks the running agent (admin socket) and, when none answers, reads
batman-adv over generic netlink itself, like batctl, so it works on any batman-adv node.
"""

from __future__ import annotations

import argparse
from typing import Any

from x0tta.admin.client import AdminCallFailed, AgentUnavailable
from x0tta.cli.common import add_json_flag, ask, emit, table
from x0tta.mesh.core import views


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mesh", help="batman-adv tables (originators, neighbors, gateways, ...)")
    p.add_argument("view", choices=list(views.VIEWS), help="which table")
    p.add_argument("--meshif", default=None, help="mesh interface (default: the agent's, else bat0)")
    p.add_argument("--direct", action="store_true", help="read netlink directly, do not ask the agent")
    add_json_flag(p)
    p.set_defaults(func=run)


def fetch(view: str, meshif: str | None, args: argparse.Namespace | None = None) -> Any:
    """The view's JSON: from the agent when it answers, else straight from netlink."""
    if args is not None and not getattr(args, "direct", False):
        try:
            return ask(args, f"mesh.{view}", {"meshif": meshif} if meshif else {})
        except (AgentUnavailable, AdminCallFailed):
            pass  # no agent, or its mesh subsystem is not running: read the kernel like batctl
    from x0tta.mesh.genl import BatadvSocket

    name = meshif or "bat0"
    with BatadvSocket() as s:
        if view == "settings":
            return views.to_json(s.mesh_info(name))
        return views.to_json(s.dump(views.VIEWS[view], name))


def run(args: argparse.Namespace) -> int:
    data = fetch(args.view, args.meshif, args)
    emit(args, data, lambda d: render(args.view, d))
    return 0


def _mac_sort(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: tuple(str(r.get(k, "")) for k in keys))


def render(view: str, data: Any) -> str:
    """A batctl-like text table of a view's JSON."""
    if view == "settings":
        return "\n".join(f"{k:32} {v}" for k, v in data.items() if v is not None)
    if view == "originators":
        rows = _mac_sort(data, "orig_address", "neigh_address")
        return table(
            [
                ("*" if r["flag_best"] else "", r["orig_address"], f"{r['last_seen_msecs'] / 1000:.3f}s",
                 _quality(r), r["neigh_address"], r.get("hard_ifname") or r["hard_ifindex"])
                for r in rows
            ],
            ("", "originator", "last-seen", "quality", "nexthop", "outgoing-if"),
        )
    if view == "neighbors":
        return table(
            [(r.get("hard_ifname") or r["hard_ifindex"], r["neigh_address"], f"{r['last_seen_msecs'] / 1000:.3f}s",
              _quality(r)) for r in _mac_sort(data, "neigh_address")],
            ("if", "neighbor", "last-seen", "quality"),
        )
    if view == "gateways":
        return table(
            [("*" if r["flag_best"] else "", r["orig_address"], _quality(r), r["router"], r.get("hard_ifname"),
              f"{(r.get('bandwidth_down') or 0) / 10}/{(r.get('bandwidth_up') or 0) / 10} Mbit/s")
             for r in _mac_sort(data, "orig_address")],
            ("", "gateway", "quality", "nexthop", "outgoing-if", "bandwidth"),
        )
    if view == "interfaces":
        return table(
            [(r["hard_ifname"], "active" if r["active"] else "inactive", r["hard_address"], r.get("hop_penalty"),
              r.get("elp_interval"), r.get("throughput_override")) for r in data],
            ("interface", "status", "address", "hop-penalty", "elp-interval", "throughput-override"),
        )
    if view == "translocal":
        return table(
            [(r["tt_address"], r["vid"], f"0x{r['tt_flags']:x}", f"0x{r['tt_crc32']:08x}",
              "" if r.get("last_seen_msecs") is None else f"{r['last_seen_msecs'] / 1000:.3f}s")
             for r in _mac_sort(data, "tt_address", "vid")],
            ("client", "vid", "flags", "crc", "last-seen"),
        )
    if view == "transglobal":
        return table(
            [("*" if r["flag_best"] else "", r["tt_address"], r["vid"], r["orig_address"], r["tt_ttvn"],
              f"0x{r['tt_flags']:x}", f"0x{r['tt_crc32']:08x}") for r in _mac_sort(data, "tt_address", "vid")],
            ("", "client", "vid", "originator", "ttvn", "flags", "crc"),
        )
    raise ValueError(f"unknown view {view!r}")


def _quality(r: dict[str, Any]) -> str:
    if r.get("tq") is not None:
        return f"TQ {r['tq']}"
    if r.get("throughput") is not None:
        return f"{r['throughput'] / 1000:.1f} Mbit/s"
    return ""
