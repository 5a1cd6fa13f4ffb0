"""Load inside the lab guest, as monitoring scripts on a router cause it:
``python -m x0tta.lab.load CPU_PCT SPAWN_PER_S SECONDS``.

Run by the lab engine (step ``load``) in the guest's root namespace. Every 100 ms it spins for
``CPU_PCT`` % of the period, and it starts ``SPAWN_PER_S`` short processes a second (``/bin/true``,
reaped at once): the two costs a router's cron jobs and SNMP or shell scrapers put on its one CPU.
It runs ``SECONDS`` (0: until SIGTERM) and prints ``ready`` once started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

PERIOD_S = 0.1


def main(argv: list[str]) -> int:
    cpu, spawn, seconds = float(argv[0]), float(argv[1]), float(argv[2])
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("ready", flush=True)
    start = time.monotonic()
    next_spawn = start
    k = 0
    while not stop and (seconds <= 0 or time.monotonic() - start < seconds):
        period = start + k * PERIOD_S
        busy_until = period + PERIOD_S * cpu / 100.0
        while time.monotonic() < busy_until and not stop:
            pass
        now = time.monotonic()
        while spawn > 0 and next_spawn <= now and not stop:
            subprocess.run(["/bin/true"], check=False)
            next_spawn += 1.0 / spawn
        k += 1
        delay = start + k * PERIOD_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            k = int((time.monotonic() - start) / PERIOD_S) + 1  # fell behind: do not catch up in a burst
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
