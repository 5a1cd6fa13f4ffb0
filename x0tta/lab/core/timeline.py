"""What a lab run measured, computed from raw samples: outages, restore times, convergence, routes.

Times are seconds on the run's timeline (``t`` = 0 when the in-guest engine started; one monotonic
clock for every process in the guest, so the pinger's samples and the engine's events line up).

**Ping samples.** The pinger sends an ICMP echo every ``interval`` and records, per sequence number,
when it was sent and when its reply came back (or that none came). From those:

* an *outage* is a maximal run of consecutive unanswered echoes; it lasts from the sending of its
  first lost echo to the sending of the first answered one after it (the traffic that would have
  been delivered in between was not). Its resolution is the ping interval.
* the *time to restore* after an event at ``t`` is the delay from ``t`` to the sending of the first
  answered echo, after the first echo lost since ``t``, from which on every echo for ``settle_s`` was
  answered: a route that works for one packet and then flaps again has not restored the traffic.
  0 when no echo after ``t`` was lost.

**Convergence.** A node sees another when its batman-adv originator table (``batctl oj``) has a best
entry whose originator address is one of that node's MACs. The lab is converged when every node sees
every node it can reach through links that carry traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Events after which the summary reports how long traffic took to come back.
FAULT_EVENTS = ("link_down", "silent_loss", "degrade", "kill_node", "kill_agent")
DEFAULT_SETTLE_S = 1.0


@dataclass(frozen=True)
class PingSample:
    seq: int
    sent: float
    received: float | None  # None: no reply

    @property
    def lost(self) -> bool:
        return self.received is None

    @property
    def rtt_ms(self) -> float | None:
        return None if self.received is None else (self.received - self.sent) * 1000.0


@dataclass(frozen=True)
class Outage:
    start: float  # sending of the first lost echo
    end: float  # sending of the first answered echo after the run (or of the last lost one)
    lost: int
    recovered: bool  # False: the ping stopped before traffic came back

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 6), "end": round(self.end, 6), "duration": round(self.duration, 6),
                "lost": self.lost, "recovered": self.recovered}


def samples_from_rows(rows: Iterable[Sequence[Any]]) -> list[PingSample]:
    """Samples from ``[seq, sent, received|None]`` rows (the form kept in ``timeline.json``)."""
    out = [PingSample(int(r[0]), float(r[1]), None if r[2] is None else float(r[2])) for r in rows]
    out.sort(key=lambda s: s.seq)
    return out


def outages(samples: Sequence[PingSample]) -> list[Outage]:
    out: list[Outage] = []
    run: list[PingSample] = []
    for s in samples:
        if s.lost:
            run.append(s)
            continue
        if run:
            out.append(Outage(run[0].sent, s.sent, len(run), True))
            run = []
    if run:
        out.append(Outage(run[0].sent, run[-1].sent, len(run), False))
    return out


def time_to_restore(samples: Sequence[PingSample], t: float, settle_s: float = DEFAULT_SETTLE_S,
                    until: float | None = None) -> float | None:
    """Seconds from ``t`` until traffic flowed again for good (see the module doc); None if never
    within the samples (including when the samples end before ``settle_s`` of good traffic).
    A loss that begins at or after ``until`` (the next fault, say) is not this event's: 0.0."""
    after = [s for s in samples if s.sent >= t]
    first_lost = next((i for i, s in enumerate(after) if s.lost), None)
    if first_lost is None or (until is not None and after[first_lost].sent >= until):
        return 0.0 if after else None
    for i in range(first_lost + 1, len(after)):
        s = after[i]
        if s.lost:
            continue
        window_end = s.sent + settle_s
        if after[-1].sent < window_end:
            return None  # the samples end before this one could be said to hold
        if not any(later.lost for later in after[i:] if later.sent <= window_end):
            return s.sent - t
    return None


def loss_between(samples: Sequence[PingSample], t0: float, t1: float) -> tuple[int, int]:
    """(sent, lost) among echoes sent in [t0, t1)."""
    window = [s for s in samples if t0 <= s.sent < t1]
    return len(window), sum(1 for s in window if s.lost)


def best_routes(originators: Iterable[Mapping[str, Any]], mac_owner: Mapping[str, str],
                orig_owner: Mapping[str, str] | None = None) -> dict[str, str]:
    """``batctl oj`` entries -> {destination node: next-hop node}, best entries only.

    ``orig_owner`` maps each node's originator address (its primary interface's MAC) to the node;
    only those entries count. BATMAN_IV also lists a neighbour's other interfaces as originators of
    their own (one hop, through that interface), and such an entry can stay "best" long after the
    link died: counting it would report a dead route. Without ``orig_owner``, any lab MAC counts.
    Entries of unknown addresses are ignored; a next hop that is not a lab MAC is the raw MAC."""
    owners = mac_owner if orig_owner is None else orig_owner
    out: dict[str, str] = {}
    for entry in originators:
        if not entry.get("best"):
            continue
        dest = owners.get(str(entry.get("orig_address", "")).lower())
        if dest is None:
            continue
        hop = str(entry.get("neigh_address", "")).lower()
        out[dest] = mac_owner.get(hop, hop)
    return out


def reachable(nodes: Iterable[str], links: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """For every node, the other nodes reachable through ``links`` (the ones carrying traffic)."""
    adj: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in links:
        if a in adj and b in adj:
            adj[a].add(b)
            adj[b].add(a)
    out: dict[str, set[str]] = {}
    for start in adj:
        seen = {start}
        todo = [start]
        while todo:
            for nxt in adj[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        out[start] = seen - {start}
    return out


def missing_views(views: Mapping[str, Mapping[str, str]], expected: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """{node: the expected originators it does not see yet}; empty when converged."""
    out = {}
    for node, want in expected.items():
        missing = sorted(want - set(views.get(node, {})))
        if missing:
            out[node] = missing
    return out


def summarize(timeline: Mapping[str, Any]) -> str:
    """A human summary of a ``timeline.json`` document: events, pings, outages, restore times."""
    lines = [
        f"lab {timeline.get('topology', '?')}: {len(timeline.get('nodes', []))} nodes, "
        f"{timeline.get('routing_algo', '?')}, agents {'on' if timeline.get('agents') else 'off'}, "
        f"{'ok' if timeline.get('ok') else 'FAILED'}"
    ]
    boot = timeline.get("boot", {})
    if boot:
        lines.append("boot: " + ", ".join(f"{k} {v:.2f} s" for k, v in boot.items() if isinstance(v, (int, float))))
    lines.append("")
    lines.append("     t (s)  event")
    events = timeline.get("events", [])
    for ev in events:
        detail = ", ".join(f"{k}={v}" for k, v in ev.items() if k not in ("t", "kind", "label", "ok", "result"))
        mark = "" if ev.get("ok", True) else "  FAILED"
        lines.append(f"{ev['t']:10.3f}  {ev['kind']:<14} {detail}{mark}")
    pings = timeline.get("measurements", {}).get("pings", {})
    for name, ping in pings.items():
        samples = samples_from_rows(ping.get("samples", []))
        lost = sum(1 for s in samples if s.lost)
        lines.append("")
        lines.append(f"ping {name} every {ping.get('interval_ms', '?')} ms: {len(samples)} sent, {lost} lost")
        for o in outages(samples):
            state = "" if o.recovered else " (not recovered when the ping stopped)"
            lines.append(f"  outage at {o.start:.3f} s: {o.duration:.3f} s, {o.lost} lost{state}")
        faults = [ev for ev in events if ev["kind"] in FAULT_EVENTS]
        for i, ev in enumerate(faults):
            if not samples or not samples[0].sent <= ev["t"] <= samples[-1].sent:
                continue
            until = faults[i + 1]["t"] if i + 1 < len(faults) else None
            ttr = time_to_restore(samples, ev["t"], until=until)
            what = "no loss" if ttr == 0.0 else ("not restored" if ttr is None else f"restored in {ttr:.3f} s")
            lines.append(f"  after {ev['kind']} {ev.get('link') or ev.get('node') or ''} at {ev['t']:.3f} s: "
                         f"traffic {what}")
    failed = [e for e in timeline.get("errors", [])]
    if failed:
        lines.append("")
        lines.extend(f"error: {e}" for e in failed)
    return "\n".join(lines)


def fault_figures(timeline: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per ping and fault event: the time traffic took to come back and every outage of the ping,
    for comparing two runs of one scenario (``x0tta lab compare``)."""
    events = timeline.get("events", [])
    faults = [ev for ev in events if ev["kind"] in FAULT_EVENTS]
    out = []
    for name, ping in timeline.get("measurements", {}).get("pings", {}).items():
        samples = samples_from_rows(ping.get("samples", []))
        for i, ev in enumerate(faults):
            if not samples or not samples[0].sent <= ev["t"] <= samples[-1].sent:
                continue
            until = faults[i + 1]["t"] if i + 1 < len(faults) else None
            out.append({"ping": name, "fault": ev.get("label") or ev["kind"], "kind": ev["kind"],
                        "target": ev.get("link") or ev.get("node") or "",
                        "restored_s": time_to_restore(samples, ev["t"], until=until)})
        out.append({"ping": name, "fault": None, "outages": [o.to_json() for o in outages(samples)]})
    return out


def _durations(outs: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(f"{o['duration']:.2f} s" for o in outs) or "none"


def compare(with_agents: Mapping[str, Any], alone: Mapping[str, Any]) -> str:
    """Two runs of one scenario side by side: after each fault, traffic back with agents and alone;
    then every outage of each ping in both runs."""
    a, b = fault_figures(with_agents), fault_figures(alone)

    def show(v: float | None) -> str:
        return "not restored" if v is None else ("no loss" if v == 0.0 else f"{v:.2f} s")

    alone_by = {(r["ping"], r["fault"]): r for r in b}
    lines = []
    for r in a:
        other = alone_by.get((r["ping"], r["fault"]))
        if r["fault"] is None:
            mine, theirs = r["outages"], (other or {}).get("outages", [])
            lines.append(f"ping {r['ping']}: {len(mine)} outages with agents ({_durations(mine)}), "
                         f"{len(theirs)} alone ({_durations(theirs)})")
            continue
        lines.append(f"{r['kind']} {r['target']}: traffic back after {show(r['restored_s'])} with agents, "
                     f"{show(other['restored_s']) if other else '?'} with batman-adv alone")
    return "\n".join(lines)
