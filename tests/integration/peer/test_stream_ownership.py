"""Every TCP connection the TLS endpoint opens or accepts is closed on every way out: a dial
cancelled in the loop turn its connection opens, a handshake that fails with an unexpected error,
a handler abandoned at shutdown. A connection left open is a StreamWriter handed to the garbage
collector (an unraisable ResourceWarning, an error under the suite's warning filters)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from tests.kit.clock import ManualClock
from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.clock import SYSTEM
from x0tta.peer import tls
from x0tta.peer.tls import TlsClosed, TlsEndpoint, TlsPolicy

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("error::ResourceWarning")]


@pytest.fixture(scope="module")
def ca():
    return TestCA("mesh.test")


@pytest.fixture
async def server(ca):
    streams = []

    async def hold(stream):
        streams.append(stream)
        while await stream.recv():
            pass

    ep = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/server")))
    srv = await ep.serve("127.0.0.1", 0, hold)
    ep.test_port = srv.sockets[0].getsockname()[1]
    ep.test_streams = streams
    yield ep
    await ep.aclose()


def opened_writers(monkeypatch, then=None):
    """Record every StreamWriter the endpoint's dial opens; ``then()`` runs as the dial returns."""
    writers = []
    real = tls._open

    async def recording(host, port, local_addr):
        reader, writer = await real(host, port, local_addr)
        writers.append(writer)
        if then is not None:
            then()
        return reader, writer

    monkeypatch.setattr(tls, "_open", recording)
    return writers


@pytest.mark.parametrize("clock", ["system", "manual"])
async def test_a_dial_cancelled_as_its_connection_opens_closes_it(ca, server, monkeypatch, clock):
    """The link's task stopped (a neighbour gone, the service stopping) in the very loop turn its
    TCP connection came up: the connection the wait dropped is closed, not left to the GC."""
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/client")),
                         clock=SYSTEM if clock == "system" else ManualClock(wall=time.time()))
    dialing: list[asyncio.Task] = []
    writers = opened_writers(monkeypatch, then=lambda: dialing[0].cancel())
    dialing.append(asyncio.ensure_future(client.connect("127.0.0.1", server.test_port)))
    with pytest.raises(asyncio.CancelledError):
        await dialing[0]
    await until(lambda: writers and writers[0].is_closing(), what="the dropped connection closed")
    del writers[:]
    gc.collect()  # with the warning filter: an unclosed writer collected here fails the test
    client.close()


async def test_a_handshake_failing_with_an_unexpected_error_closes_its_connection(ca, server, monkeypatch):
    """Not a refusal: the endpoint's thread pool is gone (closed while a link still dials). The
    error propagates, the connection does not stay open."""
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/client")))
    client.close()
    writers = opened_writers(monkeypatch)
    with pytest.raises(RuntimeError):
        await client.connect("127.0.0.1", server.test_port)
    assert writers and writers[0].is_closing()


async def test_a_handler_abandoned_at_shutdown_closes_its_stream(ca, server):
    """A handed-over stream whose handler is still running when the endpoint closes is closed
    with it, and the peer's read ends."""
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/client")))
    stream = await client.connect("127.0.0.1", server.test_port)
    try:
        await until(lambda: server.test_streams, what="the stream handed to the handler")
        await server.aclose()
        assert server.test_streams[0].closed
        with pytest.raises(TlsClosed):
            while await stream.recv():
                pass
            raise TlsClosed("clean end")
    finally:
        await stream.close()
        client.close()
