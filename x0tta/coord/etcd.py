"""A small async etcd v3 client over etcd's gRPC-JSON gateway: HTTP/1.1 by h11, on asyncio streams.

Only what rollouts need: range, txn (compares on mod/create revision, version, lease), lease grant,
keepalive and revoke. Every request is one HTTPS POST of JSON to ``/v3/...`` (keys and values
base64, 64-bit numbers as strings: the gateway's proto3 JSON mapping), with the client's TLS
certificate, to one of the members, on a connection kept open to that member; why this and not
gRPC, and why not a general HTTP client, is in docs/coordination.md.

Failures are typed (:mod:`x0tta.common.errors`):

* :class:`EtcdUnavailable` (temporary): no member answered within ``timeout``, or a member said it
  has no leader. Reads, lease keepalives and revokes are tried on every member in turn first;
  a txn is tried on the next member only when the connection was never made (nothing was sent),
  because a txn whose answer was lost may have been applied: then ``ambiguous`` is set and the
  caller reads back what happened (the rollout code does: it never acts on a write it did not
  see succeed).
* :class:`EtcdError` (permanent): etcd refused the request (bad request, permission, a lease
  that does not exist).

The member that answered last is asked first next time; a member that failed goes to the back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11

from x0tta.common.errors import PermanentError, TemporaryError

# gRPC status codes the gateway passes on (google.rpc.Code) that mean "try again / elsewhere".
_RETRYABLE_CODES = {1, 4, 8, 10, 14}  # CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
_LEASE_NOT_FOUND = "requested lease not found"
MAX_BODY = 8 << 20  # an answer larger than this is refused: the rollouts' keys are a few KiB


class EtcdUnavailable(TemporaryError):
    """No etcd member answered; ``ambiguous``: a write was sent and its outcome is unknown."""

    def __init__(self, message: str, *, ambiguous: bool = False, delay: float | None = None) -> None:
        super().__init__(message, delay)
        self.ambiguous = ambiguous


class EtcdError(PermanentError):
    """etcd refused the request."""


class CertificateRefused(EtcdError):
    """A member refused this client's certificate (not of its CA, expired, not a client certificate)."""


class LeaseLost(EtcdError):
    """The lease expired or was revoked."""


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _prefix_end(key: str) -> str:
    """The range end that selects every key starting with ``key`` (etcd's "prefix" convention)."""
    b = bytearray(key.encode())
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return _b64(bytes(b[: i + 1]))
    return _b64(b"\0")


def _tls_alert(exc: BaseException) -> ssl.SSLError | None:
    """The TLS alert behind a failed exchange, if a member refused our certificate (TLS 1.3 sends
    that alert after the handshake, so it surfaces on the first read)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError) and "CERTIFICATE" in str(seen).upper():
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _answer(path: str) -> Iterator[None]:
    """Reading a member's answer: a field missing or of the wrong kind is :class:`EtcdError`."""
    try:
        yield
    except (KeyError, ValueError, TypeError, AttributeError) as exc:  # binascii.Error is a ValueError
        raise EtcdError(f"etcd's answer to {path} is malformed: {type(exc).__name__} {exc}") from exc


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(base64.b64decode(kv.get("key", "")).decode(errors="replace"),
                   base64.b64decode(kv.get("value", "")), int(kv.get("create_revision", 0)),
                   int(kv.get("mod_revision", 0)), int(kv.get("version", 0)), int(kv.get("lease", 0)))


@dataclass(frozen=True)
class Compare:
    """One compare of a txn: ``target`` of ``key`` ``result`` ``value`` (e.g. MOD of k EQUAL 7)."""

    key: str
    target: str  # VERSION, CREATE, MOD, VALUE, LEASE
    value: int | bytes
    result: str = "EQUAL"

    def to_json(self) -> dict[str, Any]:
        field_name = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
                      "VALUE": "value", "LEASE": "lease"}[self.target]
        v: Any = _b64(self.value) if isinstance(self.value, bytes) else str(self.value)
        return {"key": _b64(self.key), "target": self.target, "result": self.result, field_name: v}


def absent(key: str) -> Compare:
    return Compare(key, "CREATE", 0)


def mod_revision_is(key: str, rev: int) -> Compare:
    return Compare(key, "MOD", rev)


@dataclass(frozen=True)
class Op:
    kind: str  # put, delete, range
    key: str
    value: bytes = b""
    lease: int = 0
    prefix: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.kind == "put":
            body: dict[str, Any] = {"key": _b64(self.key), "value": _b64(self.value)}
            if self.lease:
                body["lease"] = str(self.lease)
            return {"request_put": body}
        rng: dict[str, Any] = {"key": _b64(self.key)}
        if self.prefix:
            rng["range_end"] = _prefix_end(self.key)
        return {"request_delete_range" if self.kind == "delete" else "request_range": rng}


def put(key: str, value: bytes | str, lease: int = 0) -> Op:
    return Op("put", key, value.encode() if isinstance(value, str) else value, lease)


def delete(key: str, prefix: bool = False) -> Op:
    return Op("delete", key, prefix=prefix)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]] = field(default_factory=list)


class _NotSent(Exception):
    """No connection to the member could be made: nothing of the request left this node."""


class _Connection:
    """One HTTP/1.1 connection to a member: requests one after another, kept open between them
    while both ends allow it. h11 holds the protocol's state; this only moves its bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.http = h11.Connection(h11.CLIENT)

    @property
    def reusable(self) -> bool:
        """Idle on both sides and not closed by the member in the meantime."""
        return (self.http.our_state is h11.IDLE and self.http.their_state is h11.IDLE
                and not self.reader.at_eof() and not self.writer.is_closing())

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """The status and body of the answer to one POST. Raises ``OSError``, ``ssl.SSLError`` or
        ``h11.ProtocolError`` (a broken answer, the connection closed before its end)."""
        http = self.http
        out = http.send(h11.Request(method="POST", target=path, headers=[
            ("Host", self.host), ("Content-Type", "application/json"), ("Accept", "application/json"),
            ("Content-Length", str(len(body)))]))
        out = (out or b"") + (http.send(h11.Data(data=body)) or b"") + (http.send(h11.EndOfMessage()) or b"")
        self.writer.write(out)
        await self.writer.drain()
        status, parts, size = 0, [], 0
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await self.reader.read(65536))  # b"": the member closed
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError(f"answer larger than {MAX_BODY} bytes")
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("the member closed the connection before its answer")
            # h11.InformationalResponse (100 Continue): wait for the final answer
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()  # keep-alive: the next request goes on this connection
        return status, b"".join(parts)

    def close(self) -> None:
        self.writer.close()


class EtcdClient:
    """``async with EtcdClient(endpoints, cert_file=..., key_file=..., ca_file=...) as c:``."""

    def __init__(self, endpoints: Sequence[str], *, cert_file: str = "", key_file: str = "", ca_file: str = "",
                 timeout: float = 2.0) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoints given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.cert_file, self.key_file, self.ca_file = cert_file, key_file, ca_file
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        self._opened = False
        self._idle: dict[str, _Connection] = {}  # member -> its open connection, between requests
        self.requests = 0
        self.failovers = 0

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file or None)
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise EtcdError(f"cannot load the etcd TLS files ({self.cert_file}, {self.ca_file}): {exc}") from exc
        return ctx

    async def open(self) -> EtcdClient:
        if not self._opened:
            for e in self.endpoints:
                u = urlsplit(e)
                try:
                    u.port  # noqa: B018 - parsed here: a bad port is this error, not a ValueError later
                except ValueError as exc:
                    raise EtcdError(f"etcd endpoint {e!r}: {exc}") from None
                if u.scheme not in ("http", "https") or not u.hostname:
                    raise EtcdError(f"etcd endpoint {e!r}: expected http(s)://host:port")
            if any(e.startswith("https://") for e in self.endpoints):
                self._tls = await asyncio.to_thread(self._ssl_context)  # reads files: off the loop
            self._opened = True
        return self

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conn in idle.values():
            conn.close()
        self._opened = False

    async def __aenter__(self) -> EtcdClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport --------------------------------------------------------------------------------

    async def _connect(self, endpoint: str) -> _Connection:
        u = urlsplit(endpoint)
        tls = self._tls if u.scheme == "https" else None
        port = u.port or (443 if tls is not None else 80)
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    u.hostname, port, ssl=tls, server_hostname=u.hostname if tls is not None else None, limit=1 << 16)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise _NotSent(f"{type(exc).__name__} {exc}".strip()) from exc
        return _Connection(reader, writer, u.netloc)

    async def _exchange(self, endpoint: str, path: str, body: bytes, idempotent: bool) -> tuple[int, bytes]:
        """One request to ``endpoint`` on its kept connection, or a new one. A kept connection the
        member had closed unseen is replaced, and a read asked again on a new one; a write is not
        (whether it landed is then unknown)."""
        conn = self._idle.pop(endpoint, None)
        if conn is not None and not conn.reusable:
            conn.close()
            conn = None
        for attempt in range(2):
            kept = conn is not None
            if conn is None:
                conn = await self._connect(endpoint)
            try:
                async with asyncio.timeout(self.timeout):
                    status, data = await conn.post(path, body)
            except BaseException as exc:
                conn.close()
                conn = None
                # a kept connection the member closed unseen: a read is asked once more on a new
                # one (a member that does not answer in time is not asked twice: TimeoutError)
                if (kept and attempt == 0 and idempotent and not isinstance(exc, TimeoutError)
                        and isinstance(exc, (OSError, h11.ProtocolError))):
                    continue
                raise
            if conn.reusable and endpoint not in self._idle:
                self._idle[endpoint] = conn
            else:  # not reusable, or requests overlapped: one connection is kept per member
                conn.close()
            return status, data
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, path: str, body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        await self.open()
        payload = json.dumps(body, separators=(",", ":")).encode()
        last = ""
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoints[0]
            self.requests += 1
            sent = True
            try:
                status, raw = await self._exchange(endpoint, path, payload, idempotent)
            except _NotSent as exc:
                sent, last = False, f"{endpoint}: {exc}"
            except (OSError, TimeoutError, ssl.SSLError, h11.ProtocolError) as exc:
                refused = _tls_alert(exc)
                if refused is not None:  # TLS 1.3: the member's refusal of our certificate comes after the handshake
                    raise CertificateRefused(f"{endpoint} refused this client's certificate: {refused}") from exc
                last = f"{endpoint}: {type(exc).__name__} {exc}".rstrip()
            else:
                data = self._decode(raw)
                if status == 200:
                    return data
                try:
                    code = int(data.get("code", 0) or 0)  # the gateway's gRPC code
                except (TypeError, ValueError):
                    code = -1
                msg = str(data.get("error") or data.get("message") or raw[:200].decode(errors="replace"))
                if code not in _RETRYABLE_CODES and status < 500:
                    if _LEASE_NOT_FOUND in msg:
                        raise LeaseLost(msg)
                    raise EtcdError(f"etcd refused {path}: {msg}")
                if _LEASE_NOT_FOUND in msg:
                    raise LeaseLost(msg)
                last = f"{endpoint}: HTTP {status} {msg}"
            # this member failed: ask the others first from now on
            self.endpoints.append(self.endpoints.pop(0))
            self.failovers += 1
            if sent and not idempotent:
                raise EtcdUnavailable(f"etcd write {path} outcome unknown ({last})", ambiguous=True, delay=0.2)
        raise EtcdUnavailable(f"no etcd member answered {path}: {last}", delay=0.5)

    @staticmethod
    def _decode(raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            return {"error": raw[:200].decode(errors="replace")}
        if isinstance(data, dict) and "result" in data and isinstance(data["result"], dict):
            return data["result"]  # streaming endpoints (keepalive) wrap each message
        return data if isinstance(data, dict) else {"error": str(data)[:200]}

    # -- calls ------------------------------------------------------------------------------------

    async def range(self, key: str, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under the prefix) and the store's revision; linearizable."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _prefix_end(key)
        data = await self._post("/v3/kv/range", body)
        with _answer("/v3/kv/range"):
            return [KeyValue.from_json(kv) for kv in data.get("kvs", [])], int(data["header"]["revision"])

    async def get(self, key: str) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        body = {"compare": [c.to_json() for c in compare], "success": [o.to_json() for o in success],
                "failure": [o.to_json() for o in failure]}
        data = await self._post("/v3/kv/txn", body, idempotent=False)
        with _answer("/v3/kv/txn"):
            return TxnResult(bool(data.get("succeeded", False)), int(data["header"]["revision"]),
                             list(data.get("responses", [])))

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        return (await self.txn([], [put(key, value, lease)])).revision

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of ``ttl`` seconds: its id and the TTL etcd granted."""
        data = await self._post("/v3/lease/grant", {"TTL": str(ttl)}, idempotent=False)
        if data.get("error"):
            raise EtcdError(f"lease grant refused: {data['error']}")
        with _answer("/v3/lease/grant"):
            return int(data["ID"]), int(data["TTL"])

    async def lease_keepalive(self, lease: int) -> int:
        """Renew; returns the TTL left. :class:`LeaseLost` when the lease is gone."""
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        with _answer("/v3/lease/keepalive"):
            ttl = int(data.get("TTL", 0) or 0)
        if ttl <= 0:
            raise LeaseLost(f"lease {lease:x} expired")
        return ttl

    async def lease_revoke(self, lease: int) -> None:
        try:
            await self._post("/v3/lease/revoke", {"ID": str(lease)})
        except LeaseLost:
            pass
