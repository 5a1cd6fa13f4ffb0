"""The HTTP endpoint operators and Prometheus use: ``/metrics``, ``/healthz``, ``/readyz``.

A deliberately small HTTP/1.1 server on asyncio streams: GET only, one request per connection,
bounded request size, a read timeout. Rendering the exposition can take hundreds of
milliseconds for thousands of series, so it runs in a worker thread and never stalls the loop.

* ``/healthz`` - liveness: 200 while the event loop answers at all.
* ``/readyz`` - readiness: 200 when no subsystem is ``failing`` (``degraded`` is still ready: a
  node without eBPF still routes), 503 otherwise; the body is the per-subsystem health as JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from x0tta.clock import SYSTEM

MAX_REQUEST = 8192
READ_TIMEOUT = 5.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpEndpoint:
    def __init__(self, registry: CollectorRegistry, readiness: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self._registry = registry
        self._readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await SYSTEM.wait_for(self._respond(reader), READ_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            body = await asyncio.to_thread(generate_latest, self._registry)
            return 200, CONTENT_TYPE_LATEST, body
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready, detail = self._readiness()
            return (200 if ready else 503), "application/json", json.dumps(detail).encode() + b"\n"
        return 404, "text/plain", b"not found\n"
