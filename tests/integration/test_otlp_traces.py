"""Traces as a collector receives them: the agent's tracer provider (x0tta.telemetry.tracing,
what ``[tracing] otlp_endpoint`` configures) exports over real OTLP/gRPC to a receiver that speaks
the collector's protocol (tests/kit/otlp.py); a request over a PQ mTLS peer session is one trace
with spans from both nodes (the W3C traceparent travels in the peer frames); and the sampling
decision of the node that starts a trace holds on the node that serves it."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.peer.test_service import settings
from tests.kit.otlp import OtlpReceiver, ReceivedSpan
from tests.kit.pki import TestCA
from tests.kit.wait import until
from x0tta.peer.service import PeerService
from x0tta.peer.testing import FakeContext, StaticIdentity
from x0tta.telemetry.testing import running
from x0tta.telemetry.tracing import provider_for

pytestmark = pytest.mark.integration


async def test_spans_reach_the_receiver_over_otlp_grpc() -> None:
    with OtlpReceiver() as rx:
        provider = provider_for(node_id="n1", otlp_endpoint=rx.endpoint)
        tracer = provider.get_tracer("x0tta.heal")
        with tracer.start_as_current_span("heal.incident", attributes={"heal.kind": "link_down"}) as root, \
                tracer.start_as_current_span("heal.detect"):
            pass
        await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)
        spans = {s.name: s for s in await until(rx.received, timeout=10)}
    assert set(spans) == {"heal.incident", "heal.detect"}
    inc, det = spans["heal.incident"], spans["heal.detect"]
    assert inc.trace_id == f"{root.get_span_context().trace_id:032x}" == det.trace_id
    assert det.parent_span_id == inc.span_id and inc.parent_span_id == ""
    assert (inc.node, inc.service) == ("n1", "x0tta-agent")
    assert inc.attributes == {"heal.kind": "link_down"}


async def request_across(rx: OtlpReceiver, ratio_a: float, ratio_b: float) -> list[ReceivedSpan]:
    """Node a asks node b over a peer session, each exporting to ``rx`` with its own sampling ratio;
    the spans ``rx`` holds once both have flushed."""
    ca = TestCA("mesh.test")
    pa = provider_for(node_id="a", otlp_endpoint=rx.endpoint, sample_ratio=ratio_a)
    pb = provider_for(node_id="b", otlp_endpoint=rx.endpoint, sample_ratio=ratio_b)
    try:
        b = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/b"))))
        ctx_b = FakeContext(settings(0), node_id="b", tracer=pb.get_tracer("x0tta.peer"))
        async with running(b, ctx_b):
            a = PeerService(StaticIdentity(ca.credentials(ca.issue(path="/node/a"))))
            ctx_a = FakeContext(settings(0, [f"127.0.0.1:{b.port}"]), node_id="a", tracer=pa.get_tracer("x0tta.peer"))
            async with running(a, ctx_a):
                assert await a.request(f"127.0.0.1:{b.port}", "peer.info") != b""
        for p in (pa, pb):
            assert await asyncio.to_thread(p.force_flush)  # exported (and acknowledged) before it returns
    finally:
        for p in (pa, pb):
            await asyncio.to_thread(p.shutdown)
    return rx.received()


async def test_one_trace_with_spans_from_both_nodes() -> None:
    with OtlpReceiver() as rx:
        spans = await request_across(rx, 1.0, 1.0)
    (client,) = [s for s in spans if s.name == "peer.request peer.info"]
    (server,) = [s for s in spans if s.name == "peer.serve peer.info"]
    assert (client.node, server.node) == ("a", "b")
    assert server.trace_id == client.trace_id and server.parent_span_id == client.span_id
    assert client.attributes["peer.spiffe_id"] == "spiffe://mesh.test/node/b"


@pytest.mark.parametrize(("ratio_a", "ratio_b", "nodes"), [
    (1.0, 0.0, {"a", "b"}),  # b samples nothing of its own, but follows a's decision to sample
    (0.0, 1.0, set()),  # a does not sample: b, which would sample its own, keeps a's decision
], ids=["sampled-by-the-caller", "dropped-by-the-caller"])
async def test_the_caller_decides_sampling_for_the_whole_trace(ratio_a: float, ratio_b: float,
                                                               nodes: set[str]) -> None:
    with OtlpReceiver() as rx:
        spans = await request_across(rx, ratio_a, ratio_b)
    assert {s.node for s in spans if s.name.startswith(("peer.request", "peer.serve"))} == nodes
