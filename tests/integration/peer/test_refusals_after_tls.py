"""What goes wrong after the TLS handshake, on a real peer service: each refusal is counted once,
under its own reason, and logged.

* A client that completes TLS and then breaks the peer protocol before its Hello is refused with
  ``protocol_error`` - not counted as an ``ok`` handshake first.
* A frame that stalls half-way closes the session after ``read_timeout`` with a log line, not only
  the ``x0tta_peer_sessions_closed_total`` count.
* A client whose certificate the server refuses (it learns so after its side of TLS 1.3 is done)
  counts one ``refused/peer_refused`` handshake, not an ``ok`` one as well.
"""

from __future__ import annotations

import struct
import time

import pytest
from structlog.testing import capture_logs

from tests.kit.clock import ManualClock
from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.peer.core import Hello
from x0tta.peer.core.frames import Ping, encode
from x0tta.peer.service import PeerService
from x0tta.peer.testing import FakeContext, StaticIdentity, sample
from x0tta.peer.tls import TlsEndpoint, TlsPolicy
from x0tta.telemetry.testing import running

pytestmark = pytest.mark.integration


def settings(peers=(), **peer):
    return build(AgentSettings, {
        "identity": {"trust_domain": "mesh.test"},
        "peer": {"listen_address": "127.0.0.1", "port": 0, "peers": list(peers), "neighbour_refresh": 0.2,
                 "reconnect_min_delay": 0.05, **peer},
    })


@pytest.fixture(scope="module")
def ca():
    return TestCA("mesh.test")


def refused(logs, reason):
    return [e for e in logs if e["event"] == "peer_handshake_refused" and e["reason"] == reason]


@pytest.mark.parametrize(("first", "code"), [
    (encode(Ping(7)), "unexpected_frame"),  # a well-formed frame the state machine does not allow yet
    (struct.pack(">IB", 1, 99), "unknown_type"),  # bytes that are not a frame of the protocol
], ids=["ping_before_hello", "not_a_frame"])
async def test_a_protocol_error_before_the_hello_is_refused_with_its_own_reason(ca, first, code):
    b, ctx = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b")))), FakeContext(settings())
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/x")))
    with capture_logs() as logs:
        async with running(b, ctx):
            stream = await client.connect("127.0.0.1", b.port)
            await stream.send(first)
            await until(lambda: sample(ctx, "x0tta_peer_handshakes_total", role="server", result="refused",
                                       reason="protocol_error") == 1, 10)
            await stream.close()
    client.close()
    assert sample(ctx, "x0tta_peer_handshakes_total", role="server", result="ok", reason="ok") == 0
    (line,) = refused(logs, "protocol_error")
    assert line["peer"] == "spiffe://mesh.test/node/x" and f"protocol error {code}" in line["detail"]
    assert not refused(logs, "no_hello")
    assert [e["code"] for e in logs if e["event"] == "peer_protocol_error"] == [code]


async def test_a_frame_that_stalls_half_way_is_closed_with_a_log_line(ca):
    """On the manual clock: the stalled frame's ``read_timeout`` passes when the test moves it."""
    clock = ManualClock(wall=time.time())  # the certificates were issued on the host's clock
    b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))), clock=clock)
    ctx = FakeContext(settings(read_timeout=0.3))
    client = TlsEndpoint(TlsPolicy(), ca.credentials(ca.issue(path="/node/x")))
    with capture_logs() as logs:
        async with running(b, ctx):
            stream = await client.connect("127.0.0.1", b.port)
            await stream.send(encode(Hello("x")) + struct.pack(">IB", 256, 4) + b"\x00\x00")  # 3 of 256 bytes
            # the session is up and its first deadline is the read timeout: the 3 bytes arrived
            (session,) = await until(lambda: list(b.inbound))
            await until(lambda: session.core.next_deadline() == clock.monotonic() + 0.3, what="a read deadline")
            await clock.pass_time(0.25)
            assert sample(ctx, "x0tta_peer_sessions_closed_total", reason="read timeout") == 0  # not yet
            await clock.pass_time(0.06)  # now past it
            await until(lambda: sample(ctx, "x0tta_peer_sessions_closed_total", reason="read timeout") == 1, 10)
            await stream.close()
    client.close()
    assert sample(ctx, "x0tta_peer_handshakes_total", role="server", result="ok", reason="ok") == 1
    (line,) = [e for e in logs if e["event"] == "peer_session_timed_out"]
    assert line["reason"] == "read timeout" and line["peer"] == "spiffe://mesh.test/node/x"
    assert "did not complete" in line["detail"]


async def test_a_client_refused_after_its_side_of_tls_counts_one_refusal(ca):
    b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))))
    ctx_b = FakeContext(settings(accepted_signatures=["ML-DSA-87"]), node_id="b")  # refuses a's ML-DSA-65
    async with running(b, ctx_b):
        a = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))))
        ctx_a = FakeContext(settings([f"127.0.0.1:{b.port}"]), node_id="a")
        with capture_logs() as logs:
            async with running(a, ctx_a):
                await until(lambda: sample(ctx_a, "x0tta_peer_handshakes_total", role="client", result="refused",
                                           reason="peer_refused") >= 1, 10)
    assert sample(ctx_a, "x0tta_peer_handshakes_total", role="client", result="ok", reason="ok") == 0
    assert sample(ctx_b, "x0tta_peer_handshakes_total", role="server", result="refused",
                  reason="key_algorithm_not_allowed") >= 1
    assert refused(logs, "peer_refused") and refused(logs, "key_algorithm_not_allowed")
