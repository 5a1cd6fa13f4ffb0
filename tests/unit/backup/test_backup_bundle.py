"""Bundles on disk: create, verify and restore through ``x0tta backup``, on files in a temporary
directory (no agent, no root). The write load and the agent's restart are in
tests/integration/test_backup.py."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.kit.bundles import rewrite
from x0tta.backup.bundle import create, local_spiffe_id, restore
from x0tta.backup.core import BackupError, FileMismatch, OtherNode, SignatureInvalid, SignerRejected, sign
from x0tta.cli.main import main
from x0tta.config.loader import load_settings
from x0tta.heal.store import Store
from x0tta.identity.ca import CertificateAuthority

TD = "mesh.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca", TD)


def node(tmp: Path, ca: CertificateAuthority, name: str = "a", *, issue: bool = True, extra: str = "") -> Path:
    """A node's config and state directory: an SVID from ``ca`` and a knowledge store with events."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f'[node]\nid = "{name}"\nstate_dir = "{tmp}/{name}-state"\nruntime_dir = "{tmp}/{name}-run"\n'
                   f'[identity]\ntrust_domain = "{TD}"\n{extra}')
    state = tmp / f"{name}-state"
    if issue:
        ca.issue_to(state / "identity", f"spiffe://{TD}/node/{name}", 3600.0)
    return cfg


def fill(cfg: Path, n: int) -> None:
    s = load_settings(cfg)
    store = Store(Path(s.node.state_dir) / "heal.sqlite3")
    store.write([("event", ("i1", float(i), "tick", {"i": i})) for i in range(n)])
    store.close()


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


def test_create_writes_a_private_verified_bundle_with_the_stores_point(tmp_path, ca, capsys) -> None:
    cfg = node(tmp_path, ca)
    fill(cfg, 25)
    out = tmp_path / "b" / "a.tar"
    assert run("-c", cfg, "backup", "create", out) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "written and verified: spiffe://mesh.test/node/a" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["a.tar"], "no temporary file left behind"
    assert run("-c", cfg, "backup", "verify", out) == 0
    m = create(load_settings(cfg), tmp_path / "again.tar")
    assert {f.name for f in m.files} == {"store/heal.sqlite3", "identity/svid.pem", "identity/svid.key",
                                         "identity/bundle.pem", "identity/crl.pem"}
    facts = m.stores["store/heal.sqlite3"]
    assert facts["rows"]["events"] == 25 and facts["last_ids"] == {"events": 25} and facts["last_event_at"] == 24.0


def test_the_ca_directory_goes_in_when_the_node_keeps_one(tmp_path, ca) -> None:
    cfg = node(tmp_path, ca, extra=f'ca_dir = "{ca.directory}"\n')
    m = create(load_settings(cfg), tmp_path / "a.tar")
    names = {f.name for f in m.files}
    assert {"ca/ca.key", "ca/ca.pem", "ca/state.json", "ca/bundle.pem"} <= names and "ca/.lock" not in names


def test_no_svid_no_backup(tmp_path, ca, capsys) -> None:
    cfg = node(tmp_path, ca, issue=False)
    assert run("-c", cfg, "backup", "create", tmp_path / "a.tar") == 1
    assert "no SVID to sign the backup with" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["byte", "manifest", "key", "not-a-tar"])
def test_verify_refuses_a_tampered_bundle_with_exit_1(tmp_path, ca, capsys, what) -> None:
    cfg = node(tmp_path, ca)
    fill(cfg, 5)
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    create(load_settings(cfg), good)
    other = ca.issue(f"spiffe://{TD}/node/b", 3600.0)

    def edit(m: dict[str, bytes]) -> dict[str, bytes]:
        if what == "byte":
            db = bytearray(m["store/heal.sqlite3"])
            db[-10] ^= 0x01
            m["store/heal.sqlite3"] = bytes(db)
        elif what == "manifest":
            m["manifest.json"] = m["manifest.json"].replace(b'"node_id": "a"', b'"node_id": "z"')
        else:  # the manifest signed again, by another node's key
            m["manifest.sig"] = sign(other.private_key_pem, m["manifest.json"])
        return m

    if what == "not-a-tar":
        bad.write_bytes(good.read_bytes()[:700])
    else:
        rewrite(good, bad, edit)
    assert run("-c", cfg, "backup", "verify", bad) == 1
    err = capsys.readouterr().err
    expected = {"byte": "store/heal.sqlite3: SHA-256 differs", "manifest": "manifest signature does not verify",
                "key": "manifest signature does not verify", "not-a-tar": "is not a backup bundle"}[what]
    assert expected in err
    with pytest.raises((FileMismatch, SignatureInvalid, BackupError)):
        restore(load_settings(node(tmp_path, ca, "fresh", issue=False)), bad)


def test_verify_refuses_a_bundle_of_another_mesh(tmp_path, ca, capsys) -> None:
    theirs = CertificateAuthority.init(tmp_path / "their-ca", TD)
    (tmp_path / "x").mkdir()
    cfg_theirs = node(tmp_path / "x", theirs)
    create(load_settings(cfg_theirs), tmp_path / "theirs.tar")
    ours = node(tmp_path, ca)
    assert run("-c", ours, "backup", "verify", tmp_path / "theirs.tar") == 1
    assert "does not verify against the local trust bundle: bad_chain" in capsys.readouterr().err
    with pytest.raises(SignerRejected):
        restore(load_settings(ours), tmp_path / "theirs.tar")


def test_restore_into_a_fresh_state_directory(tmp_path, ca) -> None:
    cfg = node(tmp_path, ca)
    fill(cfg, 40)
    create(load_settings(cfg), tmp_path / "a.tar")
    fresh = node(tmp_path, ca, "a2", issue=False, extra=f'spiffe_id = "spiffe://{TD}/node/a"\n')
    r = restore(load_settings(fresh), tmp_path / "a.tar")
    assert r.undo is None
    state = tmp_path / "a2-state"
    store = Store(state / "heal.sqlite3", readonly=True)
    assert store.counts()["events"] == 40 and store.integrity_check() == "ok"
    store.close()
    assert stat.S_IMODE((state / "identity" / "svid.key").stat().st_mode) == 0o600
    assert (state / "identity" / "svid.pem").read_bytes() == (tmp_path / "a-state/identity/svid.pem").read_bytes()
    assert not [p for p in state.rglob(".*restore")], "no staged file left behind"


async def test_what_operators_hold_on_the_mesh_goes_in_and_comes_back(tmp_path, ca) -> None:
    from x0tta.config.mesh import MeshSettings
    from x0tta.mesh.held import FILENAME, HeldStore

    cfg = node(tmp_path, ca)
    held = {"detached": {"eth1"}, "mesh": {"orig_interval": 500}}
    await HeldStore(tmp_path / "a-state" / FILENAME).save(held)
    m = create(load_settings(cfg), tmp_path / "a.tar")
    assert m.stores[f"store/{FILENAME}"]["rows"] == {"held": 2}
    fresh = node(tmp_path, ca, "a2", issue=False, extra=f'spiffe_id = "spiffe://{TD}/node/a"\n')
    restore(load_settings(fresh), tmp_path / "a.tar")
    back, problems = await HeldStore(tmp_path / "a2-state" / FILENAME).load(MeshSettings(hard_interfaces=("eth1",)))
    assert back == held and problems == []


def test_restore_keeps_the_previous_state_aside(tmp_path, ca) -> None:
    cfg = node(tmp_path, ca)
    fill(cfg, 10)
    create(load_settings(cfg), tmp_path / "a.tar")
    fill(cfg, 5)  # written after the backup: lost by the restore, kept in the undo directory
    state = tmp_path / "a-state"
    (state / "heal.sqlite3-wal").write_bytes(b"stale wal")  # never left beside a restored file
    r = restore(load_settings(cfg), tmp_path / "a.tar")
    assert r.undo is not None and r.undo.parent == state and stat.S_IMODE(r.undo.stat().st_mode) == 0o700
    assert (r.undo / "store" / "heal.sqlite3-wal").read_bytes() == b"stale wal"
    assert not (state / "heal.sqlite3-wal").exists()
    old = Store(r.undo / "store" / "heal.sqlite3", readonly=True)
    assert old.counts()["events"] == 15
    old.close()
    new = Store(state / "heal.sqlite3")
    assert new.counts()["events"] == 10
    new.close()


def test_restore_refuses_another_nodes_bundle_unless_told(tmp_path, ca, capsys) -> None:
    a, b = node(tmp_path, ca, "a"), node(tmp_path, ca, "b")
    create(load_settings(a), tmp_path / "a.tar")
    assert run("-c", b, "backup", "restore", tmp_path / "a.tar") == 1
    err = capsys.readouterr().err
    assert "the bundle is of spiffe://mesh.test/node/a, this node is spiffe://mesh.test/node/b" in err
    with pytest.raises(OtherNode):
        restore(load_settings(node(tmp_path, ca, "c", issue=False)), tmp_path / "a.tar")
    assert run("-c", b, "backup", "restore", "--other-node", "--keep-identity", tmp_path / "a.tar") == 0
    out = capsys.readouterr().out
    assert "restoring spiffe://mesh.test/node/a's bundle on spiffe://mesh.test/node/b" in out
    assert "this node's SVID differs from the bundle's (renewed since the backup?): kept (--keep-identity)" in out
    assert local_spiffe_id(load_settings(b)) == "spiffe://mesh.test/node/b", "--keep-identity kept b's SVID"


def test_restore_refuses_while_the_agent_answers(tmp_path, ca, capsys) -> None:
    cfg = node(tmp_path, ca, extra=f'[admin]\nsocket = "{tmp_path}/admin.sock"\n')
    create(load_settings(cfg), tmp_path / "a.tar")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "admin.sock"))
    srv.listen()

    def answer() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(b'{"ok": true, "result": {}}\n')
        conn.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        assert run("-c", cfg, "backup", "restore", tmp_path / "a.tar") == 1
        assert "the agent answers on" in capsys.readouterr().err
    finally:
        t.join(5)
        srv.close()
    os.unlink(tmp_path / "admin.sock")
    assert run("-c", cfg, "backup", "restore", "--agent-running", tmp_path / "a.tar") == 0


def test_a_bundle_encrypted_with_a_passphrase(tmp_path, ca, capsys) -> None:
    cfg = node(tmp_path, ca)
    fill(cfg, 3)
    secret, wrong = tmp_path / "pass", tmp_path / "wrong"
    secret.write_text("correct horse\n")
    wrong.write_text("battery staple\n")
    out = tmp_path / "a.tar.sealed"
    assert run("-c", cfg, "backup", "create", out, "--passphrase-file", secret) == 0
    blob = out.read_bytes()
    assert blob.startswith(b"x0tta-backup-sealed-v1\n") and b"PRIVATE KEY" not in blob and b"SQLite" not in blob
    capsys.readouterr()
    assert run("-c", cfg, "backup", "verify", out) == 1
    assert "is encrypted: give its passphrase (--passphrase-file)" in capsys.readouterr().err
    assert run("-c", cfg, "backup", "verify", out, "--passphrase-file", wrong) == 1
    assert "wrong passphrase, or the file was changed" in capsys.readouterr().err
    flipped = tmp_path / "flipped"
    flipped.write_bytes(blob[:-40] + bytes([blob[-40] ^ 1]) + blob[-39:])
    assert run("-c", cfg, "backup", "verify", flipped, "--passphrase-file", secret) == 1
    assert "wrong passphrase, or the file was changed" in capsys.readouterr().err
    assert run("-c", cfg, "backup", "verify", out, "--passphrase-file", secret) == 0
    fresh = node(tmp_path, ca, "a2", issue=False, extra=f'spiffe_id = "spiffe://{TD}/node/a"\n')
    assert run("-c", fresh, "backup", "restore", out, "--passphrase-file", secret) == 0
    key = "identity/svid.key"
    assert (tmp_path / "a2-state" / key).read_bytes() == (tmp_path / "a-state" / key).read_bytes()


def test_restore_refuses_while_another_process_holds_a_store_open(tmp_path, ca, capsys) -> None:
    """An agent whose admin socket is elsewhere, or any writer: seen in /proc."""
    cfg = node(tmp_path, ca)
    fill(cfg, 3)
    create(load_settings(cfg), tmp_path / "a.tar")
    db = tmp_path / "a-state" / "heal.sqlite3"
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1'); print('open', flush=True); " \
           "sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert run("-c", cfg, "backup", "restore", tmp_path / "a.tar") == 1
        assert f"the stores are held open by process {holder.pid} (python" in capsys.readouterr().err
    finally:
        holder.communicate("")
    assert run("-c", cfg, "backup", "restore", tmp_path / "a.tar") == 0
