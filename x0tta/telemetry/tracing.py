"""OpenTelemetry tracing: a tracer provider with this node's resource, OTLP export when configured.

Spans are always created (so trace ids reach the logs and peer frames) even when nothing exports
them; ``[tracing] otlp_endpoint`` turns export on. Sampling is parent-based with a ratio for new
root traces, so a trace started by a peer keeps the decision that peer made.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from x0tta import __version__

_provider: TracerProvider | None = None
_PROPAGATOR = TraceContextTextMapPropagator()


def provider_for(
    *, node_id: str, otlp_endpoint: str = "", sample_ratio: float = 1.0, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A tracer provider for this node: its resource, parent-based ratio sampling, and a batch
    export to ``exporter``, or to an OTLP/gRPC collector at ``otlp_endpoint`` (plain HTTP/2 when the
    address starts with ``http://``, TLS otherwise), or nowhere."""
    resource = Resource.create(
        {"service.name": "x0tta-agent", "service.version": __version__, "service.instance.id": node_id}
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=otlp_endpoint.startswith("http://"))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure(
    *, node_id: str, otlp_endpoint: str = "", sample_ratio: float = 1.0, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install the process-wide tracer provider (once; later calls return the first)."""
    global _provider
    if _provider is not None:
        return _provider
    provider = provider_for(node_id=node_id, otlp_endpoint=otlp_endpoint, sample_ratio=sample_ratio, exporter=exporter)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def traceparent_of(span: trace.Span) -> str | None:
    """``span``'s W3C traceparent (Trace Context, section 3.2: ``00-trace id-span id-flags``), to
    carry to another node (a peer request, a mesh alert); None for a span with no valid context."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def context_of(traceparent: str | None) -> Context | None:
    """The context a span made on receipt of ``traceparent`` is started in (its parent, and the
    sender's sampling decision); None when there is none to join."""
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


def get_tracer(subsystem: str) -> Any:
    return trace.get_tracer(f"x0tta.{subsystem}", __version__)


def shutdown() -> None:
    if _provider is not None:
        _provider.shutdown()
