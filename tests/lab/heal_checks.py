"""Check functions for the heal lab test, run inside the guest (see docs/lab.md, "Checks")."""

from __future__ import annotations

import sqlite3
import time


def heal_state(lab, node):
    """The agent's heal loop as it sees itself: active symptoms, open incidents, breakers, probes."""
    return lab.agent_call(node, "heal.state")


def heal_incidents(lab, node):
    """Every incident in the agent's knowledge store, newest first, each with its full record."""
    rows = lab.agent_call(node, "heal.incidents", {"limit": 500})
    return [lab.agent_call(node, "heal.incident", {"id": r["id"]}) for r in rows]


def wait_incidents_closed(lab, node, timeout=30.0):
    """Wait until the agent has no open incident (its actions undone and verified)."""
    deadline = time.monotonic() + float(timeout)
    while True:
        state = lab.agent_call(node, "heal.state")
        if not state["incidents"]:
            return {"open": 0}
        if time.monotonic() > deadline:
            raise AssertionError(f"{node}: incidents still open: {[i['id'] for i in state['incidents']]}")
        time.sleep(0.2)


def store_after_kill(lab, node):
    """The knowledge store of ``node`` read directly (the agent may be dead): integrity and contents."""
    path = lab.scratch / node / "state" / "heal.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT id, status, kind, resolution FROM incidents ORDER BY opened").fetchall()
        actions = db.execute("SELECT id, incident, kind, state, undo_state FROM actions ORDER BY decided").fetchall()
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()
    assert integrity == "ok", integrity
    return {"integrity": integrity, "incidents": rows, "actions": actions, "events": events}
