"""A second process writing records into a knowledge store at a steady rate, through the store's own API.

    python -m tests.kit.storewriter DB [--rate 1000] [--batch 10]

What a busy heal loop looks like to a backup: one closed incident, then events (the store's
append-only records: ``events.seq`` is their id) written in transactions of ``--batch`` through
:meth:`x0tta.heal.store.Store.write` (WAL, ``synchronous=FULL``: each commit is on disk when it
returns), paced to ``--rate`` records a second. Prints ``started`` once the first commit is in;
on SIGTERM or SIGINT it stops between transactions and prints one JSON line: records written, the
last one's seq, the rate achieved.

The integration test (tests/integration/test_backup.py) and the benchmark
(tests/bench/bench_backup.py) run it with :func:`start`.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

INCIDENT = "bk-writer-i1"


def start(db: Path, rate: int = 1000, batch: int = 10) -> subprocess.Popen[str]:
    """Start the writer and return once its first transaction is committed."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kit.storewriter", str(db), "--rate", str(rate), "--batch", str(batch)],
        cwd=root, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "started":
        proc.kill()
        raise AssertionError(f"the store writer did not start: {line!r}, exit {proc.wait()}")
    return proc


def stop(proc: subprocess.Popen[str]) -> dict[str, float]:
    """Stop the writer; what it wrote."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    from x0tta.heal.store import Store

    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--batch", type=int, default=10)
    args = p.parse_args()
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    store = Store(args.db)
    now = time.time()
    incident = {"id": INCIDENT, "symptom": {"kind": "silent_loss", "target": "writer"}, "status": "closed",
                "opened": now, "onset": now, "closed": now, "resolution": "test load", "actions": []}
    store.write([("incident", incident)])
    written, t0 = 0, time.monotonic()
    print("started", flush=True)
    while not stopping:
        store.write([("event", (INCIDENT, time.time(), "load", {"n": written + i})) for i in range(args.batch)])
        written += args.batch
        ahead = t0 + written / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    elapsed = time.monotonic() - t0
    last = store.db.execute("SELECT max(seq) FROM events").fetchone()[0]
    store.close()
    print(json.dumps({"written": written, "last_seq": last, "seconds": elapsed, "rate": written / elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
