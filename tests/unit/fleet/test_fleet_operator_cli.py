"""The node's side of operator commands without a broker: keys on disk, durable counters, the
handler registry; and the operator's CLI: keygen writes the private half 0600, sign what nodes take."""

from __future__ import annotations

import json
import stat

import pytest

from x0tta.cli.main import main
from x0tta.fleet.commands import Actions, Counters, load_operators
from x0tta.fleet.core import command as c
from x0tta.fleet.core.command import Accepted
from x0tta.identity.core.operator import load_private, load_public


async def test_counters_only_grow_and_survive_a_reopen(tmp_path):
    path = str(tmp_path / "c.sqlite3")
    box = Counters(path)
    assert await box.load() == {}
    assert await box.take("op", 5) and not await box.take("op", 5) and not await box.take("op", 4)
    assert await box.take("op", 6) and await box.take("other", 1)
    await box.close()
    again = Counters(path)
    assert await again.load() == {"op": 6, "other": 1}
    assert not await again.take("op", 6)
    await again.close()


def test_cli_keygen_sign_and_a_node_takes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fleet", "keygen", "alice"]) == 0
    assert stat.S_IMODE((tmp_path / "alice.key.pem").stat().st_mode) == 0o600
    assert main(["fleet", "keygen", "alice"]) == 1  # never overwrites a key
    key = load_private((tmp_path / "alice.key.pem").read_bytes())
    assert load_public((tmp_path / "alice.pub.pem").read_bytes()) == key.public
    node = "spiffe://mesh.x0tta/node/n1"
    assert main(["fleet", "sign", "--operator-key", "alice.key.pem", "--action", "set_mesh",
                 "--arg", "setting=orig_interval", "--arg", "value=500", "--target", node,
                 "--counter", "7", "--out", "cmd.json"]) == 0
    data = (tmp_path / "cmd.json").read_bytes().strip()
    ops, problems = load_operators((str(tmp_path),))
    assert problems == [] and list(ops) == [key.key_id]  # the directory's *.pub.pem; the .key.pem is no public key
    d = c.check(data, json.loads(json.loads(data)["command"])["issued_at"] + 1, node, ops, {})
    assert isinstance(d, Accepted) and d.command.args == {"setting": "orig_interval", "value": 500}
    assert main(["fleet", "sign", "--operator-key", "alice.key.pem", "--action", "drain",
                 "--arg", "interface=not an interface", "--target", node]) == 1  # malformed: not signed
    assert "malformed" in capsys.readouterr().err


def test_bad_key_files_are_reported_not_fatal(tmp_path):
    (tmp_path / "x.pub.pem").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_bytes(b"not read")
    ops, problems = load_operators((str(tmp_path), str(tmp_path / "missing.pub.pem")))
    assert ops == {} and len(problems) == 2


def test_the_registry_takes_only_command_actions():
    actions = Actions()

    async def h(cmd):
        return {}

    actions.register("drain", h)
    assert actions.get("drain") is h and actions.get("quarantine") is None and actions.names == ["drain"]
    with pytest.raises(ValueError):
        actions.register("reboot", h)
