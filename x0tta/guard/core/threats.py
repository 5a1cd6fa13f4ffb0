"""Threat records: a detector's finding as the JSON an operator, a log shipper or a SIEM reads.

The shape follows Suricata's EVE ``alert`` records (https://docs.suricata.io/en/latest/output/eve/
eve-json-format.html), so tools that already parse EVE - jq filters, Filebeat's Suricata module,
dashboards keyed on ``alert.signature_id`` - read these with no new parser::

    {
      "timestamp": "2026-12-06T03:41:46.123456+0000",   # EVE's format: UTC, microseconds
      "event_type": "alert",
      "host": "node-a",                                 # this node ([node] name)
      "in_iface": "wlan0",                              # the link it was seen on, or null
      "alert": {
        "action": "allowed",                            # "blocked" when the guard dropped it
        "gid": 1, "signature_id": 1430501, "rev": 1,
        "signature": "X0TTA GUARD batman-adv frames from a MAC that is not admitted",
        "category": "admission",
        "severity": 2                                   # 1 high, 2 medium, 3 low, 4 info
      },
      "batman": {                                       # x0tta's own object (EVE allows them)
        "detector": "unadmitted_frames",
        "subject": "02:00:00:00:00:66",                 # with signature_id: which threat this is
        "macs": ["02:00:00:00:00:66"],
        "originator": null,
        "spiffe_id": null,
        "evidence": {"frames": 400, ...}                # the detector's numbers and thresholds
      }
    }

Stable: every key above is always present (null when unknown); keys may be added, none is removed
or changes meaning, and a signature id keeps its meaning for good (docs/guard.md lists them).
Pure: the caller passes the wall-clock time of the record.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from typing import Any

from x0tta.guard.core.detect import Finding

EVENT_TYPE = "alert"
GID = 1
REV = 1
SIGNATURE_PREFIX = "X0TTA GUARD "
ACTIONS = ("allowed", "blocked")


def format_timestamp(wall: float) -> str:
    """Unix seconds as EVE writes them: ``2026-12-06T03:41:46.123456+0000``."""
    try:
        moment = _dt.datetime.fromtimestamp(wall, tz=_dt.UTC)
    except (OverflowError, OSError, ValueError):  # out of datetime's range, or not a number
        moment = _dt.datetime.fromtimestamp(0, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def jsonable(value: Any) -> Any:
    """Evidence as strict JSON: tuples and sets become lists, keys strings, and numbers that JSON
    cannot carry (NaN, infinities) null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    return str(value)


def threat_record(finding: Finding, *, timestamp: float, host: str = "", action: str = "allowed") -> dict[str, Any]:
    """The EVE-style record of ``finding``, stamped ``timestamp`` (unix seconds)."""
    sig = finding.signature
    return {
        "timestamp": format_timestamp(timestamp),
        "event_type": EVENT_TYPE,
        "host": host,
        "in_iface": finding.interface,
        "alert": {
            "action": action if action in ACTIONS else "allowed",
            "gid": GID,
            "signature_id": sig.sid,
            "rev": REV,
            "signature": SIGNATURE_PREFIX + sig.title,
            "category": sig.category,
            "severity": finding.level,
        },
        "batman": {
            "detector": sig.name,
            "subject": finding.subject,
            "macs": list(finding.macs),
            "originator": finding.originator,
            "spiffe_id": finding.spiffe_id,
            "evidence": jsonable(finding.evidence),
        },
    }


def pardoned(records: list[dict[str, Any]], macs: set[str]) -> list[dict[str, Any]]:
    """``records`` without the MACs in ``macs`` (lower-case aa:bb:..): a record that names other
    MACs too keeps them, one that names only those is left out. Records not in the threat shape
    pass as they are."""
    if not macs:
        return list(records)
    out = []
    for r in records:
        batman = r.get("batman") if isinstance(r, dict) else None
        names = batman.get("macs") if isinstance(batman, dict) else None
        if not isinstance(names, list):
            out.append(r)
            continue
        kept = [m for m in names if not (isinstance(m, str) and m.lower() in macs)]
        if kept:
            out.append(r if len(kept) == len(names) else {**r, "batman": {**batman, "macs": kept}})
    return out
