"""Threat records keep their documented EVE-style shape, whatever the finding."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.guard.strategies import observations
from x0tta.config.guard import DetectSettings
from x0tta.guard.core.detect import SIGNATURES, Finding, Heard, Observation, detect, unadmitted_frames
from x0tta.guard.core.threats import format_timestamp, jsonable, threat_record

DOCS = Path(__file__).resolve().parents[3] / "docs" / "guard.md"
R = "02:00:00:00:00:66"
NULLABLE_STR = ("string", "null")

# The documented shape (docs/guard.md, "Threat records"), as a small JSON-schema-like table:
# every key is required, with its JSON type(s); nested objects are nested tables.
SHAPE: dict[str, Any] = {
    "timestamp": "string",
    "event_type": "string",
    "host": "string",
    "in_iface": NULLABLE_STR,
    "alert": {
        "action": "string",
        "gid": "integer",
        "signature_id": "integer",
        "rev": "integer",
        "signature": "string",
        "category": "string",
        "severity": "integer",
    },
    "batman": {
        "detector": "string",
        "subject": "string",
        "macs": "array",
        "originator": NULLABLE_STR,
        "spiffe_id": NULLABLE_STR,
        "evidence": "object",
    },
}
TYPES = {"string": str, "integer": int, "array": list, "object": dict, "null": type(None)}


def check(record: Any, shape: dict[str, Any], path: str = "") -> list[str]:
    """Everything in ``record`` that does not follow ``shape`` (missing keys, wrong types)."""
    problems = []
    if not isinstance(record, dict):
        return [f"{path or '<record>'}: not an object"]
    for key, want in shape.items():
        where = f"{path}.{key}" if path else key
        if key not in record:
            problems.append(f"{where}: missing")
        elif isinstance(want, dict):
            problems += check(record[key], want, where)
        else:
            allowed = (want,) if isinstance(want, str) else want
            value = record[key]
            ok = any(isinstance(value, TYPES[t]) and not (t == "integer" and isinstance(value, bool)) for t in allowed)
            if not ok:
                problems.append(f"{where}: {value!r} is not {' or '.join(allowed)}")
    return problems


def finding() -> Finding:
    obs = [Observation(0.0, heard=(Heard("wlan0", R, 0, 0.0),)),
           Observation(60.0, heard=(Heard("wlan0", R, 400, 0.0),))]
    [f] = unadmitted_frames(obs, DetectSettings(), 60.0)
    return f


def test_a_record_has_the_documented_shape_and_values() -> None:
    rec = threat_record(finding(), timestamp=1_796_528_506.123456, host="node-a")
    assert check(rec, SHAPE) == []
    assert rec["timestamp"] == "2026-12-06T03:41:46.123456+0000"
    assert rec["event_type"] == "alert" and rec["in_iface"] == "wlan0" and rec["host"] == "node-a"
    assert rec["alert"] == {
        "action": "allowed", "gid": 1, "signature_id": 1430501, "rev": 1,
        "signature": "X0TTA GUARD batman-adv frames from a MAC that is not admitted",
        "category": "admission", "severity": 2,
    }
    assert rec["batman"]["macs"] == [R] and rec["batman"]["detector"] == "unadmitted_frames"
    assert rec["batman"]["evidence"]["frames"] == 400
    assert json.loads(json.dumps(rec, allow_nan=False)) == rec


def test_the_timestamp_is_eve_s_format_even_for_nonsense_times() -> None:
    eve = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000")
    for wall in (0.0, 1.5, 1e300, float("nan"), float("inf"), -1e20):
        assert eve.fullmatch(format_timestamp(wall)), wall


def test_evidence_becomes_strict_json() -> None:
    assert jsonable({"a": (1, 2), 3: {4.0, 5.0}, "x": float("nan"), "o": object}) == {
        "a": [1, 2], "3": [4.0, 5.0], "x": None, "o": str(object)}


def test_an_unknown_action_is_not_written() -> None:
    assert threat_record(finding(), timestamp=0.0, action="deleted")["alert"]["action"] == "allowed"
    assert threat_record(finding(), timestamp=0.0, action="blocked")["alert"]["action"] == "blocked"


def test_the_docs_list_every_signature_with_its_id() -> None:
    text = DOCS.read_text()
    for sig in SIGNATURES.values():
        row = re.search(rf"^\| {sig.sid} \| `{sig.name}` \| (\d) \| `{sig.category}` \|", text, re.M)
        assert row, f"docs/guard.md has no row for {sig.sid} {sig.name}"
        assert int(row.group(1)) == sig.severity, sig.name


@settings(max_examples=200, deadline=None)
@given(st.lists(observations, max_size=4), st.floats(), st.floats())
def test_every_finding_makes_a_valid_record(obs: list[Observation], now: float, wall: float) -> None:
    for f in detect(obs, DetectSettings(), now):
        rec = threat_record(f, timestamp=wall, host="n")
        assert check(rec, SHAPE) == []
        json.dumps(rec, allow_nan=False)


def test_x0tta_guard_threats_shows_the_records_as_a_table() -> None:
    from x0tta.cli.guard import render_threats

    assert render_threats([]) == "no threat recorded"
    text = render_threats([threat_record(finding(), timestamp=1_796_528_506.0, host="n", action="blocked")])
    header, _, row = text.splitlines()
    assert header.split() == ["time", "severity", "signature", "subject", "interface", "action"]
    assert row.split() == ["2026-12-06T03:41:46.000000+0000", "medium", "unadmitted_frames", R, "wlan0", "blocked"]


def test_x0tta_threats_passes_its_filters_and_prints_json(monkeypatch, capsys) -> None:
    """The top-level ``x0tta threats`` asks ``guard.threats`` with --since/--severity/--limit."""
    import json

    from x0tta.cli import guard as guard_cli
    from x0tta.cli import main as cli
    from x0tta.guard.service import select_threats

    records = [threat_record(finding(), timestamp=1_796_528_506.0 + i * 3600, host="n") for i in range(3)]
    asked = []

    def ask(_args, command, query):
        asked.append((command, query))
        return select_threats(records, query)

    monkeypatch.setattr(guard_cli, "ask", ask)
    assert cli.main(["threats", "--since", records[1]["timestamp"][:16], "--severity", "medium", "--json"]) == 0
    assert asked == [("guard.threats", {"limit": 50, "since": records[1]["timestamp"][:16], "severity": 2})]
    assert json.loads(capsys.readouterr().out) == records[1:]
    assert cli.main(["threats", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert records[2]["timestamp"] in out and records[1]["timestamp"] not in out
    assert cli.main(["guard", "threats", "--severity", "high"]) == 0  # the same under x0tta guard
    assert asked[-1] == ("guard.threats", {"limit": 50, "severity": 1})


def test_pardoned_macs_are_taken_out_of_the_records_that_name_them():
    from x0tta.guard.core.threats import pardoned

    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    one = {"alert": {"severity": 1}, "batman": {"detector": "originator_flood", "macs": [a]}}
    two = {"alert": {"severity": 1}, "batman": {"detector": "seqno_takeover", "macs": [a.upper(), b]}}
    odd = {"alert": {}}  # not in the threat shape: passed on as it is
    assert pardoned([one, two, odd], set()) == [one, two, odd]
    out = pardoned([one, two, odd], {a})
    assert [r["batman"]["macs"] for r in out[:1]] == [[b]] and out[1] is odd and len(out) == 2
    assert two["batman"]["macs"] == [a.upper(), b]  # the records given are not changed
