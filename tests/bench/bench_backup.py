"""Backup RPO and RTO: ``x0tta backup create`` under 1,000 records/s, then restore to READY.

    .venv/bin/python tests/bench/bench_backup.py [--runs 5] [--load 5] [--rate 1000]

Each run: a node with an SVID from a throwaway built-in CA, its agent running, and a second
process (tests/kit/storewriter.py) writing ``--rate`` records a second into the knowledge store
through the store's own API. After ``--load`` seconds of that, ``x0tta backup create`` runs (the
real command, a subprocess). Measured:

* **RPO** - the records the writer had committed when ``create`` returned that are not in the
  bundle (newer than the manifest's point): what a restore of this bundle made at once would lose,
  in records and in seconds at the write rate. (Between backups the RPO is the backup interval:
  this is the part the backup itself adds.)
* **create** - wall time of the command: snapshot, hashes, signature, tar, fsync, verification.
* **RTO** - from ``x0tta backup restore`` into a fresh state directory to READY=1 of an agent
  started on it, on a real NOTIFY_SOCKET: restore time and agent start to READY, and their sum.

Prints a Markdown table (median and max over the runs) and the host's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.test_agent_process import recv_until, start_agent
from tests.integration.test_backup import config, events, live_node, stop_agent, x0tta
from tests.kit import storewriter


def one_run(tmp: Path, load: float, rate: int) -> dict[str, float]:
    bundle = tmp / "t1.tar"
    live, db, agent, writer = live_node(tmp, rate)
    try:
        time.sleep(load)
        t0 = time.perf_counter()
        made = x0tta(live, "backup", "create", str(bundle), "--json")
        create_s = time.perf_counter() - t0
        committed = events(db)  # the writer's commits when create returned (plus a few ms)
    finally:
        wrote = storewriter.stop(writer)
        stop_agent(agent)
    if made.returncode != 0:
        raise SystemExit(f"backup create failed: {made.stderr}")
    point = json.loads(made.stdout)["stores"]["store/heal.sqlite3"]["last_ids"]["events"]

    fresh = config(tmp, "fresh")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    t0 = time.perf_counter()
    restored = x0tta(fresh, "backup", "restore", str(bundle))
    t1 = time.perf_counter()
    if restored.returncode != 0:
        raise SystemExit(f"backup restore failed: {restored.stderr}")
    agent = start_agent(fresh, str(tmp / "notify.sock"))
    try:
        recv_until(notify, "READY", timeout=60)
        t2 = time.perf_counter()
    finally:
        stop_agent(agent)
        notify.close()
    if events(tmp / "fresh/state/heal.sqlite3") != point:
        raise SystemExit("the restored store does not hold the manifest's records")
    return {
        "records in the bundle": point,
        "RPO, records": committed - point,
        "RPO, ms at the write rate": (committed - point) / wrote["rate"] * 1000,
        "write rate achieved, records/s": wrote["rate"],
        "create, ms": create_s * 1000,
        "bundle, KiB": bundle.stat().st_size / 1024,
        "restore, ms": (t1 - t0) * 1000,
        "agent start to READY, ms": (t2 - t1) * 1000,
        "RTO (restore + start to READY), ms": (t2 - t0) * 1000,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--load", type=float, default=5.0, help="seconds of writing before the backup")
    p.add_argument("--rate", type=int, default=1000)
    args = p.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="x0tta-bench-backup-") as tmp:
            runs.append(one_run(Path(tmp), args.load, args.rate))
        print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v:.0f}" for k, v in runs[-1].items()), file=sys.stderr)
    print(f"{platform.node()}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"| measure ({args.runs} runs, {args.rate} records/s for {args.load:g} s) | median | max |")
    print("|---|---|---|")
    for key in runs[0]:
        vals = [r[key] for r in runs]
        print(f"| {key} | {statistics.median(vals):.0f} | {max(vals):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
