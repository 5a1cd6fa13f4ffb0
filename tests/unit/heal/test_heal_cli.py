"""``x0tta incidents`` / ``x0tta incident ID`` reading the knowledge store with no agent running."""

from __future__ import annotations

import json

from x0tta.cli import main as cli
from x0tta.heal.core import loop
from x0tta.heal.core.loop import Result, settle, step
from x0tta.heal.store import Store


def test_incidents_read_the_store_when_no_agent_runs(tmp_path, settings, ring, capsys):
    db = tmp_path / "heal.sqlite3"
    s = Store(db)
    k = loop.initial(settings, "c")
    k, d = step(k, ring.obs(10.0, lost_run=4, loss=0.2), 10.0)
    inc = d[0].incident
    s.write([("incident", k.incident_json(inc)), ("event", (inc, 10.0, "decision", d[0].to_json()))])
    k = settle(k, [Result(d[0].id, "applied")], 10.0)
    s.write([("incident", k.incident_json(d[0].incident))])
    s.close()
    sock = str(tmp_path / "nobody.sock")
    assert cli.main(["--socket", sock, "incidents", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert d[0].incident in out and "silent_loss" in out and "steer_off" in out
    assert cli.main(["--socket", sock, "incidents", "--db", str(db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["id"] == d[0].incident and rows[0]["status"] == "open"
    assert cli.main(["--socket", sock, "incident", d[0].incident, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "why: silent_loss on link:eth0/" in out and "timeline:" in out and "apply steer_off" in out
    assert cli.main(["--socket", sock, "incident", "nope", "--db", str(db)]) == 1


def test_incidents_read_the_store_when_the_agent_runs_without_heal(tmp_path, settings, ring, capsys):
    """An agent whose heal loop is degraded answers 'unknown command'; the store still has the history."""
    import socket
    import threading

    state = tmp_path / "state"
    state.mkdir()
    s = Store(state / "heal.sqlite3")
    k = loop.initial(settings, "c")
    k, d = step(k, ring.obs(10.0, lost_run=4, loss=0.2), 10.0)
    s.write([("incident", k.incident_json(d[0].incident))])
    s.close()
    sock_path = str(tmp_path / "admin.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b'{"ok": false, "error": "unknown command \'heal.incidents\'"}\n')
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[node]\nstate_dir = "{state}"\n[admin]\nsocket = "{sock_path}"\n')
    try:
        assert cli.main(["--config", str(cfg), "incidents", "--json"]) == 0
    finally:
        t.join(5)
        server.close()
    assert json.loads(capsys.readouterr().out)[0]["id"] == d[0].incident
