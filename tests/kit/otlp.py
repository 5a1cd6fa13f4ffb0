"""An OTLP/gRPC trace receiver for the tests: it speaks the collector's real protocol and keeps the
spans it is sent.

It serves ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` (the service an
OpenTelemetry Collector's ``otlp`` receiver serves on 4317) over plain HTTP/2 on a free loopback
port, from opentelemetry-proto's generated servicer: what the agent's ``OTLPSpanExporter`` sends
is decoded as a collector would decode it. Each span is kept flat, with the resource it came with
(``service.instance.id`` is the node), for the tests to find traces in.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    node: str  # the resource's service.instance.id
    service: str  # the resource's service.name
    attributes: dict[str, Any]


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class _Servicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        got = []
        for rs in request.resource_spans:
            res = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
                        name=s.name, node=str(res.get("service.instance.id", "")),
                        service=str(res.get("service.name", "")),
                        attributes={a.key: _value(a.value) for a in s.attributes}))
        with self.receiver.lock:
            self.receiver.spans.extend(got)
            self.receiver.requests += 1
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """``with OtlpReceiver() as rx``: listening on ``rx.endpoint`` (``http://127.0.0.1:PORT``)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Servicer(self), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"

    def received(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans by trace id."""
        out: dict[str, list[ReceivedSpan]] = {}
        for s in self.received():
            out.setdefault(s.trace_id, []).append(s)
        return out

    def __enter__(self) -> Self:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None).wait()
