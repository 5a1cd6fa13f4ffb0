"""The attack suite in the UML lab: detection rate and time to detection per attack kind
(docs/benchmarks.md, section "guard: attack suite").

    sudo .venv/bin/python tests/bench/bench_attacks.py [--seeds 10] [--first-seed 1]
        [--kinds rogue_node,originator_flood,...] [--mode enforce|observe] [--out DIR] [--json FILE]

Its pure parts are unit-tested (tests/unit/lab/test_lab_attacks.py) and its frames proven on the
host kernel against the guard's eBPF program and detectors (tests/integration/test_attacks_kernel.py,
tests/integration/peer/test_attack_burst.py); its lab figures are in docs/benchmarks.md.

One boot of the 5-node BATMAN_IV ring (configs/lab/ring.toml) per seed, every node with an
identity (the lab's own CA), so the agents hold PQ mTLS sessions with their neighbours and admit
them. With ``--mode enforce`` (the default) the agents run the guard's default ``auto`` mode and
the suite waits until every node enforces. The attacker is n2, a compromised node: from its end of
the link n2-n3 it sends, one kind after the other, the seeded frames of x0tta/lab/core/attacks.py
(tests/lab/attack_checks.py): a rogue MAC announcing itself, OGMs of n5 with TQ 255, a flood of
200 made-up originators, OGMs of n5 with its seqno jumped ahead, a made-up gateway of 40 Gbit/s, and
30 refused handshakes against n3's peer port. Before each kind every quarantine is released and
the sessions are let come back, so each kind is measured on its own.

Detection: the first ``guard_threat`` record in any agent's log, at or after the attack's first
frame and before the next attack started, whose detector is the kind's and which names what the
attack is about (x0tta.lab.core.attacks.run_outcomes); its time on the run's timeline minus the
first frame's is the time to detection. Also counted: the runs where a quarantine of the attacker
followed (``guard_quarantined``), and every other threat record of severity medium or high
during the attacks (collateral: records about honest nodes, e.g. a flood's second hop naming the
honest forwarder). Prints a Markdown table per kind and, with ``--json``, every outcome.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from x0tta.lab.core import attacks as atk  # noqa: E402
from x0tta.lab.runner import LabResult, load_topology, run_lab  # noqa: E402

RING = ROOT / "configs" / "lab" / "ring.toml"
CHECKS = ROOT / "tests" / "lab" / "attack_checks.py"
NODES = ["n1", "n2", "n3", "n4", "n5"]
ATTACKER, VICTIM, TARGET = "n2", "n3", "n5"
SETTLE_S = {"rogue_node": 15.0}  # after the attack's check returned (the rogue's 45 s run is in the check)
DEFAULT_SETTLE_S = 25.0  # a guard look every 2 s, the heal loop's answer after it
GOAL_S = 5.0


def check(label: str, fn: str, nodes: list[str], **args: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"do": "check", "label": label, "call": f"{CHECKS}:{fn}", "each_node": True,
                            "nodes": nodes}
    return {**step, "args": args} if args else step


def scenario(seed: int, kinds: list[str], enforce: bool) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [
        {"do": "converge", "timeout_s": 120},
        check("bound", "neighbours_bound", NODES, timeout=120.0),
    ]
    if enforce:
        steps.append(check("enforcing", "guard_mode", NODES, want="enforce", timeout=180.0))
    for kind in kinds:
        steps += [
            check(f"release-{kind}", "release_all", NODES),
            check(f"bound-{kind}", "neighbours_bound", [ATTACKER, VICTIM], timeout=90.0),
            check(kind, "attack", [ATTACKER], kind=kind, victim=VICTIM, seed=seed, target=TARGET),
            {"do": "sleep", "seconds": SETTLE_S.get(kind, DEFAULT_SETTLE_S)},
        ]
    return steps


def timeout_s(kinds: list[str], enforce: bool) -> float:
    """The guest's limit: the lab's own estimate counts a check step as instant, and these run for
    minutes (the waits for sessions and enforcement, the rogue's 45 s, hearing an honest OGM)."""
    return 300.0 + (240.0 if enforce else 0.0) + 150.0 * len(kinds)


def overrides(enforce: bool) -> dict[str, Any]:
    return {"agent": {"guard": {"mode": "auto" if enforce else "observe"}}}


def attacks_of(result: LabResult, kinds: list[str]) -> list[dict[str, Any]]:
    """Each kind's check result, in the order they ran (``error`` when the check failed)."""
    out = []
    for kind in kinds:
        try:
            c = result.check(kind)["per_node"][ATTACKER]
        except KeyError:
            out.append({"kind": kind, "error": "the attack's step never ran"})
            continue
        out.append(c["result"] if c.get("ok") else {"kind": kind, "error": c.get("error", "failed")})
    return out


def threat_records(result: LabResult) -> list[tuple[str, float, dict[str, Any]]]:
    return [(node, e["t"], e["threat"]) for node in NODES for e in result.agent_events(node, "guard_threat")
            if isinstance(e.get("threat"), dict) and "t" in e]


def quarantines(result: LabResult) -> list[tuple[str, float, str]]:
    return [(node, e["t"], str(e.get("mac"))) for node in NODES for e in result.agent_events(node, "guard_quarantined")
            if "t" in e]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="runs, one boot each (default 10)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--kinds", default=",".join(atk.KINDS), help="comma-separated, of " + ", ".join(atk.KINDS))
    p.add_argument("--mode", choices=("enforce", "observe"), default="enforce")
    p.add_argument("--out", help="keep each run's lab results under this directory")
    p.add_argument("--json", help="write every outcome and the collateral records to this file")
    p.add_argument("--rescore", action="store_true",
                   help="boot nothing: score the runs already under --out (seed-N directories; a suite "
                        "stopped midway keeps every finished seed there)")
    args = p.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(atk.KINDS))
    if unknown:
        p.error(f"unknown kinds {unknown}")
    enforce = args.mode == "enforce"
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}; "
          f"mode {args.mode}, kinds {kinds}")
    if args.rescore and not args.out:
        p.error("--rescore reads the runs under --out")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="x0tta-attacks-"))
    outcomes: list[atk.Outcome] = []
    report: dict[str, Any] = {"runs": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.monotonic()
        if args.rescore:
            where = root / f"seed-{seed}"
            if not (where / "timeline.json").exists():
                continue
            result = LabResult(where, json.loads((where / "timeline.json").read_text()), load_topology(RING), None)
        else:
            result = run_lab(RING, root / f"seed-{seed}", scenario=scenario(seed, kinds, enforce),
                             overrides=overrides(enforce), identities=True, timeout_s=timeout_s(kinds, enforce))
        attacks = attacks_of(result, kinds)
        records = threat_records(result)
        got = atk.run_outcomes(seed, attacks, result.timeline["t0_wall"], records, quarantines(result))
        outcomes += got
        extra = atk.collateral(records, attacks, result.timeline["t0_wall"])
        report["runs"].append({"seed": seed, "ok": result.ok, "errors": result.errors, "attacks": attacks,
                               "outcomes": [o.__dict__ for o in got], "collateral": extra,
                               "run_s": round(time.monotonic() - t0, 1)})
        line = ", ".join(f"{o.kind} {'-' if o.error else (f'{o.seconds:.1f}s' if o.detected else 'missed')}"
                         for o in got)
        print(f"seed {seed}: {line}; {len(extra)} collateral records ({round(time.monotonic() - t0)} s)", flush=True)
    print(atk.table(atk.summarize(outcomes, GOAL_S), GOAL_S))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
