"""The agent as systemd runs it: a subprocess with a real NOTIFY_SOCKET, its endpoints, its signals."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import stat
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 400_000  # the agent must ping every 0.2 s


def start_agent(config: Path, notify: str | None = None, extra_env: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_")}
    env.update(extra_env or {})
    if notify:
        env["NOTIFY_SOCKET"] = notify
        env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    return subprocess.Popen(
        [str(BIN / "x0tta-agent"), "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def recv_until(sock: socket.socket, key: str, timeout: float = 20.0) -> list[tuple[float, dict[str, str]]]:
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        got.append((time.monotonic(), fields))
        if key in fields:
            return got
    raise AssertionError(f"no {key} within {timeout}s; got {got}")


def test_agent_lifecycle_under_notify_socket(agent_config, tmp_path):
    cfg = agent_config()
    from x0tta.config.loader import load_settings

    settings = load_settings(cfg, {})
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    proc = start_agent(cfg, notify_path)
    try:
        msgs = recv_until(sock, "READY")
        assert msgs[-1][1]["READY"] == "1"
        assert "STATUS" in msgs[-1][1]

        # /metrics passes promtool with no complaint at all.
        port = settings.metrics.port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert check.returncode == 0 and check.stdout == b"" and check.stderr == b"", check
        assert b"x0tta_build_info{" in body and b"x0tta_subsystem_restarts_total" in body
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
        ready = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5))
        assert ready["node"] == "t1"

        # x0tta status answers (table and JSON).
        out = subprocess.run(
            [str(BIN / "x0tta"), "--config", str(cfg), "status"], capture_output=True, text=True, check=True
        ).stdout
        assert out.startswith("node t1  x0tta ")
        cmd = [str(BIN / "x0tta"), "--config", str(cfg), "status", "--json"]
        st = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        assert st["pid"] == proc.pid and st["uptime_seconds"] > 0
        # the guard's threat records answer too (the detectors run in the agent; what they find
        # depends on the host, so only the shape is checked)
        cmd = [str(BIN / "x0tta"), "--config", str(cfg), "guard", "threats", "--json"]
        threats = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        assert isinstance(threats, list) and all(t["event_type"] == "alert" for t in threats)
        assert stat.S_IMODE(os.stat(settings.admin_socket).st_mode) == 0o600

        # WATCHDOG=1 at half of WATCHDOG_USEC, measured from now: pings sent while the CLI calls
        # above ran are still queued on the socket and would read as gaps of microseconds
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(4096)
        sock.setblocking(True)
        pings = []
        while len(pings) < 8:
            t, _ = recv_until(sock, "WATCHDOG", timeout=5)[-1]
            pings.append(t)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.1 < statistics.median(gaps) < 0.35, gaps

        # SIGTERM: STOPPING=1, exit 0 within 5 s.
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        recv_until(sock, "STOPPING", timeout=5)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 5
        assert not Path(settings.admin_socket).exists(), "admin socket removed on exit"
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate()
        sock.close()
    # Every log line is one JSON object with the standard fields.
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines, "the agent logged nothing"
    for rec in lines:
        assert {"timestamp", "level", "node", "subsystem", "event"} <= rec.keys(), rec
    assert [r["event"] for r in lines][-1] == "agent_stopped"


# `x0tta-agent` with `import uvloop` made to fail, as on a node installed without the `fast` extra.
NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; from x0tta.agent.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("uvloop", [True, False], ids=["uvloop", "without-uvloop"])
def test_agent_runs_on_uvloop_or_says_it_falls_back_to_asyncio(agent_config, tmp_path, uvloop):
    cfg = agent_config()
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_")} | {"NOTIFY_SOCKET": notify_path}
    cmd = [str(BIN / "x0tta-agent")] if uvloop else [str(BIN / "python"), "-c", NO_UVLOOP]
    proc = subprocess.Popen([*cmd, "--config", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        recv_until(sock, "READY")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    events = {rec["event"]: rec for rec in map(json.loads, out.splitlines())}
    assert events["agent_ready"]["loop"] == ("uvloop" if uvloop else "asyncio")
    if uvloop:
        assert "uvloop_missing" not in events
    else:
        missing = events["uvloop_missing"]
        assert missing["level"] == "warning" and missing["fallback"] == "asyncio", missing
        assert "x0tta[fast]" in missing["hint"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[metrics]\nprot = 1\n", "metrics.prot: got 1; expected no such key"),
        ('[metrics]\nport = "x"\n', "metrics.port: got 'x'; expected an integer"),
        ("[tracing]\nsample_ratio = 7.0\n", "tracing.sample_ratio: got 7.0; expected a number between 0.0 and 1.0"),
        ("[metrics\n", "valid TOML"),
        (None, "a readable UTF-8 file (No such file or directory)"),
        (b"\xff\xfe", "a readable UTF-8 file"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "invalid-toml", "unreadable", "not-utf8"],
)
def test_bad_config_precise_message_and_nonzero_exit(tmp_path, body, expected):
    cfg = tmp_path / "bad.toml"
    if isinstance(body, bytes):
        cfg.write_bytes(body)
    elif body is not None:
        cfg.write_text(body)
    check = subprocess.run([str(BIN / "x0tta"), "config", "check", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 1
    assert expected in check.stderr
    agent = subprocess.run([str(BIN / "x0tta-agent"), "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert agent.returncode == 78  # EX_CONFIG: systemd will not restart into the same error
    assert expected in agent.stderr


def test_sighup_with_bad_config_keeps_old_one(agent_config):
    cfg = agent_config()
    good = cfg.read_text()
    proc = start_agent(cfg)
    try:
        from x0tta.admin.client import call
        from x0tta.config.loader import load_settings

        sock = load_settings(cfg, {}).admin_socket
        deadline = time.monotonic() + 20
        while True:
            try:
                call(sock, "status")
                break
            except Exception:
                assert time.monotonic() < deadline, "agent never answered"
                time.sleep(0.1)
        cfg.write_text(good.replace('level = "debug"', 'level = "loud"'))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert call(sock, "config")["logging"]["level"] == "debug"
        assert proc.poll() is None
        cfg.write_text(good.replace('level = "debug"', 'level = "info"'))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert call(sock, "config")["logging"]["level"] == "info"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate()
    records = [json.loads(line) for line in out.splitlines()]
    rejected = [r for r in records if r["event"] == "config_reload_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["kept"] == "previous configuration stays in force"
    assert any("logging.level: got 'loud'" in p for p in rejected[0]["problems"])
