"""Real PQC mutual TLS on loopback: what is accepted, and each refusal with its reason.

The server is a :class:`TlsEndpoint` with the default policy (X25519MLKEM768 only, ML-DSA-65
leaves); clients present certificates from a throwaway CA made to break one rule each.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from OpenSSL import SSL

from tests.kit.clock import ManualClock
from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.clock import SYSTEM
from x0tta.config.peer import PeerSettings
from x0tta.peer.service import tls_policy
from x0tta.peer.tls import HandshakeFailed, TlsClosed, TlsEndpoint, TlsPolicy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca():
    return TestCA("mesh.test")


class Server:
    def __init__(self, endpoint, server, results):
        self.endpoint, self.server, self.results = endpoint, server, results
        self.port = server.sockets[0].getsockname()[1]

    async def refusal(self, timeout=5.0):
        def refused():
            return [r for r in self.results if r.role == "server" and not r.ok]

        return (await until(refused, timeout, interval=0.01))[-1]


async def start_server(ca, policy=None, clock=SYSTEM, **cred_kw):
    results = []

    async def echo(stream):
        try:
            while data := await stream.recv():
                await stream.send(data)
        except TlsClosed:
            pass
        await stream.close()

    ep = TlsEndpoint(policy or TlsPolicy(), ca.credentials(ca.issue(path="/node/server"), **cred_kw),
                     observer=results.append, clock=clock)
    server = await ep.serve("127.0.0.1", 0, echo)
    return Server(ep, server, results)


@pytest.fixture
async def server(ca):
    s = await start_server(ca)
    yield s
    await s.endpoint.aclose()


async def shut(writer):
    writer.close()
    await writer.wait_closed()


async def talk(client, port, **kw):
    stream = await client.connect("127.0.0.1", port, **kw)
    try:
        await stream.send(b"ping")
        return stream, await stream.recv()
    finally:
        await stream.close()


async def test_mutual_pq_session(ca, server):
    results = []
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/client")), observer=results.append)
    stream, echoed = await talk(client, server.port)
    assert echoed == b"ping"
    peer = stream.peer
    assert str(peer.spiffe_id) == "spiffe://mesh.test/node/server"
    assert peer.group == "X25519MLKEM768" and peer.key_algorithm == "ML-DSA-65"
    assert not peer.resumed
    assert peer.bytes_sent <= 10.5 * 1024 and peer.bytes_received <= 10.5 * 1024
    srv = [r for r in server.results if r.ok][-1]
    assert srv.spiffe_id == "spiffe://mesh.test/node/client" and srv.group == "X25519MLKEM768"
    # resumption: PSK with the hybrid group, far fewer bytes, peer still validated
    stream2, _ = await talk(client, server.port)
    assert stream2.peer.resumed and stream2.peer.group == "X25519MLKEM768"
    assert stream2.peer.bytes_received < 2000
    assert str(stream2.peer.spiffe_id) == "spiffe://mesh.test/node/server"
    client.close()


async def test_exporter_matches_on_both_ends(ca):
    streams = asyncio.Queue()

    async def keep(stream):
        await streams.put(stream)

    ep = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/s")))
    srv = await ep.serve("127.0.0.1", 0, keep)
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/c")))
    c = await client.connect("127.0.0.1", srv.sockets[0].getsockname()[1])
    s = await streams.get()
    assert c.export_keying_material() == s.export_keying_material()
    assert c.export_keying_material(context=b"x") != c.export_keying_material()
    await c.close()
    await s.close()
    await ep.aclose()
    client.close()


def bad_leaf(ca, case):
    now = time.time()
    other = TestCA("other.test")
    return {
        "expired": lambda: ca.issue(path="/node/old", not_before=now - 100, ttl=50),
        "not_yet_valid": lambda: ca.issue(path="/node/future", not_before=now + 300),
        "multiple_uri_sans": lambda: ca.issue("spiffe://mesh.test/a", extra_uris=("spiffe://mesh.test/b",)),
        "leaf_is_ca": lambda: ca.issue(path="/node/ca", is_ca=True),
        "key_algorithm_not_allowed": lambda: ca.issue(path="/node/ecdsa", kind="p256"),
        "untrusted_domain": lambda: other.issue(path="/node/stranger"),
        "untrusted_domain_same_ca": lambda: ca.issue("spiffe://other.test/node/x"),
    }[case]()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("multiple_uri_sans", "multiple_uri_sans"),
        ("leaf_is_ca", "leaf_is_ca"),
        ("key_algorithm_not_allowed", "key_algorithm_not_allowed"),
        ("untrusted_domain", "untrusted_domain"),
        ("untrusted_domain_same_ca", "untrusted_domain"),
    ],
)
async def test_refused_client_certificates(ca, server, case, reason):
    leaf = bad_leaf(ca, case)
    client = TlsEndpoint(TlsPolicy(allowed_key_algorithms=None), ca.credentials(leaf))
    with pytest.raises(TlsClosed, match="alert"):
        await talk(client, server.port)
    assert (await server.refusal()).reason == reason
    client.close()


@pytest.mark.parametrize(
    ("source", "kind", "reason"),
    [
        ("builtin", "mldsa44", "key_algorithm_not_allowed"),  # weaker than the ML-DSA-65 promised
        ("builtin", "p256", "key_algorithm_not_allowed"),
        ("workload_api", "mldsa44", "key_algorithm_not_allowed"),
        ("workload_api", "p256", None),  # SPIRE's SVIDs today
    ],
)
async def test_default_signature_policy_per_identity_source(ca, source, kind, reason):
    server = await start_server(ca, tls_policy(PeerSettings(), source))
    client = TlsEndpoint(TlsPolicy(allowed_key_algorithms=None), ca.credentials(ca.issue(path="/node/c", kind=kind)))
    try:
        if reason is None:
            stream, echoed = await talk(client, server.port)
            assert echoed == b"ping" and stream.peer.group == "X25519MLKEM768"
            assert [r.ok for r in server.results if r.role == "server"] == [True]
        else:
            with pytest.raises(TlsClosed, match="alert"):
                await talk(client, server.port)
            refusal = await server.refusal()
            alg = {"mldsa44": "ML-DSA-44", "p256": "ECDSA-P256"}[kind]
            assert refusal.reason == reason and f"leaf key {alg} is not allowed" in refusal.detail
    finally:
        client.close()
        await server.endpoint.aclose()


async def test_revoked_and_unauthorized(ca):
    revoked = ca.issue(path="/node/revoked")
    s = await start_server(ca, allowed=("spiffe://mesh.test/node/revoked", "spiffe://mesh.test/node/ok"),
                           revoked=(revoked,))
    try:
        for leaf, reason in [(revoked, "revoked"), (ca.issue(path="/node/intruder"), "unauthorized")]:
            client = TlsEndpoint(TlsPolicy(), ca.credentials(leaf))
            with pytest.raises(TlsClosed):
                await talk(client, s.port)
            assert (await s.refusal()).reason == reason
            s.results.clear()
            client.close()
        client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/ok")))
        assert (await talk(client, s.port))[1] == b"ping"
        client.close()
    finally:
        await s.endpoint.aclose()


async def test_client_refuses_unexpected_server(ca, server):
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/client")))
    from x0tta.common.spiffe_id import SpiffeId

    with pytest.raises(HandshakeFailed) as exc:
        await client.connect("127.0.0.1", server.port, expect=SpiffeId.parse("spiffe://mesh.test/node/other"))
    assert exc.value.reason == "unexpected_peer"
    client.close()


async def test_classical_only_client_refused(ca, server):
    client = TlsEndpoint(TlsPolicy(groups=("X25519",)), ca.credentials(ca.issue(path="/node/classic")))
    with pytest.raises(HandshakeFailed) as exc:
        await client.connect("127.0.0.1", server.port)
    assert exc.value.reason == "peer_refused"
    assert (await server.refusal()).reason == "no_shared_group"
    client.close()


async def test_no_client_certificate(ca, server):
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_verify(SSL.VERIFY_NONE)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    for _ in range(10):  # drive a certificate-less client by hand
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            break
        try:
            writer.write(conn.bio_read(65536))
        except SSL.WantReadError:
            pass
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        conn.bio_write(data)
    await shut(writer)
    assert (await server.refusal()).reason == "no_certificate"


async def test_tls12_client_refused(server):
    """What a TLS 1.2 client gets: refused at once, reason protocol_version (the peer port speaks TLS 1.3 only)."""
    from x0tta.peer.attack import run_case

    seen = await run_case("tls12_client", "127.0.0.1", server.port, ca=None, wait=5)  # type: ignore[arg-type]
    assert seen.startswith("refused"), seen
    refusal = await server.refusal()
    assert refusal.reason == "protocol_version", refusal


async def test_garbage_instead_of_client_hello(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(bytes(range(256)) * 4)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) is not None
    await shut(writer)
    assert (await server.refusal()).reason == "not_tls"


async def test_handshake_that_never_completes(ca):
    """On the manual clock: the handshake is abandoned when ``handshake_timeout`` has passed on the
    endpoint's clock, not before."""
    clock = ManualClock(wall=time.time())  # the certificates were issued on the host's clock
    s = await start_server(ca, TlsPolicy(handshake_timeout=0.5), clock=clock)
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
        await writer.drain()
        await until(lambda: s.endpoint.active_handshakes == 1, what="the handshake under way")
        await clock.pass_time(0.4)
        assert s.endpoint.active_handshakes == 1 and not s.results  # still waiting for the rest
        await clock.pass_time(0.11)
        refusal = await s.refusal()
        assert refusal.reason == "handshake_timeout"
        await shut(writer)
    finally:
        await s.endpoint.aclose()


async def test_handshake_cap(ca):
    s = await start_server(ca, TlsPolicy(max_concurrent_handshakes=2, handshake_timeout=2.0))
    try:
        stalled = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(3)]
        assert (await s.refusal()).reason == "busy"
        for _r, w in stalled:
            await shut(w)
    finally:
        await s.endpoint.aclose()


async def test_rotation_takes_effect_for_new_handshakes(ca):
    s = await start_server(ca)
    try:
        client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/client")))
        first, _ = await talk(client, s.port)
        new_leaf = ca.issue(path="/node/server")
        s.endpoint.update(ca.credentials(new_leaf))
        second, _ = await talk(client, s.port)
        assert second.peer.serial == new_leaf.cert.serial_number != first.peer.serial
        assert not second.peer.resumed  # a new server context: old sessions do not resume
        client.update(ca.credentials(ca.issue(path="/node/client")))
        third, _ = await talk(client, s.port)
        assert not third.peer.resumed
        client.close()
    finally:
        await s.endpoint.aclose()


async def test_listening_on_every_address_takes_ipv4_and_ipv6(ca):
    from tests.kit.ports import free_port

    port = free_port()

    async def close(stream):
        await stream.close()

    ep = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/s")))
    await ep.serve("", port, close)
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/c")))
    try:
        for host in ("127.0.0.1", "::1"):
            stream = await client.connect(host, port, resume=False)
            assert stream.peer.group == "X25519MLKEM768"
            await stream.close()
    finally:
        client.close()
        await ep.aclose()
