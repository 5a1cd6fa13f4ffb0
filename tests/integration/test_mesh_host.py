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


def test_a_non_blocking_socket_gets_the_kernels_answer_in_the_call_that_asks() -> None:
    """The real kernel queues nlctrl's answer (here: no such family) before send() returns, which is
    what lets the agent read batman-adv's tables on its event loop without ever waiting."""
    with pytest.raises(CapabilityMissing) as info:
        BatadvSocket(nonblocking=True).open()
    assert info.value.code == "batman_adv_missing"


async def test_async_client_raises_the_same_without_blocking() -> None:
    client = MeshClient()
    with pytest.raises(CapabilityMissing):
        await client.open()
    with pytest.raises(CapabilityMissing):  # the periodic reads, on the loop
        await client.snapshot("lo")
    assert (client.quick_reads, client.slow_reads) == (0, 0)  # refused, not "not queued yet"
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


def test_agent_stays_up_with_mesh_degraded_and_says_why(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    import time

    bindir = Path(sys.executable).parent
    (tmp_path / "run").mkdir()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[node]\nid = "meshhost"\nstate_dir = "{tmp_path}/state"\nruntime_dir = "{tmp_path}/run"\n'
        "[metrics]\nport = 0\n[heal]\nenabled = false\n[peer]\nenabled = false\n"
        "[identity]\nenabled = false\n[probes]\nenabled = false\n"
    )
    sock = tmp_path / "run" / "admin.sock"
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen([str(bindir / "x0tta-agent"), "-c", str(cfg)], stdout=log, stderr=log)
    try:
        mesh: dict = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sock.exists():
                res = subprocess.run([str(bindir / "x0tta"), "--socket", str(sock), "status", "--json"],
                                     capture_output=True, text=True, check=False)
                if res.returncode == 0:
                    subs = {s["subsystem"]: s for s in json.loads(res.stdout)["subsystems"]}
                    mesh = subs.get("mesh", {})
                    if mesh.get("state") == "degraded":
                        break
            time.sleep(0.2)
        assert mesh.get("state") == "degraded", mesh
        assert [c["code"] for c in mesh["conditions"]] == ["batman_adv_missing"]
        assert "batman-adv" in mesh["conditions"][0]["message"]
        assert agent.poll() is None  # still running
        # the CLI falls back to netlink and says the same
        res = subprocess.run([str(bindir / "x0tta"), "--socket", str(sock), "mesh", "originators"],
                             capture_output=True, text=True, check=False)
        assert res.returncode == 1 and "no batman-adv" in res.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)


async def test_a_link_call_that_never_answers_is_given_up_and_the_next_one_works() -> None:
    """pyroute2 calls have no timeout of their own: a stuck one must not hold every later link
    operation (and the agent's stop) for ever."""
    import threading

    from x0tta.common.errors import TemporaryError
    from x0tta.mesh.client import LinkControl

    release = threading.Event()
    links = LinkControl(timeout=0.3)
    try:
        with pytest.raises(TemporaryError, match=r"no answer within 0\.3 s"):
            await links._run(lambda ipr: release.wait(5))
        assert links.abandoned == 1
        assert await links.exists("lo")  # a fresh thread and IPRoute answer at once
    finally:
        release.set()
        await links.close()
