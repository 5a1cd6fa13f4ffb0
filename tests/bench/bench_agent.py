"""Agent start-to-ready time, idle RSS and idle CPU, against a bare interpreter in the same run.

    .venv/bin/python tests/bench/bench_agent.py [--runs 5] [--idle 10]

Start-to-ready is measured as systemd sees it: from fork to the READY=1 datagram on a real
NOTIFY_SOCKET. The baseline is the same interpreter running ``pass`` (fork to exit), so the ratio
says what the agent adds on top of Python itself on this machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baseline_start() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def agent_run(tmp: Path, idle: float) -> tuple[float, int, float]:
    cfg = tmp / "agent.toml"
    cfg.write_text(
        f'[node]\nid = "bench"\nstate_dir = "{tmp}/state"\nruntime_dir = "{tmp}/run"\n'
        '[logging]\nformat = "json"\n[metrics]\nport = 0\n'
    )
    notify = tmp / "notify.sock"
    notify.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify))
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "x0tta-agent"), "-c", str(cfg)], env=env, stdout=subprocess.DEVNULL)
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.perf_counter() - t0
        time.sleep(1.0)  # settle
        c0 = cpu_seconds(proc.pid)
        time.sleep(idle)
        cpu = (cpu_seconds(proc.pid) - c0) / idle
        rss = rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        sock.close()
    return ready, rss, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=float, default=10.0)
    args = ap.parse_args()
    base = [baseline_start() for _ in range(args.runs)]
    results = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.runs):
            results.append(agent_run(Path(d), args.idle))
    ready = statistics.median(r[0] for r in results)
    rss = statistics.median(r[1] for r in results)
    cpu = statistics.median(r[2] for r in results)
    b = statistics.median(base)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"| measure | agent (median of {args.runs}) | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| start to READY=1 | {ready * 1000:.0f} ms | {b * 1000:.0f} ms (python -c pass) | {ready / b:.1f}x |")
    print(f"| idle RSS | {rss / 1024:.1f} MiB | | |")
    print(f"| idle CPU over {args.idle:.0f} s | {cpu * 100:.2f} % of a core | | |")


if __name__ == "__main__":
    main()
