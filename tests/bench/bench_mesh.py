"""Originator table dump-and-decode: the agent's client vs `batctl meshif bat0 o`, on one UML node.

    .venv/bin/python tests/bench/bench_mesh.py [--nodes 8]

Boots the lab (``x0tta.lab``: User-Mode Linux, real batman-adv 2022.3), whose check step
(tests/lab/mesh_guest.py ``bench``) builds a line of N nodes with a BATMAN_IV mesh (bat0) and a
BATMAN_V mesh (bat1), waits for convergence, then on the first node times
(tests/lab/mesh_checks.py ``bench``): the client's dump+decode in-process and through the event
loop (``MeshClient.originators``, a worker thread), decode alone, and batctl as a process. Prints
a Markdown table; the ratio is the figure to compare. Needs root and user-mode-linux.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab import mesh_guest
from x0tta.lab.runner import LabUnavailable


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-mesh-") as tmp:
        try:
            result = mesh_guest.run(Path(tmp), "bench", args.nodes)
        except LabUnavailable as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 1
        path = Path(tmp) / "mesh" / "bench.json"
        if not result.check("bench")["ok"] or not path.exists():
            print(result.failure_report(), result.check("bench"), file=sys.stderr)
            return 1
        r = json.loads(path.read_text())
    print(f"{args.nodes}-node line, originator table of node 1: {r['originator_entries']} entries in "
          f"{r['datagrams']} datagram(s); UML guest on {platform.node()} ({platform.machine()})\n")
    print("| measure | per call | vs `batctl meshif bat0 o` |")
    print("|---|---|---|")
    base = r["batctl_o_us"]
    rows = [
        ("client dump+decode, `MeshClient.originators()` (async, worker thread)", r["client_async_us"]),
        ("client dump+decode, `BatadvSocket.dump()` (in-process, blocking)", r["client_sync_us"]),
        ("decode alone (`Reply.feed` over the captured datagrams)", r["decode_only_us"]),
        ("`batctl meshif bat0 o` (a process)", r["batctl_o_us"]),
        ("`batctl meshif bat0 oj` (a process)", r["batctl_oj_us"]),
        ("spawning `/bin/true` (the process cost alone)", r["process_spawn_us"]),
    ]
    for name, us in rows:
        print(f"| {name} | {us / 1000:.3f} ms | {us / base:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
