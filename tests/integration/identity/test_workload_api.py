"""The Workload API source against a Workload API server on a Unix socket: the real SPIFFE protobufs
over gRPC, ML-DSA-65 SVIDs with a 10 s TTL rotated at half-life and streamed to the agent."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core.types import SourceUpdate, SvidUnavailable, validate_x509_svid
from x0tta.identity.workload import WorkloadApiSource, resolve_socket
from x0tta.identity.workload_server import WorkloadApiServer

pytestmark = pytest.mark.integration
ID = "spiffe://mesh.x0tta/node/a"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", "mesh.x0tta")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp paths can be long.
    d = Path(tempfile.mkdtemp(prefix="x0id-"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


async def test_streaming_rotation_with_a_10s_ttl(ca: CertificateAuthority, short_dir: Path) -> None:
    sock = short_dir / "api.sock"
    with WorkloadApiServer(ca, sock, ID, ttl=10.0) as server:
        src = WorkloadApiSource(str(sock), timeout=10, environ={})
        await src.start()
        updates: list[SourceUpdate] = []
        src.subscribe(updates.append)
        try:
            first = src.svid()
            assert str(first.spiffe_id) == ID and first.key_algorithm == "ML-DSA-65"
            assert list(src.bundles()) == ["mesh.x0tta"]
            assert first.lifetime == pytest.approx(11, abs=1)
            loop = asyncio.get_running_loop()
            end = loop.time() + 20
            while src.rotations < 2:
                assert loop.time() < end, "no two rotations within 20 s"
                await asyncio.sleep(0.1)
            seen = [first] + [u.svid for u in updates if u.rotated]
            assert len({s.leaf.serial_number for s in seen}) == len(seen) >= 3
            for old, new in itertools.pairwise(seen):
                # pushed while the previous one was still valid, with most of its own life ahead
                assert new.not_before.timestamp() < old.expires_at
                assert new.seconds_to_expiry(time.time()) > 0
            # every SVID handed out verifies against the bundle that came with it
            for s in seen:
                assert validate_x509_svid(s.cert_chain, src.bundles(), s.not_before.timestamp() + 2).ok
            assert server.rotations >= 2
        finally:
            await src.close()


async def test_federated_bundle_update_is_streamed(
    ca: CertificateAuthority, tmp_path: Path, short_dir: Path
) -> None:
    other = CertificateAuthority.init(tmp_path / "other", "other.org")
    sock = short_dir / "api.sock"
    with WorkloadApiServer(ca, sock, ID, ttl=60.0) as server:
        src = WorkloadApiSource(str(sock), timeout=10, environ={})
        await src.start()
        try:
            assert "other.org" not in src.bundles()
            server.set_federated({"other.org": other.root.public_bytes(serialization.Encoding.DER)})
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while "other.org" not in src.bundles():
                assert loop.time() < end
                await asyncio.sleep(0.05)
            assert src.bundles()["other.org"].roots == (other.root,)
            assert src.rotations == 0
        finally:
            await src.close()


def test_server_refuses_calls_without_the_security_header(ca: CertificateAuthority, short_dir: Path) -> None:
    sock = short_dir / "api.sock"
    with WorkloadApiServer(ca, sock, ID, ttl=60.0), grpc.insecure_channel(f"unix:{sock}") as ch:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            next(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=5))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stream = stub.FetchX509SVID(
            workload_pb2.X509SVIDRequest(), metadata=(("workload.spiffe.io", "true"),), timeout=5
        )
        first = next(stream)
        stream.cancel()
        assert first.svids[0].spiffe_id == ID and first.svids[0].bundle


async def test_unreachable_socket_is_unavailable_not_a_hang(short_dir: Path) -> None:
    sock = short_dir / "dead.sock"
    sock.touch()  # a path that exists but nobody listens on
    src = WorkloadApiSource(str(sock), timeout=1.0, environ={})
    with pytest.raises(SvidUnavailable):
        await src.start()
    await src.close()


def test_socket_resolution() -> None:
    assert resolve_socket("", {"SPIFFE_ENDPOINT_SOCKET": "unix:///run/spire/api.sock"}) == "/run/spire/api.sock"
    assert resolve_socket("/x.sock", {"SPIFFE_ENDPOINT_SOCKET": "unix:/y"}) == "/x.sock"
    assert resolve_socket("", {}) == "/tmp/spire-agent/public/api.sock"  # noqa: S108 - SPIRE's default, compared


async def test_spire_agent_restart_keeps_the_svid_and_reconnects(ca: CertificateAuthority, short_dir: Path) -> None:
    sock = short_dir / "api.sock"
    server = WorkloadApiServer(ca, sock, ID, ttl=60.0).start()
    src = WorkloadApiSource(str(sock), timeout=10, environ={})
    try:
        await src.start()
        first = src.svid()
        server.stop()  # the SPIRE agent goes away: the SVID in hand stays usable
        await asyncio.sleep(0.5)
        assert src.svid() is first and src.last_error is None
        server = WorkloadApiServer(ca, sock, ID, ttl=60.0).start()  # ...and comes back
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while src.svid().leaf == first.leaf:
            assert loop.time() < end, "no reconnection within 15 s"
            await asyncio.sleep(0.1)
        assert src.rotations == 1
    finally:
        await src.close()
        server.stop()


async def test_identity_subsystem_on_spire_counts_rotations(
    ca: CertificateAuthority, tmp_path: Path, short_dir: Path
) -> None:
    from tests.kit.wait import until
    from tests.unit.identity.fakes import identity_context, settings
    from x0tta.identity.service import IdentityService
    from x0tta.telemetry.testing import running

    sock = short_dir / "api.sock"
    ctx = identity_context(settings(tmp_path, source="workload_api", workload_api_socket=str(sock)))
    svc = IdentityService(environ={})
    with WorkloadApiServer(ca, sock, "spiffe://mesh.x0tta/node/r1", ttl=10.0):
        async with running(svc, ctx):
            shared = await svc.wait_source(timeout=10)
            seen: list[SourceUpdate] = []
            shared.subscribe(seen.append)
            await until(lambda: ctx.health.codes == [], timeout=10)
            await until(lambda: ctx.registry.get_sample_value("x0tta_identity_svid_rotations_total") == 1, 15)
            assert [u.rotated for u in seen] == [True]
            assert 0 < (ctx.registry.get_sample_value("x0tta_identity_svid_expires_in_seconds") or 0) <= 11
            shown = await ctx.admin.handlers["identity.show"]({})
            assert shown["source"] == "workload_api" and shown["rotations"] == 1
