"""What a node writes into the replicated mesh state besides its registry entry: the heal loop's
incident summaries (opened, then closed; at most MAX_INCIDENTS, closed ones dropped first) and its
guard's quarantines (with their end; gone when released or run out). The rules are pure; the
subsystem notes each write without blocking whoever hands it over, writes it on its worker thread,
and drops and counts what comes while it does not run."""

from __future__ import annotations

import time

from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.cli.meshstate import render
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.fleet.core import state as st
from x0tta.fleet.stateservice import MeshStateService
from x0tta.peer.testing import FakeContext, StaticIdentity, sample
from x0tta.telemetry.testing import running

TD = "mesh.test"
ME = f"spiffe://{TD}/node/a"


def summary(at: float, closed: float | None = None) -> dict:
    return {"kind": "link_down", "target": "hardif:eth1", "severity": "critical", "opened": at, "closed": closed,
            "summary": "open" if closed is None else "cleared by itself", "at": at}


def opened(kind: str = "link_down") -> dict:
    return {"kind": kind, "target": "hardif:eth1", "severity": "critical", "opened": 100.0, "time_to_detect": 0.4}


def closed(inc: str) -> dict:
    return {"incident": {"id": inc, "symptom": {"kind": "link_down", "target": "hardif:eth1"}, "opened": 100.0,
                         "severity": "critical", "closed": 130.0, "resolution": "healed: steer_off"},
            "actions": [], "duration": 30.0}


def test_the_heal_loop_s_events_become_summaries():
    v = st.incident_value("incident_opened", opened(), 101.0)
    assert v == {"kind": "link_down", "target": "hardif:eth1", "severity": "critical", "opened": 100.0,
                 "closed": None, "summary": "open", "at": 101.0}
    st.encode_value("incidents", v)
    c = st.incident_value("incident_closed", closed("x-i1"), 131.0)
    assert (c["opened"], c["closed"], c["summary"]) == (100.0, 130.0, "healed: steer_off")
    st.encode_value("incidents", c)
    assert st.incident_value("symptom_raised", {}, 1.0) is None
    assert st.incident_value("incident_closed", {"incident": {}}, 1.0) is None  # not the heal loop's record


def test_an_author_keeps_its_latest_summaries_dropping_closed_ones_first():
    mine = {f"{ME} i{n}": summary(n, closed=n + 1 if n % 2 else None) for n in range(st.MAX_INCIDENTS)}
    drop = st.incidents_to_drop(mine, [f"{ME} new1", f"{ME} new2"])
    assert drop == [f"{ME} i1", f"{ME} i3"]  # the oldest closed ones
    assert st.incidents_to_drop(mine, [f"{ME} i0"]) == []  # written again: no room needed
    still_open = {k: summary(n) for n, k in enumerate(mine)}
    assert st.incidents_to_drop(still_open, [f"{ME} new"]) == [f"{ME} i0"]


def test_quarantine_entries_follow_what_the_guard_holds():
    now = 1000.0
    b, mac = f"spiffe://{TD}/node/b", "02:00:00:00:00:0c"
    held = [{"target": b, "macs": ["02:00:00:00:00:0b"], "reason": "threat", "until": now + 600},
            {"target": mac, "macs": [mac], "reason": "threat", "until": now + 60}]
    first = st.quarantine_changes(ME, {}, held, now)
    assert set(first) == {f"{ME} {b}", f"{ME} {mac}"}
    for value in first.values():
        st.encode_value("quarantine", value)
    # the same quarantines read again a moment later (the guard counts on the monotonic clock): no write
    moved = [dict(q, until=q["until"] + 0.3) for q in held]
    assert st.quarantine_changes(ME, first, moved, now + 5) == {}
    # extended: written again; released: deleted; run out: deleted too
    longer = [dict(held[0], until=now + 1200)]
    assert st.quarantine_changes(ME, first, longer, now + 5) == {f"{ME} {mac}": None,
                                                                 f"{ME} {b}": {**first[f"{ME} {b}"],
                                                                               "until": now + 1200, "at": now + 5}}
    assert st.quarantine_changes(ME, first, held, now + 61) == {f"{ME} {mac}": None}


class NoPeers:
    """The carrier of a node alone: nothing to sync with."""

    def register_method(self, name, handler):
        pass

    def sessions(self):
        return []


async def shown(ctx: FakeContext) -> dict:
    return await ctx.admin.handlers["meshstate.show"]({})


async def test_the_subsystem_writes_incidents_and_quarantines_and_drops_what_comes_while_it_is_stopped(tmp_path):
    ca = TestCA(TD)
    svc = MeshStateService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))), NoPeers())
    held: list[dict] = []
    svc.quarantines = lambda: list(held)
    svc.heal_event("incident_opened", "x-i0", opened())  # not running yet
    assert svc.dropped["incident"] == 1
    ctx = FakeContext(build(AgentSettings, {"identity": {"trust_domain": TD},
                                            "meshstate": {"enabled": True, "interval": 0.2}}),
                      name="meshstate", node_id="a", state_dir=tmp_path)
    b = f"spiffe://{TD}/node/b"
    async with running(svc, ctx):
        await until(lambda: svc.running, 10)
        svc.heal_event("incident_opened", "x-i1", opened())  # while it waits for its SVID: kept
        await until(lambda: svc.written["registry"] == 1, 30)
        held.append({"target": b, "macs": ["02:00:00:00:00:0b"], "reason": "threat", "until": time.time() + 600})
        svc.quarantine_changed(b"\x02\x00\x00\x00\x00\x0b", b)
        svc.heal_event("symptom_raised", "x-i1", {})  # not an incident's opening or closing: ignored
        svc.heal_event("incident_opened", "x-i2", opened(kind="Not A Name"))  # refused by the rules: dropped
        state = await until(lambda: _with(ctx, lambda s: f"{ME} x-i1" in s["incidents"] and s["quarantine"]), 30)
        assert state["incidents"][f"{ME} x-i1"]["closed"] is None
        assert state["quarantine"][f"{ME} {b}"]["macs"] == ["02:00:00:00:00:0b"]
        assert svc.dropped["incident"] == 2
        text = render(await shown(ctx))  # what x0tta meshstate prints of it
        assert "incidents (1)" in text and "quarantines (1)" in text and "refused: none" in text
        [row] = [line for line in text.splitlines() if line.startswith(ME) and "x-i1" in line]
        assert row.split()[2:5] == ["link_down", "hardif:eth1", "critical"] and " open " in row
        svc.heal_event("incident_closed", "x-i1", closed("x-i1"))
        held.clear()
        svc.quarantine_changed([b"\x02\x00\x00\x00\x00\x0b"])  # released
        state = await until(lambda: _with(ctx, lambda s: s["incidents"][f"{ME} x-i1"]["closed"] == 130.0
                                          and not s["quarantine"]), 30)
        assert state["incidents"][f"{ME} x-i1"]["summary"] == "healed: steer_off"
        await until(lambda: sample(ctx, "x0tta_meshstate_writes_total", kind="quarantine") == 2, 30)
        assert sample(ctx, "x0tta_meshstate_writes_dropped_total", kind="incident") == 2
        shown_now = await shown(ctx)
        assert shown_now["written"]["incident"] >= 2 and shown_now["dropped"] == {"incident": 2}
    svc.heal_event("incident_opened", "x-i3", opened())  # stopped: dropped
    svc.quarantine_changed(b"\x02\x00\x00\x00\x00\x0b", b)
    assert svc.dropped == {"incident": 3, "quarantine": 1}


async def _with(ctx: FakeContext, pred) -> dict | None:
    show = await shown(ctx)
    state = show.get("state")
    return state if state is not None and pred(state) else None


def test_x0tta_meshstate_asks_the_agent_and_prints_tables_or_json(monkeypatch, capsys):
    import json

    from x0tta.cli import main as cli
    from x0tta.cli import meshstate as meshstate_cli

    b = f"spiffe://{TD}/node/b"
    shown_now = {"ready": True, "author": ME, "epoch": 1, "epochs": [0, 1], "log_bytes": 9000, "applied": 7,
                 "duplicates": 2, "refused": {"not_member": 1}, "malformed": 0, "written": {}, "dropped": {},
                 "state": {"registry": {b: {"macs": ["02:00:00:00:00:0b"], "role": "gateway", "version": "1",
                                            "at": 1_796_528_506.0}},
                           "quarantine": {f"{b} 02:00:00:00:00:0c": {
                               "target": "02:00:00:00:00:0c", "macs": ["02:00:00:00:00:0c"], "reason": "replay",
                               "until": time.time() + 300, "at": 1.0}},
                           "incidents": {f"{b} x-i4": summary(1_796_528_506.0, closed=1_796_528_536.0)},
                           "revocations": {}}}
    asked = []
    monkeypatch.setattr(meshstate_cli, "ask", lambda _args, command: asked.append(command) or shown_now)
    assert cli.main(["meshstate"]) == 0
    out = capsys.readouterr().out
    assert asked == ["meshstate.show"]
    assert "registry (1 nodes)" in out and "gateway" in out and "refused: not_member 1" in out
    assert [line.split()[:2] for line in out.splitlines() if "replay" in line] == [[b, "02:00:00:00:00:0c"]]
    assert "2026-12-06 03:42:16" in out and "cleared by itself" in out  # closed, with its resolution
    assert cli.main(["meshstate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 1
    assert "not ready" in render({"ready": False})
