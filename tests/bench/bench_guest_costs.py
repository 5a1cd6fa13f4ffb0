"""What the pieces of an agent's steady state cost in the lab guest, against the host in the same
run (docs/benchmarks.md, section "heal: steady-state CPU").

    .venv/bin/python tests/bench/bench_guest_costs.py [--calls 5000]

One User-Mode Linux boot of the 5-node ring without agents; in node n1's namespace, the CPU time
per call (``time.process_time``) of a clock read, ``getpid``, a datagram sent, a probe socket read
(one datagram, and empty), an event-loop turn and a worker-thread hop on the agent's loop
(``tests/bench/cpu_checks.py``, ``measure_costs``). The same function then runs on the host, in
this process. The ratio says how much dearer each piece is in the guest, where every system call
goes through the host: the agent's share of a lab node's CPU is made of these.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

from x0tta.lab.runner import load_topology, run_lab

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("cpu_checks.py")
sys.path.insert(0, str(Path(__file__).parent))
from cpu_checks import measure_costs  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=5000, help="calls per measure")
    args = p.parse_args()
    topo = load_topology(ROOT / "configs" / "lab" / "ring.toml")
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-costs-") as tmp:
        result = run_lab(topo, Path(tmp), scenario=[
            {"do": "converge", "label": "mesh", "timeout_s": 90},
            {"do": "check", "label": "costs", "call": f"{CHECKS}:costs", "args": {"n": args.calls}},
        ], agents=False)
        guest = result.check("costs")
    if not guest.get("ok"):
        raise SystemExit(f"the measurement in the guest failed: {guest}")
    host = measure_costs(args.calls)
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}; "
          f"{args.calls} calls per measure")
    print("| piece | guest, us of CPU per call | host, us | guest / host |")
    print("|---|---|---|---|")
    for name, g in guest["result"].items():
        h = host[name]
        ratio = f"{g / h:.0f}x" if h >= 0.05 and g >= 0.05 else "-"  # the guest's CPU clock ticks: ~3 us here
        print(f"| {name} | {g:.1f} | {h:.2f} | {ratio} |")
    print(json.dumps({"guest": guest["result"], "host": host}, indent=1))


if __name__ == "__main__":
    main()
