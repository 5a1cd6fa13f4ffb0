"""SPIRE as deployed today: ECDSA P-256 X509-SVIDs from an ECDSA root, served by the Workload API
double (the real SPIFFE protobufs over gRPC on a Unix socket), and two peer services in SPIRE mode
(`[identity] source = "workload_api"`) with every other setting at its default.

They establish a session (the SPIRE source's default key policy accepts ECDSA-P256), the key
exchange stays X25519MLKEM768, and both sides report the session as authenticated classically:
`peers.list` (what `x0tta peers` shows), the `classical_authentication` note in their health (what
`x0tta status` shows) and `x0tta_peer_sessions_authenticated`. The same SVIDs against a node on the
built-in CA's policy are refused with `key_algorithm_not_allowed`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.wait import until
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core.certs import KeyType
from x0tta.identity.workload import WorkloadApiSource
from x0tta.identity.workload_server import WorkloadApiServer
from x0tta.peer.service import PeerService
from x0tta.peer.testing import FakeContext, sample
from x0tta.telemetry.testing import running

pytestmark = pytest.mark.integration

TD = "mesh.x0tta"


class WorkloadIdentity:
    def __init__(self, socket: Path) -> None:
        self.source = WorkloadApiSource(str(socket), timeout=10, environ={})

    async def wait_source(self, timeout: float | None = None) -> WorkloadApiSource:
        return self.source


def settings(source: str, peers: tuple[str, ...] = ()) -> AgentSettings:
    return build(AgentSettings, {
        "identity": {"trust_domain": TD, "source": source},
        "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": list(peers), "reconnect_min_delay": 0.05,
                 "neighbour_refresh": 0.5},
    })


@pytest.fixture
def short() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="x0spire-"))  # Unix socket paths must stay under 108 bytes
    yield d
    shutil.rmtree(d)


@pytest.fixture
async def spire(tmp_path: Path, short: Path):
    """Two nodes' Workload API sockets, serving ECDSA P-256 SVIDs of an ECDSA P-256 root."""
    ca = CertificateAuthority.init(tmp_path / "ca", TD, key_type=KeyType.ECDSA_P256)
    servers = [WorkloadApiServer(ca, short / f"{n}.sock", f"spiffe://{TD}/node/{n}", ttl=3600.0,
                                 key_type=KeyType.ECDSA_P256).start() for n in "ab"]
    ids = [WorkloadIdentity(short / f"{n}.sock") for n in "ab"]
    try:
        for ident in ids:
            await ident.source.start()
        yield ids
    finally:
        for ident in ids:
            await ident.source.close()
        for s in servers:
            s.stop()


async def test_two_spire_nodes_with_ecdsa_svids_authenticate_classically(spire):
    a_id, b_id = spire
    assert a_id.source.svid().key_algorithm == "ECDSA-P256"
    b, ctx_b = PeerService(b_id), FakeContext(settings("workload_api"), node_id="b")
    async with running(b, ctx_b):
        a = PeerService(a_id)
        ctx_a = FakeContext(settings("workload_api", (f"127.0.0.1:{b.port}",)), node_id="a")
        async with running(a, ctx_a):
            address = f"127.0.0.1:{b.port}"
            session = await a.links[address].session(15)
            assert session.peer.group == "X25519MLKEM768" and session.peer.key_algorithm == "ECDSA-P256"
            assert await a.request(address, "peer.echo", b"hello") == b"hello"
            await until(lambda: b.inbound, 10)

            for ctx, peer in ((ctx_a, "b"), (ctx_b, "a")):
                rows = await ctx.admin.handlers["peers.list"]({})
                row = next(r for r in rows if r.get("spiffe_id"))
                assert (row["spiffe_id"], row["group"], row["signature_algorithm"], row["authentication"]) == (
                    f"spiffe://{TD}/node/{peer}", "X25519MLKEM768", "ECDSA-P256", "classical")
                note = await until(lambda ctx=ctx: [c for c in ctx.health.conditions
                                                    if c.code == "classical_authentication"], 10)
                assert "1 of 1 sessions authenticate classically" in note[0].message
                assert f"spiffe://{TD}/node/{peer} (ECDSA-P256, X25519MLKEM768)" in note[0].message
                assert ctx.health.codes == ["classical_authentication"]  # a note: the subsystem is ok
                assert sample(ctx, "x0tta_peer_sessions_authenticated", signature="ECDSA-P256",
                              authentication="classical") == 1
                assert sample(ctx, "x0tta_peer_negotiated_groups_total", group="X25519MLKEM768") >= 1


async def test_ecdsa_svids_are_refused_by_a_node_on_the_builtin_policy(spire):
    a_id, b_id = spire
    b, ctx_b = PeerService(b_id), FakeContext(settings("builtin"), node_id="b")  # ML-DSA-65 only
    async with running(b, ctx_b):
        a = PeerService(a_id)
        ctx_a = FakeContext(settings("workload_api", (f"127.0.0.1:{b.port}",)), node_id="a")
        async with running(a, ctx_a):
            await until(lambda: sample(ctx_b, "x0tta_peer_handshakes_total", role="server", result="refused",
                                       reason="key_algorithm_not_allowed") >= 1, 15)
            assert not b.inbound
