"""Forged probes and alerts, against agents with and without identities (docs/benchmarks.md,
section "heal: forgeries").

    .venv/bin/python tests/bench/bench_forgery.py [--out DIR]

Two boots of the 5-node ring running the scenario of tests/lab/test_forgery_lab.py: an attacker
on the link n2-n3 sends fake-peer, unkeyed, wrongly keyed, forged and replayed probes and fake
alerts, then (after a real link cut) replays and forges the real alerts it captured. First the
agents without identities (probes and alerts unauthenticated, as before a node is enrolled): the
baseline, where the forgeries work. Then with identities (probes and alerts keyed by the PQ mTLS
sessions). Prints, per run, the forged inputs the agents took (tests/lab/test_forgery_lab.py,
``forged_effects``), the incidents and actions of any cause in the forgery windows, and what n3
refused.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from test_forgery_lab import acted_between, delta, forged_effects, per_node, run_forgery_lab


def figures(result) -> dict:
    wa = (result.event("forge")["t"] - 0.5, result.event("after")["t"])
    wb = (result.event("forge_alerts")["t"] - 0.5, result.event("after_alerts")["t"])
    a, b = acted_between(result, *wa), acted_between(result, *wb)
    replayed = tuple((o, q) for o, q in per_node(result, "forge_alerts")["n2"].get("replayed_ids", []))
    fa, fb = forged_effects(result, *wa), forged_effects(result, *wb, replayed)
    before, after = per_node(result, "before"), per_node(result, "after")
    return {
        "sent": per_node(result, "forge")["n2"] | per_node(result, "forge_alerts")["n2"],
        "window_probes": {"forged_taken": sum(len(x) for x in fa.values()),
                          "incidents": sum(1 for acts in a.values() for x in acts if "incident_opened" in x),
                          "actions": sum(1 for acts in a.values() for x in acts if "executed" in x),
                          "what": fa, "any_cause": a},
        "window_alerts": {"effects": sum(len(x) for x in fb.values()), "what": fb, "any_cause": b},
        "n3_probes_refused": delta(before["n3"]["probes_refused"], after["n3"]["probes_refused"]),
        "n3_alerts_refused": delta(before["n3"]["alerts_refused"], after["n3"]["alerts_refused"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="keep both runs' results under this directory")
    args = p.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="x0tta-forgery-"))
    report = {}
    for name, identities in (("without identities", False), ("with identities", True)):
        t0 = time.monotonic()
        result = run_forgery_lab(root / name.replace(" ", "-"), identities=identities)
        report[name] = figures(result)
        report[name]["run_s"] = round(time.monotonic() - t0, 1)
        f = report[name]
        print(f"{name}: probe window: {f['window_probes']['forged_taken']} forged inputs taken, "
              f"{f['window_probes']['incidents']} incidents and {f['window_probes']['actions']} actions of any "
              f"cause; alert window: {f['window_alerts']['effects']} forged or replayed alerts taken; "
              f"n3 refused probes {f['n3_probes_refused']}, alerts "
              f"{f['n3_alerts_refused']} ({f['run_s']} s)")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
