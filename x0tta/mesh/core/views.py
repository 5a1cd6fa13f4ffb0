"""The operator's views of the mesh tables, shared by the admin API and ``x0tta mesh``.

One definition of what ``originators``, ``neighbors``, ... mean, so the CLI prints the same JSON
whether it asked the agent or read netlink itself (pure: records in, JSON-able data out).
"""

from __future__ import annotations

from typing import Any

from x0tta.mesh.core import batadv
from x0tta.mesh.core.batadv import Cmd

# view name -> the batadv dump behind it (``settings`` is the single GET_MESH).
VIEWS: dict[str, Cmd] = {
    "originators": Cmd.GET_ORIGINATORS,
    "neighbors": Cmd.GET_NEIGHBORS,
    "gateways": Cmd.GET_GATEWAYS,
    "interfaces": Cmd.GET_HARDIF,
    "settings": Cmd.GET_MESH,
    "translocal": Cmd.GET_TRANSTABLE_LOCAL,
    "transglobal": Cmd.GET_TRANSTABLE_GLOBAL,
}


def to_json(records: list[batadv.Record] | batadv.Record) -> Any:
    if isinstance(records, batadv.Record):
        return _one(records)
    return [_one(r) for r in records]


def _one(rec: batadv.Record) -> dict[str, Any]:
    out = rec.to_json()
    for key in ("tt_vid", "bla_vid", "dat_cache_vid"):
        if key in out:
            out["vid"] = batadv.vid_of(out[key])
    return out


# -- batctl's JSON vocabulary ---------------------------------------------------------------------
# ``batctl meshif X <table>_json`` names fields after the same attributes, with a few differences:
# the FLAG_BEST attribute is "best", VIDs are printed -1 for untagged, flag words are objects with
# a "raw" member, and gw_mode is a word. These two functions bring both to one form, so the agent's
# view can be compared with batctl's (the lab and golden tests do).

GW_MODE_WORDS = {"off": 0, "client": 1, "server": 2}


def as_batctl(rec: batadv.Record) -> dict[str, Any]:
    out = {k: v for k, v in rec.to_json().items() if v is not None}
    if "flag_best" in out:
        out["best"] = out.pop("flag_best")
    for key in ("tt_vid", "bla_vid", "dat_cache_vid"):
        if key in out:
            out[key] = batadv.vid_of(out[key])
    return out


def from_batctl(entry: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in entry.items():
        if isinstance(v, dict) and "raw" in v:
            v = v["raw"]
        if k == "gw_mode" and isinstance(v, str):
            v = GW_MODE_WORDS[v]
        out[k] = v
    return out
