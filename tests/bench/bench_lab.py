"""Boot-to-converged time of 5- and 20-node mesh labs (docs/benchmarks.md, section "lab").

    .venv/bin/python tests/bench/bench_lab.py [--runs 1] [--no-agents-only]

Each lab is booted by ``x0tta.lab.run_lab`` with one step, ``converge``: from starting
``linux.uml`` to every node seeing every other node's originator (batctl oj, best entries) and,
with agents, every agent answering ``status`` on its admin socket. Labs: the 5-node ring of
configs/lab/ring.toml and a 4 x 5 grid (20 nodes, 31 links), each without and with an agent per
node. The 5-node lab without agents is the baseline of the ratios. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from x0tta.lab.core.topology import topology_from_data
from x0tta.lab.runner import load_topology, run_lab

ROOT = Path(__file__).resolve().parents[2]


def grid(rows: int, cols: int) -> dict:
    names = [f"r{r}c{c}" for r in range(1, rows + 1) for c in range(1, cols + 1)]
    links = []
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            if c < cols:
                links.append(f"r{r}c{c}-r{r}c{c + 1}")
            if r < rows:
                links.append(f"r{r}c{c}-r{r + 1}c{c}")
    return {"name": f"grid{rows}x{cols}", "nodes": names, "links": links,
            "steps": [{"do": "converge", "timeout_s": 180}]}


def measure(topology, agents: bool, runs: int, timeout: float) -> dict | str:
    figures = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="x0tta-bench-lab-") as out:
            result = run_lab(topology, out, scenario=[{"do": "converge", "timeout_s": timeout}], agents=agents)
            if not result.ok:
                print(result.failure_report()[:3000], file=sys.stderr)
                return f"not converged within {timeout:.0f} s"
            b = result.boot
            figures.append({"total": result.boot_to_converged_s, "uml": b["uml_start_s"], "setup": b["setup_s"],
                            "mesh": b["mesh_converged_s"] - b["setup_s"],
                            "agents": b["converged_s"] - b["mesh_converged_s"]})
    return {k: statistics.median(f[k] for f in figures) for k in figures[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--no-agents-only", action="store_true")
    p.add_argument("--timeout", type=float, default=180.0, help="converge step timeout, s")
    args = p.parse_args()
    labs = [("ring, 5 nodes", load_topology(ROOT / "configs" / "lab" / "ring.toml")),
            ("grid 4 x 5, 20 nodes", topology_from_data(grid(4, 5), "grid4x5"))]
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}, runs {args.runs}")
    print("| lab | agents | boot to converged | kernel to engine | setup (netns, veths, bat0) | then mesh converged "
          "| then agents ready | vs 5 nodes, no agents |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    base = None
    for agents in (False,) if args.no_agents_only else (False, True):
        for name, topo in labs:
            f = measure(topo, agents, args.runs, args.timeout)
            if isinstance(f, str):
                print(f"| {name} | {'yes' if agents else 'no'} | {f} | | | | | |", flush=True)
                continue
            base = base or f["total"]
            print(f"| {name} | {'yes' if agents else 'no'} | {f['total']:.1f} s | {f['uml']:.1f} s "
                  f"| {f['setup']:.1f} s | {f['mesh']:.1f} s | {f['agents']:.1f} s | {f['total'] / base:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
