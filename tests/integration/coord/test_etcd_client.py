"""The async etcd client against a real 3-member cluster with client certificates: fenced txns,
leases, failover when the leader is killed, a typed error when no quorum answers."""

from __future__ import annotations

import contextlib

import pytest

from tests.kit.etcd import Cluster
from tests.kit.wait import until
from x0tta.coord.etcd import EtcdClient, EtcdError, EtcdUnavailable, LeaseLost, absent, mod_revision_is, put

pytestmark = pytest.mark.integration


async def test_fenced_txn_refused_once_the_lease_is_gone(cluster: Cluster) -> None:
    async with EtcdClient(cluster.endpoints, **cluster.files("n1")) as c:
        lease, ttl = await c.lease_grant(5)
        assert ttl == 5
        took = await c.txn([absent("/t/turn")], [put("/t/turn", "n1", lease)])
        assert took.succeeded
        turn = await c.get("/t/turn")
        assert turn is not None and turn.lease == lease and turn.mod_revision == took.revision
        assert (await c.txn([mod_revision_is("/t/turn", took.revision)], [put("/t/rec", "under turn")])).succeeded
        assert await c.lease_keepalive(lease) == 5
        await c.lease_revoke(lease)
        with pytest.raises(LeaseLost):
            await c.lease_keepalive(lease)
        assert await c.get("/t/turn") is None  # the lease took the turn with it
        late = await c.txn([mod_revision_is("/t/turn", took.revision)], [put("/t/rec", "late")])
        assert not late.succeeded
        rec = await c.get("/t/rec")
        assert rec is not None and rec.value == b"under turn"
        kvs, _ = await c.range("/t/", prefix=True)
        assert [kv.key for kv in kvs] == ["/t/rec"]


async def test_client_fails_over_when_the_leader_dies(cluster: Cluster) -> None:
    async with EtcdClient(cluster.endpoints, **cluster.files("n1"), timeout=2.0) as c:
        await c.put("/k", "1")
        cluster.kill(cluster.leader())

        async def write() -> int | None:  # "leader changed" while the two left elect one: temporary
            with contextlib.suppress(EtcdUnavailable):
                return await c.put("/k", "2")
            return None

        assert await until(write, timeout=30)
        kv = await c.get("/k")
        assert kv is not None and kv.value == b"2"


async def test_no_quorum_is_a_temporary_error(cluster: Cluster) -> None:
    async with EtcdClient(cluster.endpoints, **cluster.files("n1"), timeout=0.5) as c:
        cluster.kill(0)
        cluster.kill(1)
        with pytest.raises(EtcdUnavailable):
            await c.put("/k", "1")


async def test_a_client_without_a_certificate_of_the_ca_is_refused(cluster: Cluster, tmp_path) -> None:
    async with EtcdClient(cluster.endpoints, ca_file=cluster.files("n1")["ca_file"], timeout=1.0) as c:
        with pytest.raises((EtcdUnavailable, EtcdError)):
            await c.get("/k")
