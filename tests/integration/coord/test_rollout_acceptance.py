"""Acceptance of coordinated rollouts (issue 14): a real 3-member etcd cluster (tests/kit/etcd.py)
and five worker processes, each the coord subsystem of one node (worker.py) with a file of
settings as its change handler.

Checked from what every node recorded in etcd (``applied/<node>/<token>``, written fenced by its
turn) and from the nodes' settings files:

* a rollout of 5 with wave 1 completes, and no two recorded apply intervals overlap;
* under nemeses - the etcd leader killed, one member partitioned (SIGSTOP, tests/kit/etcd.py
  says why that stands for it), the turn holder SIGSTOPped past its lease and resumed - it still
  finishes with no overlap, the late holder's writes are refused (it notes so, unfenced, and
  undoes its change), and every node ends with the change applied exactly once;
* a change that makes a node's health worse is aborted after the first wave and rolled back; the
  other nodes never see it; in waves of two, the node that applied last goes back first;
* with ``per_segment``, two nodes of one mesh segment never change at once, while segments do;
* a rollout not signed by the operator's key is never applied.

Leases are 3 s and soaks 1-2 s, so a test takes 15-40 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.kit.etcd import Cluster
from tests.kit.procs import stop_process
from tests.kit.wait import until
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import FINAL, AbortCriteria, Change, Phase, Rollout
from x0tta.coord.etcd import EtcdClient, EtcdUnavailable
from x0tta.coord.store import RolloutStore, View

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[3]
NODES = ("n1", "n2", "n3", "n4", "n5")
SEGMENTS = {"n1": "east", "n2": "east", "n3": "west", "n4": "west", "n5": ""}  # used by per_segment rollouts
PREFIX = "/x0tta-test"
TTL = 3


class Workers:
    def __init__(self, cluster: Cluster, workdir: Path, operator: Ed25519PrivateKey) -> None:
        self.cluster, self.dir = cluster, workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "operator.pub"
        self.key.write_bytes(operator.public_key().public_bytes(serialization.Encoding.Raw,
                                                                serialization.PublicFormat.Raw))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def settings_file(self, node: str) -> Path:
        return self.dir / node / "rollout-settings.json"

    def settings(self, node: str) -> dict:
        p = self.settings_file(node)
        return json.loads(p.read_text()) if p.exists() else {}

    def start(self) -> None:
        for node in NODES:
            (self.dir / node).mkdir(exist_ok=True)
            cfg = {"node": node, "endpoints": self.cluster.endpoints, **self.cluster.files(node),
                   "settings_file": str(self.settings_file(node)), "operator_key_file": str(self.key),
                   "prefix": PREFIX, "turn_ttl": TTL, "poll_interval": 0.2, "request_timeout": 1.0,
                   "segment": SEGMENTS[node]}
            (self.dir / node / "cfg.json").write_text(json.dumps(cfg))
            log = open(self.dir / node / "worker.log", "wb")
            self.procs[node] = subprocess.Popen([sys.executable, str(WORKER), str(self.dir / node / "cfg.json")],
                                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
            log.close()

    def log(self, node: str) -> str:
        return (self.dir / node / "worker.log").read_text()[-3000:]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)}" for n in NODES)

    def stop(self) -> None:
        for proc in self.procs.values():  # all asked first, so they stop side by side
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            stop_process(proc)


@pytest.fixture
def operator() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def workers(cluster: Cluster, tmp_path: Path, operator: Ed25519PrivateKey):
    w = Workers(cluster, tmp_path / "nodes", operator)
    w.start()
    yield w
    w.stop()


@pytest.fixture
async def store(cluster: Cluster):
    async with EtcdClient(cluster.endpoints, **cluster.files("operator"), timeout=1.0) as c:
        yield RolloutStore(c, PREFIX)


async def retry(fn, *args, **kw):
    """An operator's request through elections: EtcdUnavailable is tried again."""
    async def once():
        with contextlib.suppress(EtcdUnavailable):
            return (await fn(*args, **kw),)
        return None
    return (await until(once, timeout=30))[0]


async def begin(store: RolloutStore, operator: Ed25519PrivateKey, ro: Rollout, signed: bool = True) -> None:
    await until(lambda: _registered(store), timeout=30)
    sig = operator.sign(core.signed_bytes(ro)) if signed else b"\0" * 64
    await store.create(ro, sig, time.time())


async def _registered(store: RolloutStore) -> bool:
    with contextlib.suppress(EtcdUnavailable):
        return set(await store.registered()) >= set(NODES)
    return False


async def finished(store: RolloutStore, rid: str, workers: Workers, timeout: float = 90) -> View:
    async def final() -> View | None:
        with contextlib.suppress(EtcdUnavailable):
            v = await store.load(rid)
            if v is not None and v.state is not None and v.state.phase in FINAL:
                return v
        return None
    try:
        return await until(final, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from exc


def intervals(view: View) -> list[tuple[float, float, str]]:
    """The completed apply intervals (start and end both written under the turn), by start."""
    out = [(r["start"], r["end"], r["node"]) for r in view.records.values() if "end" in r]
    return sorted(out)


def assert_disjoint(iv: list[tuple[float, float, str]]) -> None:
    for (s1, e1, n1), (s2, e2, n2) in itertools.pairwise(sorted(iv)):
        assert e1 <= s2, f"{n1} [{s1:.3f}, {e1:.3f}] overlaps {n2} [{s2:.3f}, {e2:.3f}]"


def assert_no_overlap(view: View) -> None:
    iv = intervals(view)
    assert_disjoint(iv)
    # a turn whose end was refused started before the next turn, and wrote nothing after it
    for r in view.records.values():
        if "end" not in r:
            later = [s for s, _, n in iv if s > r["start"]]
            assert later, f"{r['node']} lost its turn and nothing followed: {view.records}"


def rollout(rid: str, value: object = 500, **over) -> Rollout:
    return Rollout(**{"id": rid, "change": Change("mesh.orig_interval", value), "targets": ("n*",), "wave": 1,
                      "soak": 1.0, "abort": AbortCriteria(worse_share=0.2), "operator": "ops", **over})


def holder(view: View | None) -> str | None:
    if view is None or view.state is None:
        return None
    turns = [who for who, _ in view.turns.values()]
    soaking = [n for n, r in view.state.nodes.items() if r.step == core.Step.SOAKING]
    return next((n for n in turns if n in soaking), None)


async def test_rollout_of_five_in_waves_of_one_completes_without_overlap(
        cluster: Cluster, workers: Workers, store: RolloutStore, operator: Ed25519PrivateKey) -> None:
    await begin(store, operator, rollout("r-plain"))
    view = await finished(store, "r-plain", workers)
    assert view.state is not None and view.state.phase == Phase.DONE, view.state
    assert sorted(view.state.order) == list(NODES)
    assert len(intervals(view)) == 5
    assert_no_overlap(view)
    assert all(workers.settings(n) == {"mesh.orig_interval": 500} for n in NODES)


@pytest.mark.parametrize("nemesis", ["kill_leader", "partition_member", "pause_holder"])
async def test_rollout_under_a_nemesis_never_overlaps_and_finishes(
        cluster: Cluster, workers: Workers, store: RolloutStore, operator: Ed25519PrivateKey, nemesis: str) -> None:
    await begin(store, operator, rollout("r-nemesis", soak=1.5))

    async def turn_soaking() -> str | None:
        with contextlib.suppress(EtcdUnavailable):
            return holder(await store.load("r-nemesis"))
        return None

    first = await until(turn_soaking, timeout=30)
    paused = ""
    if nemesis == "kill_leader":
        victim = cluster.leader()
        cluster.kill(victim)
        await asyncio.sleep(3)
        cluster.restart(victim)
    elif nemesis == "partition_member":
        victim = cluster.leader()  # the member that matters most: the others must elect a new one
        cluster.partition(victim)
        await asyncio.sleep(4)
        cluster.heal(victim)
    else:
        paused = first
        proc = workers.procs[paused]
        proc.send_signal(signal.SIGSTOP)
        try:
            async def passed_on() -> bool:  # another node took a turn while the holder is frozen
                with contextlib.suppress(EtcdUnavailable):
                    h = holder(await store.load("r-nemesis"))
                    return h is not None and h != paused
                return False
            await until(passed_on, timeout=TTL * 6)
        finally:
            proc.send_signal(signal.SIGCONT)

    view = await finished(store, "r-nemesis", workers)
    assert view.state is not None and view.state.phase == Phase.DONE, (view.state, workers.logs())
    assert_no_overlap(view)
    done = [r for r in view.records.values() if r.get("outcome") == "done"]
    assert sorted(r["node"] for r in done) == list(NODES), view.records  # each applied exactly once, for good
    assert all(workers.settings(n) == {"mesh.orig_interval": 500} for n in NODES)
    if paused:
        notes = [f for f in view.fenced.values() if f["node"] == paused]
        assert notes, f"{paused} resumed without noticing its turn was lost\n{workers.log(paused)}"
        lost_tokens = {f["token"] for f in notes}
        for r in view.records.values():
            if r["node"] == paused and r["token"] in lost_tokens:
                assert "end" not in r, f"a write of {paused} under its lost turn was accepted: {r}"
        assert "coord_turn_lost" in workers.log(paused)


async def test_a_change_that_makes_health_worse_is_rolled_back_after_the_first_wave(
        cluster: Cluster, workers: Workers, store: RolloutStore, operator: Ed25519PrivateKey) -> None:
    for n in NODES:  # a value each node has before: rollback must restore it
        workers.settings_file(n).write_text(json.dumps({"mesh.orig_interval": 1000}))
    await begin(store, operator, rollout("r-bad", value="breaks-routing"))
    view = await finished(store, "r-bad", workers)
    assert view.state is not None and view.state.phase == Phase.ROLLED_BACK, (view.state, workers.logs())
    assert "worse on 1 of 1" in view.state.reason
    assert len(view.state.order) == 1, view.state.order  # aborted after the first wave
    first = view.state.order[0]
    assert [r["node"] for r in view.records.values()] == [first]
    for n in NODES:
        assert workers.settings(n) == {"mesh.orig_interval": 1000}, n
    assert "breaks-routing" not in "".join(workers.log(n) for n in NODES if n != first)


async def test_an_abort_in_waves_of_two_rolls_back_last_applied_first(
        cluster: Cluster, workers: Workers, store: RolloutStore, operator: Ed25519PrivateKey) -> None:
    # a 3 s soak: both nodes of the first wave are in turn when the first report aborts the rollout
    await begin(store, operator, rollout("r-wave2", value="breaks-routing", wave=2, soak=3.0,
                                         abort=AbortCriteria(worse_share=0.5)))
    view = await finished(store, "r-wave2", workers)
    assert view.state is not None and view.state.phase == Phase.ROLLED_BACK, (view.state, workers.logs())
    order = view.state.order
    assert len(order) == 2, order  # both of the first wave applied; no third node did
    back = {r["node"]: r["rolled_back_at"] for r in view.records.values() if "rolled_back_at" in r}
    assert sorted(back) == sorted(order), view.records
    assert sorted(order, key=lambda n: back[n]) == list(reversed(order))  # last applied, first back
    assert all(workers.settings(n) == {} for n in NODES)


async def test_per_segment_changes_one_node_of_a_segment_at_once(
        cluster: Cluster, workers: Workers, store: RolloutStore, operator: Ed25519PrivateKey) -> None:
    await begin(store, operator, rollout("r-seg", wave=5, per_segment=True, soak=1.5))
    view = await finished(store, "r-seg", workers)
    assert view.state is not None and view.state.phase == Phase.DONE, (view.state, workers.logs())
    assert dict(view.state.segments) == {n: s for n, s in SEGMENTS.items() if s}
    iv = intervals(view)
    assert len(iv) == 5
    for seg in ("east", "west"):
        assert_disjoint([i for i in iv if SEGMENTS[i[2]] == seg])
    # the wave of 5 let the segments (and n5, a segment of its own) change side by side
    assert any(s2 < e1 for (s1, e1, n1), (s2, e2, n2) in itertools.combinations(iv, 2))


async def test_a_rollout_not_signed_by_the_operator_is_never_applied(
        cluster: Cluster, workers: Workers, store: RolloutStore, operator: Ed25519PrivateKey) -> None:
    await begin(store, operator, rollout("r-unsigned"), signed=False)
    await asyncio.sleep(2)  # ten polls of every node
    view = await store.load("r-unsigned")
    assert view is not None and view.state is not None and view.state.phase == Phase.APPLYING
    assert view.state.nodes == {} and view.turns == {}
    assert all(workers.settings(n) == {} for n in NODES)
