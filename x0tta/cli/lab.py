"""``x0tta lab``: run a mesh lab (real batman-adv in User-Mode Linux) from a topology file.

    x0tta lab run configs/lab/ring.toml [--out DIR] [--no-agents] [--json]
    x0tta lab validate configs/lab/*.toml
    x0tta lab chaos configs/lab/ring.toml --faults 30 --seed 1 [--load] [--out DIR] [--json]

``run`` prints the engine's progress as it happens, then the timeline summary (events, pings,
outages, time to restore after each fault); the results stay in the output directory
(``timeline.json``, ``agents/*.log``, ``snapshots/``). See docs/lab.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EX_UNAVAILABLE = 69  # sysexits.h: the lab cannot run on this machine


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("lab", help="run a mesh lab: batman-adv in User-Mode Linux, scripted faults, a timeline")
    lab = p.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    r = lab.add_parser("run", help="boot the lab, run its scenario, print the timeline summary")
    r.add_argument("topology", help="topology file (configs/lab/ring.toml, ...)")
    r.add_argument("--out", help="results directory (default lab-out/<name>-<time>)")
    r.add_argument("--no-agents", action="store_true", help="run without agents: batman-adv alone, as a baseline")
    r.add_argument("--json", action="store_true", help="print timeline.json instead of the summary")
    _running_options(r)
    r.set_defaults(func=run)
    c = lab.add_parser("chaos", help="random faults from a seed, with agents and with batman-adv alone: the harm")
    c.add_argument("topology", help="topology file (its steps are replaced by the chaos schedule)")
    c.add_argument("--faults", type=int, default=30, help="number of faults (default 30)")
    c.add_argument("--seed", type=int, default=1, help="seed of the schedule (the same seed, the same faults)")
    c.add_argument("--load", action="store_true", help="CPU and process-spawn load on the guest during both runs")
    c.add_argument("--kinds", help="comma-separated fault kinds (default all: link_down, silent_both, silent_one, "
                   "partial_loss, delay, agent_kill, node_kill)")
    c.add_argument("--hold", type=float, default=5.0, help="seconds each fault lasts (default 5)")
    c.add_argument("--settle", type=float, default=6.0, help="seconds after each restore (default 6)")
    c.add_argument("--out", help="results directory (default lab-out/chaos-<name>-<time>)")
    c.add_argument("--json", action="store_true", help="print the whole report as JSON")
    _running_options(c)
    c.set_defaults(func=chaos)
    m = lab.add_parser("compare", help="two results directories of one scenario: with agents and alone, side by side")
    m.add_argument("agents", help="results directory of the run with agents")
    m.add_argument("alone", help="results directory of the same scenario without agents")
    m.set_defaults(func=compare)
    v = lab.add_parser("validate", help="check topology files without running them")
    v.add_argument("topology", nargs="+")
    v.set_defaults(func=validate)


def _running_options(p: argparse.ArgumentParser) -> None:
    """What every command that boots the lab takes."""
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines while the lab runs")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing packages")
    p.add_argument("--identities", action="store_true",
                   help="a CA of the run's own issues every node an SVID: the agents hold PQ mTLS sessions with "
                        "their neighbours and key their probes and alerts with them")


def run(args: argparse.Namespace) -> int:
    from x0tta.lab.runner import LabUnavailable, load_topology, run_lab

    topo = load_topology(args.topology)
    out = Path(args.out) if args.out else Path("lab-out") / f"{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = run_lab(topo, out, agents=False if args.no_agents else None, install=not args.no_install,
                         stream=None if args.quiet or args.json else sys.stderr, identities=args.identities)
    except LabUnavailable as exc:
        print(f"x0tta lab: cannot run the lab on this machine: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if args.json:
        json.dump(result.timeline, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(result.summary())
        print(f"\nresults in {result.out_dir}")
    return 0 if result.ok else 1


def chaos(args: argparse.Namespace) -> int:
    from x0tta.lab.chaos import run_chaos
    from x0tta.lab.core.chaos import KINDS as CHAOS_KINDS
    from x0tta.lab.core.chaos import table
    from x0tta.lab.runner import LabUnavailable, load_topology

    topo = load_topology(args.topology)
    out = Path(args.out) if args.out else Path("lab-out") / f"chaos-{topo.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    kinds = tuple(k.strip() for k in args.kinds.split(",")) if args.kinds else CHAOS_KINDS
    bad = [k for k in kinds if k not in CHAOS_KINDS]
    if bad:
        print(f"x0tta lab chaos: unknown fault kinds {', '.join(bad)}; kinds: {', '.join(CHAOS_KINDS)}",
              file=sys.stderr)
        return 2
    try:
        doc = run_chaos(topo, out, faults=args.faults, seed=args.seed, load=args.load, hold_s=args.hold,
                        settle_s=args.settle, kinds=kinds, install=not args.no_install,
                        stream=None if args.quiet or args.json else sys.stderr, identities=args.identities)
    except LabUnavailable as exc:
        print(f"x0tta lab: cannot run the lab on this machine: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(table(doc["summary"]))
        print(f"\nreport in {out / 'chaos.json'}")
    s = doc["summary"]
    return 0 if not s["incomplete"] and not any(doc["errors"].values()) else 1


def compare(args: argparse.Namespace) -> int:
    from x0tta.lab.core.timeline import compare as side_by_side

    docs = []
    for d in (args.agents, args.alone):
        path = Path(d) / "timeline.json"
        if not path.exists():
            print(f"x0tta lab compare: no timeline.json in {d}", file=sys.stderr)
            return 1
        docs.append(json.loads(path.read_text()))
    print(side_by_side(docs[0], docs[1]))
    return 0


def validate(args: argparse.Namespace) -> int:
    from x0tta.lab.runner import agent_configs, load_topology

    for path in args.topology:
        topo = load_topology(path)
        if topo.agents:
            agent_configs(topo)  # every node's merged agent config must load
        print(f"{path}: ok ({len(topo.nodes)} nodes, {len(topo.links)} links, {len(topo.steps)} steps)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m x0tta.cli.lab run ...``: the same as ``x0tta lab run ...``."""
    p = argparse.ArgumentParser(prog="x0tta")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    from x0tta.common.errors import X0ttaError

    try:
        return int(args.func(args))
    except X0ttaError as exc:
        print(f"x0tta lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
