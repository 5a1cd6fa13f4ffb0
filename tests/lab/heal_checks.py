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


LINK_KINDS = ("link_suspect", "silent_loss", "link_down", "link_degraded", "partition", "mesh_alert")


def wait_incidents_closed(lab, node, timeout=30.0, kinds=LINK_KINDS):
    """Wait until the agent has no open incident of these kinds (its actions undone and verified).

    Other kinds are left out on purpose: a subsystem of the agent failing in the guest for reasons
    of its own keeps a ``subsystem_unhealthy`` incident open for as long as it fails, and the route
    changes of the scenario itself keep ``route_flapping`` (and its faster OGMs) up for a minute."""
    from x0tta.admin.client import AdminCallFailed, AgentUnavailable

    started = time.monotonic()
    deadline = started + float(timeout)
    left: list[str] = ["(agent not answering)"]
    while time.monotonic() < deadline:
        try:
            state = lab.agent_call(node, "heal.state", timeout=2.0)
        except (AgentUnavailable, AdminCallFailed):  # starting, or its heal subsystem is not up yet
            time.sleep(0.5)
            continue
        left = [i["id"] for i in state["incidents"] if i["symptom"]["kind"] in kinds]
        if not left:
            return {"open": 0, "waited_s": round(time.monotonic() - started, 3)}
        time.sleep(0.2)
    raise AssertionError(f"{node}: incidents still open after {timeout} s: {left}")


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


def mesh_settings_back(lab, node, orig_interval=1000, timeout=5.0):
    """After the agents stopped: the node's OGM interval and aggregation as configured (an agent
    gives back what its heal loop held when it stops). Waits up to ``timeout`` for the agent's exit."""
    deadline = time.monotonic() + float(timeout)
    while True:
        mesh = lab.batctl_json(node, "mesh")
        got = {"orig_interval": mesh.get("orig_interval"), "aggregation": mesh.get("aggregated_ogms_enabled")}
        if got == {"orig_interval": orig_interval, "aggregation": True} or time.monotonic() > deadline:
            assert got == {"orig_interval": orig_interval, "aggregation": True}, f"{node}: {got}"
            return got
        time.sleep(0.2)


def open_incidents(lab, node):
    """The agent's open incidents, as ``kind target`` strings (a quiet mesh has none)."""
    state = lab.agent_call(node, "heal.state")
    return [f"{i['symptom']['kind']} {i['symptom']['target']}" for i in state["incidents"]]
