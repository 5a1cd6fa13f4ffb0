"""Enrolment by certificate request, end to end: `x0tta identity request` on the node, `x0tta ca sign`
on the CA host, svid.pem copied back, SIGHUP; the running agent pairs the certificate with the
pending key, makes that key svid.key, and is ok. The key never leaves the node directory."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.integration.identity.test_agent_identity import identity_health, wait_for
from x0tta.admin.client import call

pytestmark = pytest.mark.integration

ID = "spiffe://mesh.x0tta/node/t1"


def x0tta(*args: str) -> str:
    return subprocess.run([str(BIN / "x0tta"), *args], capture_output=True, text=True, check=True).stdout


def test_first_enrolment_by_request_is_taken_on_sighup(agent_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # poll_interval at its maximum: only the reload can find the files within the test's waits
    cfg = agent_config('[identity]\ntrust_domain = "mesh.x0tta"\npoll_interval = 3600\n')
    ca_dir, ca_out = tmp_path / "ca", tmp_path / "ca-host" / "t1"
    x0tta("ca", "--dir", str(ca_dir), "init", "--trust-domain", "mesh.x0tta")
    sock = str(tmp_path / "run" / "admin.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_")}
    proc = subprocess.Popen(
        [str(BIN / "x0tta-agent"), "--config", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: [c["code"] for c in identity_health(sock)["conditions"]] == ["svid_missing"])

        node_dir = tmp_path / "state" / "identity"
        x0tta("--config", str(cfg), "identity", "request", "--spiffe-id", ID)  # on the node
        pending = (node_dir / "svid.key.new").read_bytes()
        ca_out.mkdir(parents=True)
        shutil.copy(node_dir / "svid.csr", ca_out / "t1.csr")  # only the request travels
        x0tta("ca", "--dir", str(ca_dir), "sign", "--csr", str(ca_out / "t1.csr"), "--node", "t1", "--out", str(ca_out))
        assert not list(ca_out.glob("*.key*"))
        for name in ("svid.pem", "bundle.pem", "crl.pem"):  # copied back
            shutil.copy(ca_out / name, node_dir / name)
        proc.send_signal(signal.SIGHUP)

        wait_for(lambda: identity_health(sock)["state"] == "ok")
        assert call(sock, "identity.show")["spiffe_id"] == ID
        key = node_dir / "svid.key"
        assert key.read_bytes() == pending and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert not (node_dir / "svid.key.new").exists() and not (node_dir / "svid.csr").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err[-2000:]
    assert b"svid_request_completed" in out + err
