"""The replicated mesh state: update size and merge time for a 100-node registry, with baselines.

    .venv/bin/python tests/bench/bench_crdt.py [--nodes 100] [--rounds 50] [--kind mldsa65|p256]

``--nodes`` replicas (built-in-CA SVIDs of ``--kind``, ML-DSA-65 by default) each write their
registry entry; a hub replica takes all of them through a sync. Then, for ``--rounds`` rounds, one
node changes its MACs and the hub merges that one update. Measured, each with a baseline in the
same run:

* size: the Yjs update of one registry change, the same signed and framed as it travels
  (``Updates`` message with the author's certificate), against the full registry as a JSON
  snapshot (what pushing the whole state would send) and the full Yjs state;
* merge, per update (median, p90): the hub's checked merge (``Replica.apply``: verify the SVID
  chain and signature, apply to a copy, judge the changes, apply) against pycrdt's bare
  ``apply_update`` of the same bytes on a plain document, and against ``json.loads`` of the JSON
  snapshot;
* catch-up: a fresh replica receiving the sync answer (every node's signed update) against pycrdt
  applying the whole state as one update.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from importlib.metadata import version

import pycrdt

from tests.kit.pki import TestCA
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Replica

TD = "mesh.bench"


def entry(n: int, now: float, k: int = 0) -> dict:
    return {"macs": [f"02:00:00:{(n >> 8) & 255:02x}:{n & 255:02x}:{k & 255:02x}", f"02:01:00:00:{n & 255:02x}:00"],
            "role": "node", "version": "1.4.0", "at": now}


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--kind", choices=("mldsa65", "p256"), default="mldsa65")
    args = ap.parse_args()
    ca = TestCA(TD, kind=args.kind)
    now = time.time()
    policy = st.Policy(TD, compact_at_bytes=1 << 40)
    bundles = {TD: ca.bundle()}
    nodes = []
    for n in range(args.nodes):
        leaf = ca.issue(path=f"/node/n{n}")
        nodes.append(Replica(f"spiffe://{TD}/node/n{n}", leaf.key, st.chain_der([leaf.cert]), policy, bundles))
    hub_leaf = ca.issue(path="/node/hub")
    hub = Replica(f"spiffe://{TD}/node/hub", hub_leaf.key, st.chain_der([hub_leaf.cert]), policy, bundles)
    plain = pycrdt.Doc()
    firsts = []
    for n, r in enumerate(nodes):
        u = r.write(now, {"registry": {r.author: entry(n, now)}})
        firsts.append(u)
        plain.apply_update(u.update)
    t0 = time.perf_counter()
    for u in firsts:
        assert hub.apply(u, now).applied
    first_merge = (time.perf_counter() - t0) / len(firsts)

    checked, bare, snap = [], [], []
    sizes = []
    for k in range(1, args.rounds + 1):
        n = k % len(nodes)
        r = nodes[n]
        u = r.write(now + k, {"registry": {r.author: entry(n, now + k, k)}})
        sizes.append((len(u.update), len(st.encode(st.Updates((u,)))), u.size))
        t = time.perf_counter()
        outcome = hub.apply(u, now + k)
        checked.append(time.perf_counter() - t)
        assert outcome.applied, outcome
        t = time.perf_counter()
        plain.apply_update(u.update)
        bare.append(time.perf_counter() - t)
        registry = hub.view()["registry"]
        text = json.dumps({key: json.loads(v) for key, v in registry.items()}, sort_keys=True)
        t = time.perf_counter()
        json.loads(text)
        snap.append(time.perf_counter() - t)
    json_bytes = len(text.encode())
    yjs_full = len(hub.epochs[0].doc.get_update())
    assert hub.state()["registry"] == {k: json.loads(v) for k, v in
                                       plain.get("registry", type=pycrdt.Map).to_py().items()}

    fresh_leaf = ca.issue(path="/node/fresh")
    fresh = Replica(f"spiffe://{TD}/node/fresh", fresh_leaf.key, st.chain_der([fresh_leaf.cert]), policy, bundles)
    answer = hub.answer(st.decode(fresh.step1()))
    t = time.perf_counter()
    for m in answer:
        fresh.receive(m, now + args.rounds + 1)
    catch_up = time.perf_counter() - t
    assert fresh.state() == hub.state()
    full = hub.epochs[0].doc.get_update()
    t = time.perf_counter()
    pycrdt.Doc().apply_update(full)
    bare_catch_up = time.perf_counter() - t

    yjs, framed, signed = (statistics.median(s[i] for s in sizes) for i in range(3))
    us = 1e6
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"pycrdt {version('pycrdt')}, cryptography {version('cryptography')}; {args.nodes} nodes, "
          f"{args.rounds} rounds, {args.kind} SVIDs")
    print()
    print("| one registry change | bytes | vs JSON snapshot of the registry |")
    print("|---|---|---|")
    print(f"| Yjs update | {yjs:,.0f} | {yjs / json_bytes:.3f}x |")
    print(f"| signed update (update + signature) | {signed:,.0f} | {signed / json_bytes:.3f}x |")
    print(f"| on the wire: `Updates` message with the author's certificate | {framed:,.0f} | "
          f"{framed / json_bytes:.3f}x |")
    print(f"| baseline: JSON snapshot of the {args.nodes}-node registry | {json_bytes:,} | 1.000x |")
    print(f"| full Yjs state of the document | {yjs_full:,} | {yjs_full / json_bytes:.3f}x |")
    print()
    print("| merge one registry change into the document | median | p90 | median vs pycrdt bare |")
    print("|---|---|---|---|")
    med = statistics.median(bare)
    for label, samples in (("checked: `Replica.apply` (verify, copy, judge, apply)", checked),
                           ("baseline: pycrdt `apply_update` alone", bare),
                           ("baseline: `json.loads` of the JSON snapshot", snap)):
        m = statistics.median(samples)
        print(f"| {label} | {m * us:,.0f} us | {pct(samples, 0.9) * us:,.0f} us | {m / med:.1f}x |")
    print()
    print("| catch-up of a fresh node | time | bytes |")
    print("|---|---|---|")
    print(f"| sync answer: {args.nodes + args.rounds} signed updates, checked | {catch_up * 1e3:,.1f} ms | "
          f"{sum(len(m) for m in answer):,} |")
    print(f"| baseline: pycrdt applying the full state as one update | {bare_catch_up * 1e3:,.2f} ms | "
          f"{len(full):,} |")
    print(f"| (first registration of each node merged into the hub, per update) | {first_merge * us:,.0f} us | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
