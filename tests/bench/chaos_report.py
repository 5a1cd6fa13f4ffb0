"""The chaos report of two saved runs: one with agents, one alone, of the same seeded schedule
(docs/benchmarks.md, section "heal: chaos"). ``bench_chaos.py`` runs both halves in one go; this
scores halves that come from different invocations - a run stopped after its agents' half, set
against an earlier run alone of the same schedule, topology and batman-adv.

    .venv/bin/python tests/bench/chaos_report.py TOPOLOGY.toml --faults N --seed S \\
        --agents OUT/agents --alone OTHER_OUT/alone [--json FILE]

Prints the summary and every fault above 1.3 s or with harm.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from x0tta.lab import chaos  # noqa: E402
from x0tta.lab.core.chaos import is_harm  # noqa: E402
from x0tta.lab.runner import load_topology  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("topology")
    p.add_argument("--faults", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--agents", required=True, help="the lab output of the run with agents (its timeline.json)")
    p.add_argument("--alone", required=True, help="the lab output of the run alone")
    p.add_argument("--json", help="write the whole report here")
    a = p.parse_args()
    topo = load_topology(a.topology)
    plan = chaos.schedule(topo, a.faults, random.Random(a.seed), chaos.KINDS)  # seeded: replays the run
    agents = json.loads((Path(a.agents) / "timeline.json").read_text())
    alone = json.loads((Path(a.alone) / "timeline.json").read_text())
    steer_offs, quarantines = chaos.agents_actions(agents)
    doc = chaos.report(topo, plan, chaos.Run(agents, steer_offs), chaos.Run(alone))
    doc["summary"]["quarantines"] = len(quarantines)
    doc["summary"]["threats"] = chaos.agents_threats(Path(a.agents))
    print(json.dumps(doc["summary"], indent=1))
    for x in doc["faults"]:
        f = x["fault"]
        if not x.get("complete"):
            print(f["index"], f["kind"], f.get("link") or f.get("node"), "not completed")
        elif x.get("outage_agents_s", 0.0) > 1.3 or is_harm(x):
            print(f["index"], f["kind"], f.get("link") or f.get("node"), "with agents", x.get("outage_agents_s"),
                  "alone", x.get("outage_alone_s"), x.get("agent_only_outages"),
                  "longer by", x.get("longer_with_agents_s"), x.get("actions_on_healthy_links"))
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
