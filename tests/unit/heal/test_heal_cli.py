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
