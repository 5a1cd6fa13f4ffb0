"""The knowledge store: round trips, retention, the dedicated thread, and kill -9 mid-write."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

from x0tta.heal.core import loop
from x0tta.heal.core.loop import Result, settle, step
from x0tta.heal.core.model import ActionKind, Op
from x0tta.heal.store import AsyncStore, Store


def _incident(i: int, status: str = "open", closed: float | None = None) -> dict:
    return {
        "id": f"x-i{i}",
        "symptom": {"kind": "silent_loss", "target": "link:eth0/02:00:00:00:00:0a"},
        "opened": 100.0 + i,
        "onset": 99.5 + i,
        "severity": "critical",
        "evidence": {"loss": 1.0},
        "closed": closed,
        "healed": None,
        "status": status,
        "resolution": "",
        "notes": [],
    }


def _action(i: int, state: str = "planned") -> dict:
    return {
        "id": f"x-a{i}",
        "incident": f"x-i{i}",
        "symptom": {"kind": "silent_loss", "target": "link:eth0/02:00:00:00:00:0a"},
        "action": {"kind": "steer_off", "target": "hardif:eth0", "params": {"hardif": "eth0", "method": "detach",
                   "hop_penalty": None, "previous_hop_penalty": None}, "disruptive": True, "blast_radius": 1,
                   "cost": 2.0, "expected": "", "verify_after": 1.0},
        "reasons": ["because"],
        "state": state,
        "decided": 100.0 + i,
        "applied": None,
        "verify_at": None,
        "outcome": "",
        "undo_op": None,
        "undo_state": None,
        "undo_applied": None,
        "undo_reason": "",
        "baseline": {"originators": 4},
    }


def test_round_trip_and_retention(tmp_path):
    s = Store(tmp_path / "k.sqlite3")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.write([("incident", _incident(1)), ("action", _action(1)), ("event", ("x-i1", 100.0, "decision", {"a": 1})),
             ("stats", {("silent_loss", "steer_off"): (3, 1)})])
    for i in range(2, 8):
        s.write([("incident", _incident(i, "closed", closed=200.0 + i)), ("action", _action(i, "effective"))])
    assert [x["id"] for x in s.load_open()] == ["x-i1"]
    assert s.load_open()[0]["actions"][0]["id"] == "x-a1"
    assert s.load_stats() == {("silent_loss", "steer_off"): (3, 1)}
    full = s.incident("x-i1")
    assert full["events"][0]["name"] == "decision" and full["actions"][0]["reasons"] == ["because"]
    assert len(s.incidents(limit=3)) == 3
    # retention: keep at most 4 incidents -> the 3 oldest closed go, the open one stays
    assert s.prune(now=300.0, retention_days=30, max_incidents=4) == 3
    assert {r["id"] for r in s.incidents()} == {"x-i1", "x-i5", "x-i6", "x-i7"}
    assert s.counts()["actions"] == 4
    # age: everything closed before now - 1 day goes
    assert s.prune(now=200.0 + 86400 * 2, retention_days=1, max_incidents=100) == 3
    assert [r["id"] for r in s.incidents()] == ["x-i1"]
    assert s.integrity_check() == "ok"
    s.close()
    ro = Store(tmp_path / "k.sqlite3", readonly=True)
    assert ro.incident("x-i1")["id"] == "x-i1"
    ro.close()


async def test_async_store_runs_on_one_dedicated_thread(tmp_path):
    st = AsyncStore(tmp_path / "k.sqlite3")
    seen: set[str] = set()
    main = threading.current_thread().name

    orig = Store.write

    def spy(self, ops):
        seen.add(threading.current_thread().name)
        return orig(self, ops)

    Store.write = spy  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(st.write([("incident", _incident(i))]) for i in range(20)))
    finally:
        Store.write = orig  # type: ignore[method-assign]
    assert len(seen) == 1 and main not in seen and next(iter(seen)).startswith("heal-store")
    assert len(await st.load_open()) == 20
    await st.close()


WRITER = r"""
import sys
sys.path.insert(0, {root!r})
from tests_writer_helpers import incident, action
from x0tta.heal.store import Store
s = Store(sys.argv[1])
i = 0
while True:
    i += 1
    pad = {{"pad": "x" * 2000}}
    s.write([("incident", incident(i)), ("action", action(i)), ("event", ("x-i%d" % i, 1.0, "decision", pad))])
    s.write([("action", dict(action(i), state="applied", applied=2.0))])
    print(i, flush=True)
"""


def test_survives_kill_9_mid_write(tmp_path):
    helper = tmp_path / "tests_writer_helpers.py"
    helper.write_text(
        "import json\n"
        f"_I = json.loads({json.dumps(_incident(0))!r})\n"
        f"_A = json.loads({json.dumps(_action(0))!r})\n"
        "def incident(i):\n    return dict(_I, id='x-i%d' % i)\n"
        "def action(i):\n    return dict(_A, id='x-a%d' % i, incident='x-i%d' % i)\n"
    )
    db = tmp_path / "state" / "heal.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(tmp_path)), str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    acked = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while acked < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of its next transactions
    proc.wait()
    proc.stdout.close()
    assert acked >= 150, "writer did not get going"
    s = Store(db)
    assert s.integrity_check() == "ok"
    ids = {r["id"] for r in s.load_open()}
    assert {f"x-i{i}" for i in range(1, acked + 1)} <= ids  # no acknowledged record lost
    # the writer may be ahead of what we read from its pipe, but transactions are whole: no gaps
    assert ids == {f"x-i{i}" for i in range(1, len(ids) + 1)}
    for inc in s.load_open():
        assert inc["actions"] and inc["actions"][0]["id"] == inc["id"].replace("-i", "-a")
        n = int(inc["id"][3:])
        if n <= acked:
            assert inc["actions"][0]["state"] == "applied"
    s.close()


def test_restart_resumes_or_closes_open_incidents(tmp_path, settings, ring):
    """An agent killed with a hard interface steered off: the next one restores it and closes."""
    path = tmp_path / "heal.sqlite3"
    s = Store(path)
    k = loop.initial(settings, "old")
    k, d = step(k, ring.obs(10.0, lost_run=4, loss=0.2), 10.0)
    assert d[0].action.kind == ActionKind.STEER_OFF
    s.write([("incident", k.incident_json(d[0].incident))])  # written before acting; then killed
    s.close()
    s = Store(path)
    assert s.integrity_check() == "ok"
    open_ = s.load_open()
    assert open_[0]["actions"][0]["state"] == "planned"
    k2 = loop.resume(loop.initial(settings, "new", s.load_stats()), open_, 50.0)
    t = 50.0
    restored = []
    while t < 50.0 + settings.resume_grace + settings.restore_verify_after + 3:
        t += 0.5
        k2, d = step(k2, ring.obs(t, eth0_attached=bool(restored)), t)
        if d:
            restored += [x for x in d if x.op == Op.RESTORE]
            k2 = settle(k2, [Result(x.id, "applied") for x in d], t)
        for e in k2.events:
            if e.name == "incident_closed":
                s.write([("incident", {**e.data["incident"], "actions": e.data["actions"]})])
    assert [x.action.kind for x in restored] == [ActionKind.RESTORE_HARDIF]
    assert s.incident(open_[0]["id"])["status"] == "closed"
    assert not s.load_open()
    s.close()


def test_an_action_handed_over_to_another_incident_is_listed_under_it_only(tmp_path):
    s = Store(tmp_path / "heal.sqlite3")
    try:
        a = _action(1, "effective")
        s.write([("incident", {**_incident(1), "actions": [a]}), ("incident", {**_incident(2), "actions": []})])
        s.write([("incident", {**_incident(1), "actions": []}),
                 ("incident", {**_incident(2), "actions": [{**a, "incident": "x-i2"}]})])
        assert [x["id"] for x in s.incident("x-i2")["actions"]] == ["x-a1"]
        assert s.incident("x-i1")["actions"] == []
    finally:
        s.close()


def test_steer_offs_undone_since_a_time_of_open_and_closed_incidents(tmp_path):
    """What a restarted agent rebuilds its reattach guard from: steer-off records whose undo was
    applied at or after a time, whatever their incident's status."""
    s = Store(tmp_path / "k.sqlite3")

    def undone(i: int, at: float | None, kind: str = "steer_off") -> dict:
        a = _action(i, "effective")
        a["action"] = {**a["action"], "kind": kind}
        return {**a, "undo_op": "restore", "undo_state": "effective" if at else None, "undo_applied": at}

    s.write([
        ("incident", {**_incident(1, "closed", 150.0), "actions": [undone(1, 140.0)]}),
        ("incident", {**_incident(2), "actions": [undone(2, 120.0)]}),
        ("incident", {**_incident(3), "actions": [undone(3, None)]}),
        ("incident", {**_incident(4, "closed", 150.0), "actions": [undone(4, 145.0, "tune_orig_interval")]}),
        ("incident", {**_incident(5), "actions": [undone(5, 130.0)]}),
    ])
    assert [a["id"] for a in s.load_undone_steer_offs(130.0)] == ["x-a1", "x-a5"]
    assert [a["id"] for a in s.load_undone_steer_offs(141.0)] == []
    s.close()
