"""Topics and payload schemas of the fleet plane (pure): built payloads follow them, others are refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from x0tta.fleet.core import payloads
from x0tta.fleet.core.payloads import PayloadError, Topics


def test_topics_are_confined_to_the_node():
    t = Topics("x0tta", "n1")
    assert (t.status, t.state, t.events("heal"), t.result) == (
        "x0tta/nodes/n1/status", "x0tta/nodes/n1/state", "x0tta/nodes/n1/events/heal", "x0tta/nodes/n1/result")
    assert t.commands == "x0tta/commands"  # the one topic every node reads
    for node in ("+", "#", "a/b", "", "n1/#"):
        with pytest.raises(ValueError):
            Topics("x0tta", node)
    with pytest.raises(ValueError):
        Topics("x0tta/#", "n1")
    with pytest.raises(ValueError):
        t.events("Heal/+")


HEALTH = [
    {"subsystem": "mesh", "state": "degraded", "conditions": [{"code": "batman_adv_missing", "severity": "degraded",
                                                               "message": "no batman-adv"}]},
    {"subsystem": "heal", "state": "ok", "conditions": []},
]


def built() -> list[dict]:
    return [
        payloads.birth("k1", "n1", 10.0, 3, "0.1", 9.0),
        payloads.death("k2", "n1", 10.0, 3, "lost"),
        payloads.state("k3", "n1", 10.0, "0.1", HEALTH),
        payloads.event("k4", "n1", 10.0, "heal", "incident_opened", "i1", {"kind": "link_down", "t": (1, 2)}),
        payloads.event("k5", "n1", 10.0, "heal", "symptom_cleared", None, {}),
        payloads.result("k6", "n1", 10.0, "c" * 16, "a" * 32, "drain", "executed", None, "drained eth1",
                        {"interface": "eth1"}),
        payloads.result("k7", "n1", 10.0, None, None, None, "refused", "malformed", "not JSON", {}),
    ]


def test_every_payload_built_follows_its_schema_and_round_trips():
    for obj in built():
        assert payloads.decode(payloads.encode(obj)) == obj
    st_ = payloads.decode(payloads.encode(built()[2]))
    assert st_["schema"] == "x0tta.fleet.state/1" and st_["body"]["state"] == "degraded"
    assert st_["body"]["subsystems"][0]["conditions"] == ["batman_adv_missing"]
    assert built()[3]["body"]["data"]["t"] == [1, 2]


@pytest.mark.parametrize("mutate", [
    lambda o: o.pop("id"),
    lambda o: o.update(schema="x0tta.fleet.state/2"),
    lambda o: o.update(at="now"),
    lambda o: o.update(at=True),
    lambda o: o.update(node="a/b"),
    lambda o: o["body"].update(state="sick"),
    lambda o: o["body"].update(extra=1),
    lambda o: o["body"]["subsystems"].append("mesh"),
    lambda o: o["body"]["subsystems"][0].update(conditions=[1]),
])
def test_payloads_off_schema_are_refused(mutate):
    obj = json.loads(payloads.encode(built()[2]))
    mutate(obj)
    with pytest.raises(PayloadError):
        payloads.decode(json.dumps(obj).encode())


@given(st.binary(max_size=200))
def test_decode_raises_only_payload_error(data):
    try:
        payloads.decode(data)
    except PayloadError:
        pass


def test_every_schema_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "fleet.md").read_text()
    for kind, fields in payloads.BODIES.items():
        assert f"x0tta.fleet.{kind}" in doc, kind
        for name in fields:
            assert f"`{name}`" in doc, (kind, name)
