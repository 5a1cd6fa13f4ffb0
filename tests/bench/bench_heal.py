"""One MAPE-K cycle (analyze + plan + verify, the pure step) over a large synthetic snapshot.

    .venv/bin/python tests/bench/bench_heal.py [--originators 1000] [--neighbours 100] [--runs 200]

The snapshot: ``--originators`` originators with a best route, ``--neighbours`` neighbours spread
over 4 hard interfaces, one liveness probe stat per neighbour, TQ values that drift a little
every cycle (so the trend detector works) and some route changes (so the flapping detector has
something to count). Measured, each as the median of ``--runs`` cycles in this one process:

* baseline: building the snapshot alone (the Observation and its records from raw tuples), which
  any monitor must do anyway;
* ``step`` in steady state (nothing wrong): every detector, hysteresis, no decision;
* ``step`` with an incident open (one hard interface silently lossy: steer-off decided, verified);
* ``step`` + ``settle`` as the service runs them.

The ratio to the baseline is the figure to compare; the absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

from x0tta.config.heal import HealSettings
from x0tta.heal.core import loop
from x0tta.heal.core.model import HardIf, Neighbour, Observation, Originator, ProbeStats


def mac(i: int, prefix: int = 2) -> str:
    return f"{prefix:02x}:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"


def raw_snapshot(n_orig: int, n_neigh: int, cycle: int, lossy: bool) -> dict:
    ifaces = [f"mesh{k}" for k in range(4)]
    neighbours = [(mac(i, 4), ifaces[i % 4], 200 + (i + cycle) % 40, 100 + (i * 7) % 900) for i in range(n_neigh)]
    origs = []
    for i in range(n_orig):
        n = neighbours[(i + (cycle // 50 if i % 97 == 0 else 0)) % n_neigh]  # some routes move now and then
        origs.append((mac(i), n[0], n[1], 120 + (i + cycle) % 100, 500 + i % 1000))
    probes = []
    for addr, hardif, _, _ in neighbours:
        bad = lossy and hardif == "mesh0"  # every neighbour on one interface: steer it off
        probes.append((hardif, addr, 20, 14 if bad else 20, 0.3 if bad else 0.0, 6 if bad else 0))
    return {"ifaces": ifaces, "neighbours": neighbours, "origs": origs, "probes": probes}


def build(raw: dict, at: float, detached: frozenset[str] = frozenset()) -> Observation:
    return Observation(
        at=at,
        originators=tuple(Originator(o, r, h, tq=tq, last_seen_ms=ls) for o, r, h, tq, ls in raw["origs"]
                          if h not in detached),
        neighbours=tuple(Neighbour(a, h, tq=tq, last_seen_ms=ls) for a, h, tq, ls in raw["neighbours"]
                         if h not in detached),
        hardifs=tuple(HardIf(h, oper_up=True, attached=h not in detached) for h in raw["ifaces"]),
        probes=tuple(ProbeStats(h, p, w, r, loss, run, 0.4, at) for h, p, w, r, loss, run in raw["probes"]),
        orig_interval_ms=1000,
        gw_mode="off",
    )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--originators", type=int, default=1000)
    ap.add_argument("--neighbours", type=int, default=100)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    s = HealSettings()
    raws = [raw_snapshot(args.originators, args.neighbours, c, lossy=False) for c in range(args.runs)]

    t_build, t_steady, t_incident, t_full = [], [], [], []
    k = loop.initial(s, "bench")
    for c, raw in enumerate(raws):  # warm the detectors' memory first
        k, _ = loop.step(k, build(raw, c * 0.1), c * 0.1)
    now = args.runs * 0.1
    for raw in raws:
        t0 = time.perf_counter()
        obs = build(raw, now)
        t1 = time.perf_counter()
        k, decisions = loop.step(k, obs, now)
        t2 = time.perf_counter()
        assert not decisions, decisions
        t_build.append(t1 - t0)
        t_steady.append(t2 - t1)
        now += 0.1
    # an incident: the first neighbour's link silently lossy; steer-off decided, applied, verified
    lossy = [raw_snapshot(args.originators, args.neighbours, c, lossy=True) for c in range(args.runs)]
    decided: list[str] = []
    detached: frozenset[str] = frozenset()
    for raw in lossy:
        obs = build(raw, now, detached)
        t0 = time.perf_counter()
        k, decisions = loop.step(k, obs, now)
        t1 = time.perf_counter()
        k = loop.settle(k, [loop.Result(d.id, "applied") for d in decisions], now)
        t2 = time.perf_counter()
        if decisions:
            decided += [f"{d.op.value} {d.action.kind.value}" for d in decisions]
            detached = frozenset(d.action.param("hardif") for d in decisions if d.action.param("hardif"))
        t_incident.append(t1 - t0)
        t_full.append(t2 - t0)
        now += 0.1
    base = median_ms(t_build)
    print(f"{args.originators} originators, {args.neighbours} neighbours, {args.runs} cycles each; "
          f"decisions in the incident phase: {', '.join(decided)}; {len(k.incidents)} incident(s) open "
          "at the end (one per lossy neighbour, one steer-off for all)\n")
    print("| measure | median per cycle | vs building the snapshot |")
    print("|---|---|---|")
    for name, xs in (
        ("build the Observation (baseline)", t_build),
        ("`step`, steady state (no symptom)", t_steady),
        ("`step`, one incident open (steer-off decided and verified)", t_incident),
        ("`step` + `settle`, incident phase", t_full),
    ):
        m = median_ms(xs)
        print(f"| {name} | {m:.3f} ms | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
