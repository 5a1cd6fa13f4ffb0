"""Do no harm on random faults: seeded chaos runs, each with agents and with batman-adv alone
(docs/benchmarks.md, section "heal: chaos").

    .venv/bin/python tests/bench/bench_chaos.py [--faults 30] [--seed 1] [--topologies ring,line,grid] [--load both]
        [--identities]

For every topology (configs/lab/ring.toml, line.toml, grid.toml) and load setting (without, with
the lab's default load: a 30 % busy loop and 5 process spawns a second in the guest), one
``x0tta lab chaos`` run: the same schedule of random faults with an agent on every node and with
batman-adv alone, in two boots. Prints, per run, the outage per fault kind (median and p95 with
agents and alone) and the harm: outages only the agents' run has, steer-offs of links without a
fault; and what every node being honest makes a false positive: quarantines and the guard's threat
records above informational (without ``--identities`` no neighbour can be admitted by a handshake:
the guard then records every neighbour's frames as unadmitted, as informational). The figures of batman-adv
alone are the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from x0tta.lab.chaos import run_chaos
from x0tta.lab.core.chaos import LONGER_SLACK_S, is_harm, table
from x0tta.lab.runner import load_topology

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faults", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--topologies", default="ring,line,grid")
    p.add_argument("--load", choices=("no", "yes", "both"), default="both")
    p.add_argument("--out", help="keep every run's results under this directory")
    p.add_argument("--identities", action="store_true",
                   help="every node enrolled (an SVID from the lab's CA): PQ mTLS sessions, keyed probes and "
                        "alerts, the guard admitting neighbours by handshake - honest churn for the detectors")
    args = p.parse_args()
    loads = {"no": (False,), "yes": (True,), "both": (False, True)}[args.load]
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}; "
          f"{args.faults} faults per run, seed {args.seed}{', identities' if args.identities else ''}")
    totals = {"faults": 0, "agent_only_outages": 0, "longer_with_agents": 0, "actions_on_healthy_links": 0,
              "quarantines": 0, "threats": 0}
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-chaos-") as tmp:
        base = Path(args.out or tmp)
        for name in args.topologies.split(","):
            topo = load_topology(ROOT / "configs" / "lab" / f"{name}.toml")
            for load in loads:
                started = time.monotonic()
                doc = run_chaos(topo, base / f"{name}-{'load' if load else 'quiet'}", faults=args.faults,
                                seed=args.seed, load=load, identities=args.identities)
                s = doc["summary"]
                for k in totals:
                    totals[k] += sum(s[k].values()) if isinstance(s.get(k), dict) else s.get(k, 0)
                print(f"\n### {name}, {'with' if load else 'without'} load ({time.monotonic() - started:.0f} s)\n")
                print(table(s))
                harm = [(r["fault"]["index"], r["fault"]["kind"], r["agent_only_outages"],
                         r.get("longer_with_agents_s"), r["actions_on_healthy_links"]) for r in doc["faults"]
                        if is_harm(r)]
                if harm:
                    print("harm:", json.dumps(harm))
                if any(doc["errors"].values()):
                    print("errors:", json.dumps(doc["errors"]))
    print(f"\nall runs: {totals['faults']} faults, {totals['agent_only_outages']} outages only with agents, "
          f"{totals['longer_with_agents']} outages over {LONGER_SLACK_S:g} s longer with agents, "
          f"{totals['actions_on_healthy_links']} actions on links without a fault, "
          f"{totals['quarantines']} honest nodes quarantined, "
          f"{totals['threats']} threat records above informational")


if __name__ == "__main__":
    main()
