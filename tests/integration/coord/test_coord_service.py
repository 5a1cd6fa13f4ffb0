"""The coord subsystem in-process against a real cluster: degraded, never failing, while etcd is
out of reach; registered and healthy once it answers; metrics and the admin command."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from prometheus_client import generate_latest

from tests.kit.etcd import Cluster
from tests.kit.ports import free_ports
from tests.kit.wait import until
from x0tta.config.coord import CoordSettings
from x0tta.config.schema import AgentSettings, NodeSettings
from x0tta.coord.etcd import EtcdClient
from x0tta.coord.handlers import FileSettings
from x0tta.coord.service import CoordService
from x0tta.coord.store import RolloutStore
from x0tta.telemetry.testing import StandaloneContext, running

pytestmark = pytest.mark.integration


def context(tmp_path, coord: CoordSettings) -> StandaloneContext:
    return StandaloneContext(AgentSettings(node=NodeSettings(id="n1", state_dir=str(tmp_path)), coord=coord),
                             name="coord", node_id="n1")


async def test_unreachable_etcd_degrades_and_the_node_registers_once_it_answers(cluster: Cluster, tmp_path) -> None:
    dead = [f"https://127.0.0.1:{p}" for p in free_ports(2)]  # nothing listens there
    coord = CoordSettings(endpoints=(*dead, *cluster.endpoints), **cluster.files("n1"), poll_interval=0.1,
                          request_timeout=0.5, prefix="/svc")
    ctx = context(tmp_path, coord)
    service = CoordService(coord, handler=FileSettings(str(tmp_path / "s.json")))
    cluster.partition(0)
    cluster.partition(1)
    cluster.partition(2)
    async with running(service, ctx):
        await until(lambda: "coord_etcd_unreachable" in ctx.health.codes, timeout=30)
        for i in range(3):
            cluster.heal(i)
        await until(lambda: ctx.health.codes == [], timeout=30)
        async with EtcdClient(cluster.endpoints, **cluster.files("operator")) as c:
            assert await RolloutStore(c, "/svc").registered() == ["n1"]
        assert await ctx.admin.handlers["coord.status"]({}) == []
        text = generate_latest(ctx.registry).decode()
        assert "x0tta_coord_etcd_up 1.0" in text
        assert "x0tta_coord_etcd_failovers_total" in text and "x0tta_coord_etcd_requests_total" in text
        check = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"], input=text.encode(),
                                        capture_output=True)
        assert check.returncode == 0 and check.stdout == b"" and check.stderr == b"", check


async def test_a_certificate_etcd_refuses_is_reported_not_crashed(cluster: Cluster, tmp_path) -> None:
    coord = CoordSettings(endpoints=tuple(cluster.endpoints), ca_file=cluster.files("n1")["ca_file"],
                          poll_interval=0.1, request_timeout=0.5)
    ctx = context(tmp_path, coord)
    async with running(CoordService(coord), ctx):  # no client certificate: every member refuses
        # the member's alert arrives after the TLS 1.3 handshake: seen on a read, or (when the
        # connection is reset first) only as an unreachable member; the node is degraded, not failing
        await until(lambda: any("coord_certificate_unusable" in [c.code for c in h] for h in ctx.health.history),
                    timeout=30)
        assert set(ctx.health.codes) <= {"coord_certificate_unusable", "coord_etcd_unreachable"}


async def test_missing_tls_files_are_a_missing_capability(tmp_path) -> None:
    from x0tta.common.errors import CapabilityMissing

    coord = CoordSettings(endpoints=("https://127.0.0.1:1",), cert_file=str(tmp_path / "none.pem"))
    with pytest.raises(CapabilityMissing) as err:
        await CoordService(coord).run(context(tmp_path, coord))
    assert err.value.code == "coord_certificate_unusable"
