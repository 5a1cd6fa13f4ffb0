"""The identity subsystem inside the real agent process: degraded until enrolled, picks up the
files an operator copies in (and a revocation list on SIGHUP), exposes them on the admin socket
and as metrics that promtool accepts."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.kit.wait import until_sync
from x0tta.admin.client import AgentUnavailable, call
from x0tta.identity.ca import CRL_FILE, CertificateAuthority, write_atomic

pytestmark = pytest.mark.integration


wait_for = functools.partial(until_sync, ignore=(OSError, AgentUnavailable))  # the agent may not listen yet


def identity_health(sock: str) -> dict:  # type: ignore[type-arg]
    st = call(sock, "status")
    # right after start the board may not list the subsystem yet: report it as not there
    return next((s for s in st["subsystems"] if s["subsystem"] == "identity"), {"state": None, "conditions": []})


def test_enrollment_and_revocation_reach_the_running_agent(agent_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = agent_config('[identity]\ntrust_domain = "mesh.x0tta"\npoll_interval = 0.2\n')
    ca = CertificateAuthority.init(tmp_path / "ca", "mesh.x0tta")
    sock = str(tmp_path / "run" / "admin.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_")}
    proc = subprocess.Popen(
        [str(BIN / "x0tta-agent"), "--config", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        def missing() -> dict | None:  # type: ignore[type-arg]
            h = identity_health(sock)
            return h if [c["code"] for c in h["conditions"]] == ["svid_missing"] else None

        assert wait_for(missing)["state"] == "degraded"

        node_dir = tmp_path / "state" / "identity"
        svid = ca.issue_to(node_dir, "spiffe://mesh.x0tta/node/t1", 3600)
        wait_for(lambda: identity_health(sock)["state"] == "ok")
        shown = call(sock, "identity.show")
        assert shown["spiffe_id"] == "spiffe://mesh.x0tta/node/t1"
        assert shown["serial"] == f"{svid.leaf.serial_number:x}" and shown["key_algorithm"] == "ML-DSA-65"
        cli = subprocess.run(
            [str(BIN / "x0tta"), "--socket", sock, "identity"], capture_output=True, text=True, check=True
        )
        assert "spiffe://mesh.x0tta/node/t1" in cli.stdout and "ML-DSA-65" in cli.stdout

        # a revocation list delivered and announced with SIGHUP is in force at once
        ca.revoke(spiffe_id="spiffe://mesh.x0tta/node/other")  # nothing issued to it: no-op
        victim = ca.issue("spiffe://mesh.x0tta/node/gone", 600)
        ca.revoke([victim.leaf.serial_number])
        write_atomic(node_dir / CRL_FILE, ca.crl_pem())
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: call(sock, "identity.show")["revoked_serials"] == 1)

        port = json.loads(Path(cfg).read_text().split("port = ")[1].split("\n")[0])

        def scrape() -> bytes | None:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            return body if b"x0tta_identity_revoked_certificates 1.0" in body else None

        body = wait_for(scrape, timeout=5)
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert check.returncode == 0 and check.stdout == b"" and check.stderr == b"", check
        metric = "x0tta_identity_svid_expires_in_seconds "
        expires = next(float(ln.split()[-1]) for ln in body.decode().splitlines() if ln.startswith(metric))
        assert 3000 < expires <= 3600

        # the agent's output holds no key material
        key_body = b"".join(svid.private_key_pem.splitlines()[1:-1])
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err[-2000:]
    assert key_body not in out + err
    assert b"svid_loaded" in out + err
