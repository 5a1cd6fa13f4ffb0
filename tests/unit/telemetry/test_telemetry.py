from __future__ import annotations

import asyncio
import io
import json

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter

from x0tta.telemetry import logging as tlog
from x0tta.telemetry.http import HttpEndpoint
from x0tta.telemetry.metrics import LabelCap


def test_json_log_lines_carry_standard_fields_and_trace_ids():
    out = io.StringIO()
    tlog.configure(node_id="n1", level="info", levels={"mesh": "debug"}, fmt="json", stream=out)
    log = tlog.get_logger("mesh")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("reconcile") as span:
        log.debug("drift_corrected", key="orig_interval")
    tlog.get_logger("heal").debug("hidden")
    tlog.get_logger("heal").info("shown")
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in recs] == ["drift_corrected", "shown"]
    first = recs[0]
    assert list(first)[:5] == ["timestamp", "level", "node", "subsystem", "event"]
    assert first["node"] == "n1" and first["subsystem"] == "mesh" and first["level"] == "debug"
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in recs[1]


def test_label_cap_folds_overflow_into_a_counter():
    reg = CollectorRegistry()
    overflow = Counter("x0tta_metrics_label_overflow_total", "x", ["metric"], registry=reg)
    cap = LabelCap("x0tta_mesh_neighbor_tq", 2, overflow)
    assert cap.admit("a") and cap.admit("b") and cap.admit("a")
    assert not cap.admit("c")
    assert reg.get_sample_value("x0tta_metrics_label_overflow_total", {"metric": "x0tta_mesh_neighbor_tq"}) == 1
    cap.forget("a")
    assert cap.admit("c")


async def test_http_endpoint_paths_and_bad_requests():
    reg = CollectorRegistry()
    ready = {"value": True}
    ep = HttpEndpoint(reg, lambda: (ready["value"], {"state": "ok"}))
    port = await ep.start("127.0.0.1", 0)

    async def get(raw: bytes) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(raw)
        data = await r.read()
        w.close()
        return data

    assert (await get(b"GET /healthz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert (await get(b"GET /readyz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
    ready["value"] = False
    assert (await get(b"GET /readyz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 503")
    assert (await get(b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
    assert (await get(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
    assert (await get(b"GET /" + b"a" * 10000 + b"\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await get(b"\x00\xff garbage\r\n\r\n")).startswith(b"HTTP/1.1 4")
    await ep.stop()
