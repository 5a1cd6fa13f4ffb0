"""Seeded chaos for the lab: a schedule of random faults, the steps that run it, and the harm report (sans-IO).

Why: "never make the mesh worse than batman-adv alone" is a claim about every fault, not about the
scripted ones a test was tuned on. A chaos run draws faults at random from a seed, runs the same
schedule twice - with an agent on every node, and with batman-adv alone - and compares, fault by
fault:

* the **outage** of a ping across the fault (from one end of the faulted link to the other; for a
  node fault, between two of its neighbours), with agents and alone;
* **outages only the agents' run has**: an outage of at least ``MIN_OUTAGE_S`` on the fault's ping
  or on its **witness** ping (two nodes away from the fault) that overlaps no outage of the same
  ping in the run alone, both placed relative to the fault's start (``OVERLAP_SLACK_S`` of slack).
  Under partial loss the fault's own ping has short outages at random in both runs: there only the
  totals are compared (and the witness one by one);
* **outages longer with agents**: a fault whose outage with agents (the fault's ping, in total)
  is more than ``LONGER_SLACK_S`` longer than alone's - the overlapping outage the count above
  cannot see, when an agent's action held traffic on a dead path, or took a live one away, beyond
  what batman-adv alone lost (not for partial loss, whose totals are random in both runs);
* **actions on links that had no fault**: every steer-off an agent applied while the fault was in
  force or settling, on a link other than the faulted ones (for a killed agent, none is faulted:
  its links work, only its probes stop).

Fault kinds (:data:`KINDS`): ``link_down`` (carrier lost on both ends), ``silent_both`` (100 %
loss both ways, carrier up), ``silent_one`` (100 % loss one way), ``partial_loss`` (30-60 % both
ways), ``delay`` (100-300 ms more each way), ``agent_kill`` (SIGKILL, started again at the
restore), ``node_kill`` (the agent killed and every link of the node down; back at the restore).

Each fault starts from the same state in both runs: for a fault on a link (and an agent killed
beside one), first wait up to ``READY_TIMEOUT_S`` until the ping's source routes to its
destination over that link again (for a node killed: through that node - between two of its
neighbours a grid has paths of equal length, and a kill that hits one run's route and not the
other's is not the agents' doing) - after a loss, batman-adv alone can keep routing around a link
for a while after its restore, and a fault that then hits one run on the direct path and the other
beside it compares two different things. Whether that state was reached is in the report
(``ready``). Then: start its pings, ``PING_LEAD_S`` later the fault, ``hold_s`` in force, the
restore, ``settle_s`` to settle, stop the pings. This module only makes and reads data; ``x0tta.lab.chaos``
boots the two labs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from x0tta.lab.core.timeline import Outage, outages, samples_from_rows
from x0tta.lab.core.topology import Topology

KINDS = ("link_down", "silent_both", "silent_one", "partial_loss", "delay", "agent_kill", "node_kill")
LINK_KINDS = ("link_down", "silent_both", "silent_one", "partial_loss", "delay")
PING_LEAD_S = 2.0
READY_TIMEOUT_S = 45.0  # the route back over a restored link; batman-adv alone can take ~30 s after loss
MIN_OUTAGE_S = 0.1  # shorter gaps (one or two lost echoes at 20 ms) happen in any run
OVERLAP_SLACK_S = 0.5
# an outage longer with agents by more than this is harm: below it, one OGM interval's timing
# (1 s) decides which run reroutes first, as it does between two runs of batman-adv alone
LONGER_SLACK_S = 1.0
RANDOM_LOSS = ("partial_loss",)  # its ping's own outages are not compared one by one


class Rng(Protocol):
    """What the schedule needs of a random generator (``random.Random(seed)`` has it)."""

    def choice(self, seq: Sequence[Any]) -> Any: ...
    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    link: str | None  # "a-b" for a link fault
    node: str | None  # the node of agent_kill / node_kill
    src: str | None  # silent_one: the end whose egress drops
    loss_pct: float | None
    delay_ms: float | None
    ping: tuple[str, str]
    witness: tuple[str, str] | None
    faulted_links: tuple[str, ...]  # links where an action is expected (the fault's own)

    @property
    def name(self) -> str:
        return f"f{self.index}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def schedule(topo: Topology, faults: int, rng: Rng, kinds: Sequence[str] = KINDS) -> list[Fault]:
    """``faults`` faults drawn with ``rng`` (seed it for a schedule that runs again the same)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; kinds: {', '.join(KINDS)}")
    links = list(topo.links)
    inner = [n.name for n in topo.nodes if len(topo.neighbours(n.name)) >= 2]
    out = []
    for i in range(faults):
        kind = rng.choice(list(kinds))
        if kind == "node_kill" and not inner:
            kind = "link_down"
        link = node = src = None
        loss = delay = None
        if kind in LINK_KINDS or kind == "agent_kill":
            chosen = rng.choice(links)
            a, b = chosen.ends()
            ping = (a, b)
            if kind == "agent_kill":
                node = rng.choice([a, b])
                faulted: tuple[str, ...] = ()
            else:
                link = chosen.name
                faulted = (chosen.name,)
        else:
            node = rng.choice(inner)
            nbrs = list(topo.neighbours(node))
            x = rng.choice(nbrs)
            y = rng.choice([n for n in nbrs if n != x])
            ping = (x, y)
            faulted = tuple(ln.name for ln in topo.links_of(node))
        if kind == "silent_one":
            src = rng.choice(list(ping))
        if kind == "partial_loss":
            loss = round(rng.uniform(30.0, 60.0))
        if kind == "delay":
            delay = round(rng.uniform(100.0, 300.0))
        away = [n.name for n in topo.nodes if n.name not in (*ping, node)]
        witness = None
        if len(away) >= 2:
            w1 = rng.choice(away)
            witness = (w1, rng.choice([n for n in away if n != w1]))
        out.append(Fault(i, kind, link, node, src, loss, delay, ping, witness, faulted))
    return out


def steps(faults: Sequence[Fault], *, agents: bool, hold_s: float, settle_s: float,
          load: Mapping[str, Any] | None = None, collect: str | None = None,
          ready: str | None = None) -> list[dict[str, Any]]:
    """The lab scenario of a schedule. Without ``agents`` an agent fault is a pause of the same
    length (the run alone has no agent to kill). ``load``: the keys of a ``load`` step, on for the
    whole run. ``collect``: a check (``module:function``) run on every node at the end. ``ready``:
    a check run on every node after convergence, before the first fault (the agents' sessions
    keying their probes, where the nodes have identities: a mesh in service has had them long)."""
    out: list[dict[str, Any]] = [{"do": "converge", "label": "converged", "timeout_s": 120}]
    if ready is not None:
        out.append({"do": "check", "label": "ready", "call": ready, "each_node": True})
    if load is not None:
        out.append({"do": "load", "label": "load", **load})
        out.append({"do": "sleep", "label": "load-on", "seconds": 3})
    for f in faults:
        p = f.name
        if f.kind in LINK_KINDS or f.kind == "agent_kill":
            out.append({"do": "wait_route", "label": f"{p}-ready", "from": f.ping[0], "to": f.ping[1],
                        "via": f.ping[1], "timeout_s": READY_TIMEOUT_S})
        elif f.kind == "node_kill":  # the ping between two of its neighbours crosses the node itself
            out.append({"do": "wait_route", "label": f"{p}-ready", "from": f.ping[0], "to": f.ping[1],
                        "via": f.node, "timeout_s": READY_TIMEOUT_S})
        out.append({"do": "ping", "label": f"{p}-ping", "from": f.ping[0], "to": f.ping[1], "name": p})
        if f.witness is not None:
            out.append({"do": "ping", "label": f"{p}-witness", "from": f.witness[0], "to": f.witness[1],
                        "name": f"{p}w"})
        fault: dict[str, Any] = {"label": f"{p}-fault", "after_s": PING_LEAD_S}
        restore: dict[str, Any] = {"label": f"{p}-restore", "after_s": hold_s}
        if f.kind == "link_down":
            fault |= {"do": "link_down", "link": f.link}
            restore |= {"do": "restore", "link": f.link}
        elif f.kind in ("silent_both", "silent_one", "partial_loss"):
            fault |= {"do": "silent_loss", "link": f.link, "loss_pct": f.loss_pct or 100.0}
            if f.src:
                fault["from"] = f.src
            restore |= {"do": "restore", "link": f.link}
        elif f.kind == "delay":
            fault |= {"do": "degrade", "link": f.link, "delay_ms": f.delay_ms}
            restore |= {"do": "restore", "link": f.link}
        elif f.kind == "agent_kill":
            if agents:
                fault |= {"do": "kill_agent", "node": f.node, "signal": "KILL"}
                restore |= {"do": "start_agent", "node": f.node}
            else:
                fault |= {"do": "sleep", "seconds": 0}
                restore |= {"do": "sleep", "seconds": 0}
        else:  # node_kill
            fault |= {"do": "kill_node", "node": f.node}
            restore |= {"do": "restore", "node": f.node}
        out += [fault, restore]
        out.append({"do": "ping_stop", "label": f"{p}-stop", "name": p, "after_s": settle_s})
        if f.witness is not None:
            out.append({"do": "ping_stop", "label": f"{p}-wstop", "name": f"{p}w"})
    if load is not None:
        out.append({"do": "load_stop", "label": "load-off"})
    if collect is not None:
        out.append({"do": "check", "label": "actions", "call": collect, "each_node": True})
    return out


@dataclass(frozen=True)
class Run:
    """What a report needs of one lab run: its timeline (``events``, ``measurements.pings``,
    ``t0_wall``), and for the agents' run every steer-off as ``(node, hardif, applied wall time)``."""

    timeline: Mapping[str, Any]
    steer_offs: tuple[tuple[str, str, float], ...] = ()

    def event(self, label: str) -> Mapping[str, Any] | None:
        for e in self.timeline.get("events", ()):
            if e.get("label") == label:
                return e
        return None

    def event_t(self, label: str) -> float | None:
        e = self.event(label)
        return None if e is None else float(e["t"])

    def ready(self, fault: Fault) -> bool | None:
        """Whether the fault's ping routed over its link before the fault (None: not waited for)."""
        e = self.event(f"{fault.name}-ready")
        return None if e is None else bool(e.get("ok", True))

    def ping_outages(self, name: str) -> list[Outage] | None:
        ping = self.timeline.get("measurements", {}).get("pings", {}).get(name)
        if ping is None:
            return None
        return [o for o in outages(samples_from_rows(ping["samples"])) if o.duration >= MIN_OUTAGE_S]


def _total(outs: Iterable[Outage]) -> float:
    return round(sum(o.duration for o in outs), 3)


def _only_mine(mine: list[Outage], t_mine: float, theirs: list[Outage], t_theirs: float) -> list[dict[str, Any]]:
    """Outages of ``mine`` (relative to its fault at ``t_mine``) that overlap none of ``theirs``."""
    spans = [(o.start - t_theirs - OVERLAP_SLACK_S, o.end - t_theirs + OVERLAP_SLACK_S) for o in theirs]
    out = []
    for o in mine:
        a, b = o.start - t_mine, o.end - t_mine
        if not any(a < hi and b > lo for lo, hi in spans):
            out.append({"from_fault_s": round(a, 3), "duration_s": round(o.duration, 3)})
    return out


def link_of(topo: Topology, node: str, hardif: str) -> str | None:
    """The link whose end ``hardif`` is on ``node`` (``to-<peer>``)."""
    for ln in topo.links_of(node):
        if ln.ifname(node) == hardif:
            return ln.name
    return None


def report(topo: Topology, faults: Sequence[Fault], agents: Run, alone: Run) -> dict[str, Any]:
    """Per fault and per kind: outages with agents and alone, and the harm (see the module doc)."""
    t0 = float(agents.timeline.get("t0_wall") or 0.0)
    rows = []
    for i, f in enumerate(faults):
        ta, tb = agents.event_t(f"{f.name}-fault"), alone.event_t(f"{f.name}-fault")
        row: dict[str, Any] = {"fault": f.to_json(), "complete": ta is not None and tb is not None,
                               "ready": {"agents": agents.ready(f), "alone": alone.ready(f)}}
        if ta is None or tb is None:
            rows.append(row)
            continue
        only: list[dict[str, Any]] = []
        for ping in (f.name, f"{f.name}w"):
            mine, theirs = agents.ping_outages(ping), alone.ping_outages(ping)
            if mine is None or theirs is None:
                continue
            if ping == f.name:
                row["outage_agents_s"], row["outage_alone_s"] = _total(mine), _total(theirs)
            else:
                row["witness_outage_agents_s"], row["witness_outage_alone_s"] = _total(mine), _total(theirs)
            if ping == f.name and f.kind in RANDOM_LOSS:
                continue  # random loss makes short outages at random in both runs: compare the totals
            only += [{"ping": ping, **o} for o in _only_mine(mine, ta, theirs, tb)]
        row["agent_only_outages"] = only
        if f.kind not in RANDOM_LOSS and "outage_agents_s" in row:
            extra = round(row["outage_agents_s"] - row["outage_alone_s"], 3)
            row["longer_with_agents_s"] = extra if extra > LONGER_SLACK_S else None
        # this fault's window: from its fault step to the next fault's (or the end)
        nxt = agents.event_t(f"{faults[i + 1].name}-fault") if i + 1 < len(faults) else None
        end = nxt if nxt is not None else float("inf")
        prev = set(faults[i - 1].faulted_links) if i > 0 else set()
        allowed = set(f.faulted_links) | prev  # the previous fault's links may still be settling
        wrong = []
        for node, hardif, at in agents.steer_offs:
            t = at - t0
            if not ta <= t < end:
                continue
            link = link_of(topo, node, hardif)
            if link not in allowed:
                wrong.append({"node": node, "hardif": hardif, "link": link, "from_fault_s": round(t - ta, 3)})
        row["actions_on_healthy_links"] = wrong
        rows.append(row)
    return {"faults": rows, "summary": summary(rows)}


def is_harm(row: Mapping[str, Any]) -> bool:
    """Whether a fault's row (:func:`report`) shows harm: an outage only with agents, one over
    ``LONGER_SLACK_S`` longer than alone's, or an action on a link without a fault."""
    return bool(row.get("agent_only_outages") or row.get("longer_with_agents_s")
                or row.get("actions_on_healthy_links"))


def _p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile (the largest value of a small sample)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    kinds: dict[str, dict[str, list[float]]] = {}
    harm_outages = harm_actions = incomplete = unready = longer = 0
    for r in rows:
        if False in (r.get("ready") or {}).values():
            unready += 1
        if not r.get("complete"):
            incomplete += 1
            continue
        k = kinds.setdefault(r["fault"]["kind"], {"agents": [], "alone": []})
        k["agents"].append(float(r.get("outage_agents_s", 0.0)))
        k["alone"].append(float(r.get("outage_alone_s", 0.0)))
        harm_outages += len(r.get("agent_only_outages", ()))
        harm_actions += len(r.get("actions_on_healthy_links", ()))
        longer += r.get("longer_with_agents_s") is not None
    per_kind = {
        kind: {
            "faults": len(v["agents"]),
            "median_agents_s": round(statistics.median(v["agents"]), 3),
            "p95_agents_s": round(_p95(v["agents"]), 3),
            "median_alone_s": round(statistics.median(v["alone"]), 3),
            "p95_alone_s": round(_p95(v["alone"]), 3),
        }
        for kind, v in sorted(kinds.items())
    }
    return {"faults": len(rows), "incomplete": incomplete, "agent_only_outages": harm_outages,
            "actions_on_healthy_links": harm_actions, "longer_with_agents": longer,
            "not_from_direct_route": unready, "per_kind": per_kind}


INFO_SEVERITY = 4  # a threat record's alert.severity: 1 high, 2 medium, 3 low, 4 informational


def threat_counts(lines: Iterable[str]) -> dict[str, int]:
    """The guard's threat records of above informational severity in agents' JSON log ``lines``,
    counted per detector (``{"unadmitted_frames": 28}``). Every node of a chaos run is honest, so
    each of them is a false positive; a line that is not such a record (or not JSON) is skipped."""
    counts: dict[str, int] = {}
    for line in lines:
        if '"guard_threat"' not in line:
            continue
        try:
            threat = json.loads(line)["threat"]
            severity = int(threat["alert"]["severity"])
            detector = str(threat["batman"]["detector"])
        except (ValueError, KeyError, TypeError):
            continue
        if severity < INFO_SEVERITY:
            counts[detector] = counts.get(detector, 0) + 1
    return dict(sorted(counts.items()))


def table(summary_: Mapping[str, Any]) -> str:
    """The summary as a markdown table."""
    lines = ["| fault kind | faults | median with agents | p95 with agents | median alone | p95 alone |",
             "|---|---|---|---|---|---|"]
    for kind, v in summary_["per_kind"].items():
        lines.append(f"| {kind} | {v['faults']} | {v['median_agents_s']:.2f} s | {v['p95_agents_s']:.2f} s "
                     f"| {v['median_alone_s']:.2f} s | {v['p95_alone_s']:.2f} s |")
    lines.append("")
    lines.append(f"outages only with agents: {summary_['agent_only_outages']}; outages over "
                 f"{LONGER_SLACK_S:g} s longer with agents: {summary_.get('longer_with_agents', 0)}; "
                 f"actions on links without a fault: "
                 f"{summary_['actions_on_healthy_links']}; faults not completed: {summary_['incomplete']}; "
                 f"faults started off their link's route: {summary_.get('not_from_direct_route', 0)}")
    if "quarantines" in summary_:
        lines.append(f"honest nodes quarantined: {summary_['quarantines']}")
    if "threats" in summary_:
        named = ", ".join(f"{k} {v}" for k, v in summary_["threats"].items())
        lines.append(f"threat records above informational: {sum(summary_['threats'].values())}"
                     + (f" ({named})" if named else ""))
    return "\n".join(lines)
