"""On the host kernel (no batman-adv), the mesh subsystem degrades with a reason instead of crashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from x0tta.common.errors import CapabilityMissing
from x0tta.mesh.client import MeshClient
from x0tta.mesh.genl import BatadvSocket

pytestmark = pytest.mark.integration

if Path("/sys/module/batman_adv").exists():  # pragma: no cover - a host with batman-adv
    pytest.skip("this host kernel has batman-adv; the lab tests cover it", allow_module_level=True)


def test_socket_says_batman_adv_is_missing() -> None:
    with pytest.raises(CapabilityMissing) as info:
        BatadvSocket().open()
    assert info.value.code == "batman_adv_missing"
    assert "modprobe batman-adv" in str(info.value)


async def test_async_client_raises_the_same_without_blocking() -> None:
    client = MeshClient()
    with pytest.raises(CapabilityMissing):
        await client.open()
    await client.close()


def test_cli_falls_back_to_netlink_and_reports_missing(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from x0tta.cli.main import build_parser

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from x0tta.cli import mesh as mesh_cli

    mesh_cli.register(sub)
    args = parser.parse_args(["mesh", "originators", "--meshif", "bat0"])
    args.socket = "/nonexistent/x0tta-admin.sock"
    with pytest.raises(CapabilityMissing):
        args.func(args)
    assert build_parser  # the main parser module imports cleanly alongside
