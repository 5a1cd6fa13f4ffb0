"""Rollouts that change the running mesh: the coord subsystems of two nodes, built by the agent's
wiring (``x0tta.agent.wiring.factories``: the change handler, the operator's hybrid signature, the
health sample), in this process against a real 3-member etcd cluster; each node's mesh subsystem
talks to a kernel answering with captured batman-adv replies (tests/kit/batadv.py), whose SET_MESH
requests show what reached batman-adv.

* a rollout of ``mesh.orig_interval`` reaches both kernels, one node after the other, and the
  reconcile keeps it;
* aborted while its first node soaks, that node puts the ``[mesh]`` value back and the other never
  sees the change;
* a value the mesh refuses (a flag for a number) changes nothing: the first node reports it worse at
  once, the rollout is aborted after the first wave, and the second node never takes a turn.

Soaks of 0.5-60 s (the long one is cut by the abort); a test takes 5-15 s.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kit.batadv import golden_ifindex, golden_socket
from tests.kit.etcd import Cluster
from tests.kit.wait import until
from x0tta.agent.wiring import AgentHooks, factories
from x0tta.config.loader import parse_settings
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import FINAL, AbortCriteria, Change, Phase, Rollout
from x0tta.coord.etcd import EtcdClient
from x0tta.coord.store import RolloutStore, View
from x0tta.identity.core.operator import OperatorKey
from x0tta.mesh import genl
from x0tta.mesh.client import MeshClient
from x0tta.mesh.core.batadv import Cmd
from x0tta.telemetry.testing import StandaloneContext, running

pytestmark = pytest.mark.integration
NODES = ("n1", "n2")
PREFIX = "/x0tta-live"
CONFIGURED = 2000  # [mesh] orig_interval; the captured kernel reports 1000, so every reconcile sets it


class Node:
    """One node: its mesh subsystem over a recorded kernel and its coord subsystem, both from the wiring."""

    def __init__(self, name: str, cluster: Cluster, tmp: Path, key: Path) -> None:
        toml = f"""
[node]
id = "{name}"
state_dir = "{tmp / name}"
[mesh]
interface = "bat0"
hard_interfaces = ["v40a"]
orig_interval = {CONFIGURED}
{cluster.coord_toml(name, key, PREFIX, poll_interval=0.1)}"""
        (tmp / name).mkdir(parents=True)
        self.settings = parse_settings(toml)
        table = factories(self.settings, AgentHooks(subsystem_health=lambda: [{"subsystem": "mesh", "state": "ok"}]))
        self.mesh, self.coord = table["mesh"](self.settings), table["coord"](self.settings)
        self.ctx = StandaloneContext(self.settings, name="coord", node_id=name)

    def sent(self) -> list[int]:
        """orig_interval of every SET_MESH this node's kernel was sent, in order."""
        kernel = self.mesh.client._sock.sock  # type: ignore[attr-defined]
        return [v["orig_interval"] for c, v in kernel.settings if c == Cmd.SET_MESH and "orig_interval" in v]


@pytest.fixture
async def nodes(cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(genl, "ifindex", golden_ifindex())
    operator = OperatorKey.generate()
    key = tmp_path / "operator.pub.pem"
    key.write_bytes(operator.public.to_pem())
    made = {n: Node(n, cluster, tmp_path, key) for n in NODES}
    async with contextlib.AsyncExitStack() as stack:
        for node in made.values():
            node.mesh.client = MeshClient(sock=golden_socket())
            await node.mesh.client.open()
            stack.push_async_callback(node.mesh.client.close)
            await node.mesh.reconcile_now()  # as the running subsystem does at start: [mesh] in force
            await stack.enter_async_context(running(node.coord, node.ctx))
        yield made, operator


@pytest.fixture
async def store(cluster: Cluster):
    async with EtcdClient(cluster.endpoints, **cluster.files("operator"), timeout=1.0) as c:
        yield RolloutStore(c, PREFIX)


async def begin(store: RolloutStore, operator: OperatorKey, ro: Rollout) -> None:
    await until(lambda: _registered(store), timeout=30)
    signature = json.dumps(operator.sign(core.signed_bytes(ro)).to_json()).encode()
    await store.create(ro, signature, time.time())


async def _registered(store: RolloutStore) -> bool:
    return set(await store.registered()) >= set(NODES)


async def finished(store: RolloutStore, rid: str) -> View:
    async def final() -> View | None:
        v = await store.load(rid)
        return v if v is not None and v.state is not None and v.state.phase in FINAL else None
    return await until(final, timeout=60)


def rollout(rid: str, value: Any, soak: float) -> Rollout:
    return Rollout(rid, Change("mesh.orig_interval", value), ("n*",), wave=1, soak=soak,
                   abort=AbortCriteria(worse_share=0.5), operator="ops")


async def test_a_rollout_changes_the_running_mesh_node_by_node(nodes, store: RolloutStore) -> None:
    made, operator = nodes
    await begin(store, operator, rollout("live-ok", 5000, soak=0.5))
    view = await finished(store, "live-ok")
    assert view.state is not None and view.state.phase == Phase.DONE, view.state
    for node in made.values():
        assert node.mesh.operator["mesh"] == {"orig_interval": 5000}
        assert node.sent()[-1] == 5000 and CONFIGURED in node.sent()
        await node.mesh.reconcile_now()  # the kernel (a recording) still says 1000: the rollout's value goes back
        assert node.sent()[-1] == 5000
    first, second = view.state.order
    starts = {r["node"]: (r["start"], r["end"]) for r in view.records.values()}
    assert starts[first][1] <= starts[second][0]


async def test_an_aborted_rollout_puts_the_configured_value_back_and_the_other_node_never_sees_it(
        nodes, store: RolloutStore) -> None:
    made, operator = nodes
    await begin(store, operator, rollout("live-abort", 5000, soak=60))

    async def soaking() -> str | None:
        v = await store.load("live-abort")
        if v is None or v.state is None:
            return None
        return next((n for n, r in v.state.nodes.items() if r.step == core.Step.SOAKING), None)

    first = await until(soaking, timeout=30)
    assert made[first].sent()[-1] == 5000
    await store.update("live-abort", lambda st: core.abort(st, "operator", time.time()))
    view = await finished(store, "live-abort")
    assert view.state is not None and view.state.phase == Phase.ROLLED_BACK, view.state
    assert view.state.order == (first,)
    assert made[first].mesh.operator["mesh"] == {} and made[first].sent()[-2:] == [5000, CONFIGURED]
    other = made[next(n for n in NODES if n != first)]
    assert 5000 not in other.sent() and other.mesh.operator["mesh"] == {}


async def test_a_value_the_mesh_refuses_aborts_after_the_first_wave_with_nothing_changed(
        nodes, store: RolloutStore) -> None:
    made, operator = nodes
    await begin(store, operator, rollout("live-refused", True, soak=0.5))  # orig_interval takes an int
    view = await finished(store, "live-refused")
    assert view.state is not None and view.state.phase == Phase.ROLLED_BACK, view.state
    assert len(view.state.order) == 1 and "worse on 1 of 1" in view.state.reason
    (record,) = view.records.values()
    assert "takes a int" in record["refused"] and record["outcome"] == "worse"
    for node in made.values():
        assert node.mesh.operator["mesh"] == {} and set(node.sent()) == {CONFIGURED}
