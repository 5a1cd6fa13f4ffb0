"""``x0tta lab chaos``: the same seeded schedule of random faults with agents and with batman-adv
alone, and what the agents changed (see :mod:`x0tta.lab.core.chaos` for what is measured).

    x0tta lab chaos configs/lab/ring.toml --faults 30 --seed 1 [--load] [--out DIR]

Two boots of the lab, one after the other; the report is printed and written to
``OUT/chaos.json`` (each run's own results in ``OUT/agents/`` and ``OUT/alone/``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from x0tta.lab.core.chaos import KINDS, Run, report, schedule, steps, threat_counts
from x0tta.lab.core.topology import Topology

DEFAULT_LOAD = {"cpu_pct": 30.0, "spawn_per_s": 5.0}  # a router's monitoring scripts


def actions(lab: Any, node: str) -> list[list[Any]]:
    """Check run in the guest at the end of the agents' run: every steer-off the node's agent
    applied, as ``[hardif, applied wall time]``, and every quarantine, as ``["quarantine", MAC,
    applied wall time]``, from its knowledge store (restarts included)."""
    out = []
    for row in lab.agent_call(node, "heal.incidents", {"limit": 5000}, timeout=30.0):
        inc = lab.agent_call(node, "heal.incident", {"id": row["id"]}, timeout=30.0)
        for a in inc.get("actions", ()):
            if not a.get("applied"):
                continue
            if a["action"]["kind"] == "steer_off":
                out.append([a["action"]["params"]["hardif"], a["applied"]])
            elif a["action"]["kind"] == "quarantine":
                out.append(["quarantine", a["action"]["params"].get("mac", ""), a["applied"]])
    return out


def keyed(lab: Any, node: str, timeout: float = 90.0) -> float:
    """Check run in the guest before the first fault of an agents' run with identities: seconds
    until ``node``'s heal loop has a probe key from a neighbour's PQ mTLS session on every link.
    Until then its probes are not taken, so a fault would be met by batman-adv's tables alone -
    a figure of the lab's start, not of the agents."""
    want = {link.ifname(node) for link in lab.topology.links_of(node)}
    start = time.monotonic()
    while True:
        try:
            auth = lab.agent_call(node, "heal.state").get("authentication", {})
        except Exception:  # the agent is still starting
            auth = {}
        have = {h for h, n in auth.get("link_keys", {}).items() if n}
        if auth.get("mode") == "sessions" and want <= have:
            return round(time.monotonic() - start, 2)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{node}: probes not keyed on {sorted(want - have)} after {timeout:g} s: {auth}")
        time.sleep(0.5)


def agents_threats(out_dir: Path | None) -> dict[str, int]:
    """:func:`~x0tta.lab.core.chaos.threat_counts` over the agents' logs of a run's results."""
    counts: dict[str, int] = {}
    for log in sorted((out_dir / "agents").glob("*.log")) if out_dir is not None else ():
        with log.open(errors="replace") as f:
            for detector, n in threat_counts(f).items():
                counts[detector] = counts.get(detector, 0) + n
    return counts


def agents_actions(timeline: dict[str, Any]) -> tuple[tuple[tuple[str, str, float], ...], list[list[Any]]]:
    """The steer-offs ``(node, hardif, t)`` and quarantines ``[node, mac, t]`` the agents' run
    collected (its ``actions`` check, :func:`actions`)."""
    check = timeline.get("measurements", {}).get("checks", {}).get("actions", {})
    found = [(node, item) for node, r in check.get("per_node", {}).items() if r.get("ok")
             for item in r["result"]]
    steer_offs = tuple((node, str(i[0]), float(i[1])) for node, i in found if len(i) == 2)
    quarantines = [[node, str(i[1]), float(i[2])] for node, i in found if len(i) == 3]
    return steer_offs, quarantines


def run_chaos(topology: Topology, out_dir: Path, *, faults: int, seed: int, load: bool = False,
              hold_s: float = 5.0, settle_s: float = 6.0, kinds: Sequence[str] = KINDS,
              stream: TextIO | None = None, install: bool = True, identities: bool = False) -> dict[str, Any]:
    """Run the schedule with agents, then alone; return the report (also in ``out_dir/chaos.json``)."""
    from x0tta.lab.runner import run_lab

    plan = schedule(topology, faults, random.Random(seed), kinds)  # noqa: S311 - seeded to replay a run
    extra = {"load": DEFAULT_LOAD if load else None, "hold_s": hold_s, "settle_s": settle_s}
    timelines = {}
    steer_offs: tuple[tuple[str, str, float], ...] = ()
    quarantines: list[list[Any]] = []
    threats: dict[str, int] = {}
    for name, with_agents in (("agents", True), ("alone", False)):
        scenario = steps(plan, agents=with_agents, hold_s=hold_s, settle_s=settle_s, load=extra["load"],
                         collect=f"{__name__}:actions" if with_agents else None,
                         ready=f"{__name__}:keyed" if with_agents and identities else None)
        result = run_lab(topology, out_dir / name, scenario=scenario, agents=with_agents, stream=stream,
                         install=install, identities=identities)
        timelines[name] = result.timeline
        if with_agents:
            steer_offs, quarantines = agents_actions(result.timeline)
            threats = agents_threats(getattr(result, "out_dir", None))
    doc = report(topology, plan, Run(timelines["agents"], steer_offs), Run(timelines["alone"]))
    # every node of a chaos run is honest: a quarantine is harm too (reported; the CI test asserts
    # the two zeros of the summary, and this third count is read from the report)
    doc["quarantines"] = quarantines
    doc["summary"]["quarantines"] = len(quarantines)
    doc["summary"]["threats"] = threats  # so is a threat record above informational
    doc = {"topology": topology.name, "seed": seed, "load": load, "identities": identities, **extra, "errors": {
        name: tl.get("errors", []) for name, tl in timelines.items()}, **doc}
    (out_dir / "chaos.json").write_text(json.dumps(doc, indent=1))
    return doc
