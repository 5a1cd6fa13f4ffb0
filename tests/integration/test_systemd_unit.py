"""The unit file as systemd reads it: verify clean, and hardened to an exposure of 2.5 or less."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import BIN, ROOT

pytestmark = pytest.mark.integration

UNIT = ROOT / "systemd/x0tta-agent.service"
MAX_EXPOSURE = 2.5  # recorded in docs/operations.md


@pytest.fixture
def installed_unit(tmp_path):
    """The unit with ExecStart pointing at this checkout's agent (verify checks the binary exists)."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is required (Debian package systemd)"
    text = UNIT.read_text().replace("/usr/bin/x0tta-agent", str(BIN / "x0tta-agent"))
    path = tmp_path / "x0tta-agent.service"
    path.write_text(text)
    return path


def test_unit_verifies(installed_unit):
    res = subprocess.run(["systemd-analyze", "verify", str(installed_unit)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "x0tta-agent.service" not in res.stderr, res.stderr


def test_unit_exposure_score(installed_unit):
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed_unit)], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for x0tta-agent.service: ([0-9.]+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, res.stdout


def test_unit_declares_what_the_agent_needs():
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "StateDirectory=x0tta",
        "RuntimeDirectory=x0tta",
        "RestartPreventExitStatus=78",
    ):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
    assert re.search(r"^SystemCallFilter=@system-service bpf$", text, re.M)
    # its own user, with exactly the capabilities it needs (docs/operations.md#hardening), as ambient ones
    assert re.search(r"^User=x0tta$", text, re.M) and re.search(r"^Group=x0tta$", text, re.M)
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
    ambient = re.search(r"^AmbientCapabilities=(.*)$", text, re.M).group(1).split()
    assert sorted(caps) == sorted(ambient) == ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW"]
