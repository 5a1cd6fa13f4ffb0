"""``x0tta backup`` on a live node: a bundle taken while the agent runs and another process writes
1,000 records a second into the knowledge store verifies, tampered copies do not (a changed byte in
the store, a changed manifest, the manifest signed by another node's key), and restored into
a fresh state directory it brings up an agent that reaches READY holding every record up to the
manifest's point, under the backed-up node's SVID."""

from __future__ import annotations

import json
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.integration.test_agent_process import recv_until, start_agent
from tests.kit import storewriter
from tests.kit.bundles import rewrite
from tests.kit.ports import free_port
from tests.kit.procs import stop_process
from tests.kit.wait import until_sync
from x0tta.backup.core import sign
from x0tta.heal.store import Store
from x0tta.identity.ca import CertificateAuthority

pytestmark = pytest.mark.integration

TD = "mesh.test"


def config(tmp: Path, name: str) -> Path:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(f"""
[node]
id = "t1"
state_dir = "{tmp}/{name}/state"
runtime_dir = "{tmp}/{name}/run"
[logging]
format = "json"
[metrics]
port = {free_port()}
[identity]
trust_domain = "{TD}"
[peer]
listen_address = "127.0.0.1"
port = {free_port()}
""")
    return cfg


def x0tta(cfg: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "x0tta"), "--config", str(cfg), *argv], capture_output=True, text=True,
                          timeout=120)


def live_node(tmp: Path, rate: int) -> tuple[Path, Path, subprocess.Popen[str], subprocess.Popen[str]]:
    """A node t1 with an SVID of a new built-in CA, its agent running and the store writer at
    ``rate``: its config, its knowledge store, the agent and the writer."""
    ca = CertificateAuthority.init(tmp / "ca", TD)
    live = config(tmp, "live")
    ca.issue_to(tmp / "live/state/identity", f"spiffe://{TD}/node/t1", 3600.0)
    db = tmp / "live/state/heal.sqlite3"
    agent = start_agent(live)
    try:
        return live, db, agent, storewriter.start(db, rate=rate)
    except BaseException:
        stop_agent(agent)
        raise


def events(db: Path) -> int:
    store = Store(db, readonly=True)
    try:
        return store.counts()["events"]
    finally:
        store.close()


def stop_agent(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        stop_process(proc, timeout=15)
    proc.communicate()


def test_backup_under_write_load_restores_to_ready_with_every_record(tmp_path: Path) -> None:
    bundle = tmp_path / "backups/t1.tar"
    live, db, agent, writer = live_node(tmp_path, rate=1000)
    try:
        until_sync(lambda: x0tta(live, "status").returncode == 0, timeout=30)
        until_sync(lambda: events(db) >= 1000, timeout=30)  # a second of load
        made = x0tta(live, "backup", "create", str(bundle), "--json")
        assert made.returncode == 0, made.stderr
        after = events(db)
    finally:
        wrote = storewriter.stop(writer)
        stop_agent(agent)
    manifest = json.loads(made.stdout)
    point = manifest["stores"]["store/heal.sqlite3"]["last_ids"]["events"]
    assert manifest["spiffe_id"] == f"spiffe://{TD}/node/t1" and manifest["key_algorithm"] == "ML-DSA-65"
    assert 1000 <= point < after <= wrote["last_seq"], "the snapshot was taken while the writer wrote"
    assert wrote["rate"] > 500, wrote  # paced to 1,000/s; a busy host may fall behind, never to nothing

    checked = x0tta(live, "backup", "verify", str(bundle))
    assert checked.returncode == 0 and checked.stdout.startswith(f"bundle {bundle}\nverified: "), checked

    # one changed byte inside the knowledge store's copy: refused with the file named
    with tarfile.open(bundle) as tar:
        offset = tar.getmember("store/heal.sqlite3").offset_data
    tampered = tmp_path / "backups/tampered.tar"
    data = bytearray(bundle.read_bytes())
    data[offset + 4096 + 100] ^= 0x20
    tampered.write_bytes(bytes(data))
    refused = x0tta(live, "backup", "verify", str(tampered))
    assert refused.returncode == 1 and "store/heal.sqlite3: SHA-256 differs" in refused.stderr, refused
    # the manifest's point moved on, and the manifest signed again by another node of the mesh
    other = CertificateAuthority(tmp_path / "ca").issue(f"spiffe://{TD}/node/t2", 3600.0)
    edits = {
        "manifest": lambda m: {**m, "manifest.json": m["manifest.json"].replace(
            f'"events": {point}'.encode(), f'"events": {point + 500}'.encode())},
        "key": lambda m: {**m, "manifest.sig": sign(other.private_key_pem, m["manifest.json"])},
    }
    for what, edit in edits.items():
        rewrite(bundle, tmp_path / f"backups/{what}.tar", edit)
        refused = x0tta(live, "backup", "verify", str(tmp_path / f"backups/{what}.tar"))
        assert refused.returncode == 1 and "manifest signature does not verify" in refused.stderr, (what, refused)

    # restore into a fresh state directory (a replacement machine) and start the agent on it
    fresh = config(tmp_path, "fresh")
    assert x0tta(fresh, "backup", "restore", str(tampered)).returncode == 1
    restored = x0tta(fresh, "backup", "restore", str(bundle))
    assert restored.returncode == 0, restored.stderr
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    agent = start_agent(fresh, str(tmp_path / "notify.sock"))
    try:
        assert recv_until(notify, "READY", timeout=60)[-1][1]["READY"] == "1"
        store = Store(tmp_path / "fresh/state/heal.sqlite3", readonly=True)
        rows = store.db.execute("SELECT seq, data FROM events ORDER BY seq").fetchall()
        store.close()
        assert len(rows) == point and rows[-1]["seq"] == point, "every record up to the backup's point"
        assert all(json.loads(r["data"])["n"] == r["seq"] - 1 for r in rows), "in order, none torn"
        seen = x0tta(fresh, "incident", storewriter.INCIDENT, "--json")
        assert seen.returncode == 0 and len(json.loads(seen.stdout)["events"]) == point

        def identity() -> dict:
            out = x0tta(fresh, "identity", "--json")
            return json.loads(out.stdout) if out.returncode == 0 and "spiffe_id" in out.stdout else {}

        assert until_sync(identity, timeout=30)["spiffe_id"] == f"spiffe://{TD}/node/t1"
        again = x0tta(fresh, "backup", "restore", str(bundle))
        assert again.returncode == 1 and "the agent answers on" in again.stderr
    finally:
        stop_agent(agent)
        notify.close()
