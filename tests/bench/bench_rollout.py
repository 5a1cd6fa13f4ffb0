"""A coordinated rollout to 20 nodes against the same change applied to the 20 at once, and etcd
request latency from a client, in one run.

    .venv/bin/python tests/bench/bench_rollout.py [--nodes 20] [--soak 1.0] [--requests 300]

Starts a real 3-member etcd cluster (tests/kit/etcd.py: loopback, TLS with client certificates)
and ``--nodes`` worker processes, each the coord subsystem of one node
(tests/integration/coord/worker.py). Then, through the same machinery:

* **rollout**: wave 1, every node applies, soaks ``--soak`` s and reports in turn;
* **all at once**: the same change with a wave as large as the fleet: every node applies and soaks
  together (the baseline: what the wave size costs in time);

each timed from the document stored to the rollout ``done``. Between the two, with the workers
polling, ``--requests`` linearizable reads (``/v3/kv/range``) and as many fenced txns
(``/v3/kv/txn`` comparing a key's mod_revision) from this process give the latency p50 / p99 an
agent sees. Prints a Markdown table. Needs ``etcd`` (etcd-server); no root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.kit.etcd import Cluster  # noqa: E402 - after the repository is on the path
from x0tta.coord.core import rollout as core  # noqa: E402
from x0tta.coord.core.rollout import FINAL, AbortCriteria, Change, Rollout  # noqa: E402
from x0tta.coord.etcd import EtcdClient, mod_revision_is, put  # noqa: E402
from x0tta.coord.store import RolloutStore  # noqa: E402

WORKER = ROOT / "tests" / "integration" / "coord" / "worker.py"
PREFIX = "/bench"


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def timed_rollout(store: RolloutStore, key: Ed25519PrivateKey, ro: Rollout) -> float:
    t0 = time.monotonic()
    await store.create(ro, key.sign(core.signed_bytes(ro)), time.time())
    while True:
        v = await store.load(ro.id)
        if v is not None and v.state is not None and v.state.phase in FINAL:
            if v.state.phase != core.Phase.DONE:
                raise RuntimeError(f"rollout {ro.id} ended {v.state.phase}: {v.state.reason}")
            return time.monotonic() - t0
        await asyncio.sleep(0.05)


async def latencies(client: EtcdClient, n: int) -> tuple[list[float], list[float]]:
    reads, txns = [], []
    rev = await client.put(f"{PREFIX}/lat", "0")
    for i in range(n):
        t0 = time.perf_counter()
        await client.range(f"{PREFIX}/lat")
        reads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = await client.txn([mod_revision_is(f"{PREFIX}/lat", rev)], [put(f"{PREFIX}/lat", str(i))])
        txns.append(time.perf_counter() - t0)
        rev = r.revision if r.succeeded else rev
    return reads, txns


async def bench(cluster: Cluster, nodes: list[str], key: Ed25519PrivateKey, soak: float, requests: int) -> dict:
    async with EtcdClient(cluster.endpoints, **cluster.files("operator")) as client:
        store = RolloutStore(client, PREFIX)
        deadline = time.monotonic() + 120
        while set(await store.registered()) < set(nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not register: {await store.registered()}")
            await asyncio.sleep(0.2)
        change = Change("mesh.orig_interval", 500)
        crit = AbortCriteria(worse_share=1.0)
        rolling = await timed_rollout(store, key, Rollout("bench-rolling", change, ("*",), 1, soak, crit))
        reads, txns = await latencies(client, requests)
        at_once = await timed_rollout(store, key, Rollout("bench-at-once", Change("mesh.orig_interval", 600),
                                                          ("*",), len(nodes), soak, crit))
        return {"rolling": rolling, "at_once": at_once, "reads": reads, "txns": txns,
                "requests": client.requests}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--soak", type=float, default=1.0)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    nodes = [f"b{i:02d}" for i in range(args.nodes)]
    with tempfile.TemporaryDirectory(prefix="x0tta-bench-rollout-") as tmp:
        work = Path(tmp)
        cluster = Cluster(work / "etcd", clients=("operator", *nodes))
        key = Ed25519PrivateKey.generate()
        pub = work / "operator.pub"
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            cluster.start()
            for n in nodes:
                (work / n).mkdir()
                cfg = {"node": n, "endpoints": cluster.endpoints, **cluster.files(n),
                       "settings_file": str(work / n / "settings.json"), "operator_key_file": str(pub),
                       "prefix": PREFIX, "turn_ttl": 5, "poll_interval": 0.5, "request_timeout": 2.0}
                (work / n / "cfg.json").write_text(json.dumps(cfg))
                procs.append(subprocess.Popen([sys.executable, str(WORKER), str(work / n / "cfg.json")],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}))
            r = asyncio.run(bench(cluster, nodes, key, args.soak, args.requests))
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            cluster.stop()
    etcd_version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{args.nodes} nodes, soak {args.soak:g} s, poll 0.5 s; {platform.python_version()}, {etcd_version}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| measure | rollout (wave 1) | all at once (wave = nodes) | ratio |")
    print("|---|---|---|---|")
    print(f"| time to done | {r['rolling']:.1f} s | {r['at_once']:.1f} s | {r['rolling'] / r['at_once']:.1f}x |")
    print(f"| per node | {r['rolling'] / args.nodes:.2f} s | | |")
    print()
    print(f"| etcd request ({args.requests} each, {args.nodes} workers polling) | p50 | p99 |")
    print("|---|---|---|")
    for name, xs in (("linearizable range", r["reads"]), ("fenced txn", r["txns"])):
        print(f"| {name} | {percentile(xs, 50) * 1000:.1f} ms | {percentile(xs, 99) * 1000:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
