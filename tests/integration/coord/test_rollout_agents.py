"""Rollouts run by whole agents: five ``x0tta-agent`` processes (coord enabled, built by the wiring
with the operator's hybrid signature and the agent's own health as the sample) against a real
3-member etcd cluster (tests/kit/etcd.py).

The host has no mesh for them (and an agent must not create a ``bat0`` on the test machine), so
the agents run without the mesh, heal, guard, peer, probes and identity subsystems:

* a rollout of a setting no running subsystem takes (``guard.mode``: the file of settings) goes
  through the five in waves of one, with no two apply intervals overlapping;
* a rollout of ``mesh.orig_interval`` is refused by the first node (this agent does not run the
  mesh subsystem), which reports it worse at once: the rollout is aborted after that first wave
  and no other agent takes a turn.

One cluster and one start of the agents for both (~30-40 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.integration.coord.test_rollout_acceptance import assert_no_overlap, intervals
from tests.kit.etcd import Cluster
from tests.kit.procs import stop_process
from tests.kit.wait import until
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import FINAL, AbortCriteria, Change, Phase, Rollout
from x0tta.coord.etcd import EtcdClient
from x0tta.coord.store import RolloutStore, View
from x0tta.identity.core.operator import OperatorKey

pytestmark = pytest.mark.integration
NODES = ("a1", "a2", "a3", "a4", "a5")
PREFIX = "/x0tta-agents"


def config(node: str, root: Path, cluster: Cluster, key: Path) -> Path:
    cluster.add_client(node)
    path = root / node / "agent.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f"""
[node]
id = "{node}"
state_dir = "{root / node / 'state'}"
runtime_dir = "{root / node / 'run'}"

[logging]
format = "json"

[metrics]
enabled = false

[identity]
enabled = false
[mesh]
enabled = false
[heal]
enabled = false
[guard]
enabled = false
[peer]
enabled = false
[probes]
enabled = false

{cluster.coord_toml(node, key, PREFIX)}""")
    return path


@pytest.fixture
def agents(cluster: Cluster, tmp_path: Path):
    operator = OperatorKey.generate()
    key = tmp_path / "operator.pub.pem"
    key.write_bytes(operator.public.to_pem())
    env = {k: v for k, v in os.environ.items() if not k.startswith("X0TTA_") and k != "NOTIFY_SOCKET"}
    procs = {}
    try:
        for node in NODES:
            cfg = config(node, tmp_path, cluster, key)
            log = open(tmp_path / node / "agent.log", "wb")
            procs[node] = subprocess.Popen([str(BIN / "x0tta-agent"), "--config", str(cfg)], env=env,
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
        yield operator, {n: tmp_path / n for n in NODES}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            stop_process(proc)


def logs(dirs: dict[str, Path]) -> str:
    return "\n".join(f"--- {n}\n{(d / 'agent.log').read_text()[-2000:]}" for n, d in dirs.items())


async def run(store: RolloutStore, operator: OperatorKey, ro: Rollout, dirs: dict[str, Path]) -> View:
    signature = json.dumps(operator.sign(core.signed_bytes(ro)).to_json()).encode()
    await store.create(ro, signature, time.time())

    async def final() -> View | None:
        v = await store.load(ro.id)
        return v if v is not None and v.state is not None and v.state.phase in FINAL else None

    try:
        return await until(final, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(dirs)}") from exc


async def test_whole_agents_take_their_turns_and_stop_a_change_the_first_refuses(cluster: Cluster, agents) -> None:
    operator, dirs = agents
    async with EtcdClient(cluster.endpoints, **cluster.files("operator"), timeout=1.0) as client:
        store = RolloutStore(client, PREFIX)

        async def registered() -> bool:
            return set(await store.registered()) >= set(NODES)

        try:
            await until(registered, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(dirs)}") from exc

        ok = Rollout("agents-file", Change("guard.mode", "enforce"), ("a*",), wave=1, soak=0.5, operator="ops")
        view = await run(store, operator, ok, dirs)
        assert view.state is not None and view.state.phase == Phase.DONE, (view.state, logs(dirs))
        assert sorted(view.state.order) == list(NODES) and len(intervals(view)) == 5
        assert_no_overlap(view)
        for d in dirs.values():
            assert json.loads((d / "state" / "rollout-settings.json").read_text()) == {"guard.mode": "enforce"}

        refused = Rollout("agents-mesh", Change("mesh.orig_interval", 500), ("a*",), wave=1, soak=0.5,
                          abort=AbortCriteria(worse_share=0.2), operator="ops")
        view = await run(store, operator, refused, dirs)
        assert view.state is not None and view.state.phase == Phase.ROLLED_BACK, (view.state, logs(dirs))
        assert len(view.state.order) == 1 and "worse on 1 of 1" in view.state.reason
        (record,) = view.records.values()
        assert "does not run the mesh subsystem" in record["refused"], record
        first = record["node"]
        for node, d in dirs.items():
            text = (d / "agent.log").read_text()
            assert ("coord_change_refused" in text) == (node == first), node
