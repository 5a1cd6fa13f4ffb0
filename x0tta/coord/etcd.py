"""A small async etcd v3 client over etcd's gRPC-JSON gateway, with httpx.

Only what rollouts need: range, txn (compares on mod/create revision, version, lease), lease grant,
keepalive and revoke. Every request is one HTTPS POST of JSON to ``/v3/...`` (keys and values
base64, 64-bit numbers as strings: the gateway's proto3 JSON mapping), with the client's TLS
certificate, to one of the members; why this and not gRPC is in docs/coordination.md.

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
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from x0tta.common.errors import PermanentError, TemporaryError

# gRPC status codes the gateway passes on (google.rpc.Code) that mean "try again / elsewhere".
_RETRYABLE_CODES = {1, 4, 8, 10, 14}  # CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
_LEASE_NOT_FOUND = "requested lease not found"


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
    """The TLS alert behind an httpx error, if a member refused our certificate (TLS 1.3 sends
    that alert after the handshake, so it surfaces on the first read)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError) and "CERTIFICATE" in str(seen).upper():
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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


class EtcdClient:
    """``async with EtcdClient(endpoints, cert_file=..., key_file=..., ca_file=...) as c:``."""

    def __init__(self, endpoints: Sequence[str], *, cert_file: str = "", key_file: str = "", ca_file: str = "",
                 timeout: float = 2.0) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoints given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.cert_file, self.key_file, self.ca_file = cert_file, key_file, ca_file
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None
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
        if self._http is None:
            verify: ssl.SSLContext | bool = True
            if any(e.startswith("https://") for e in self.endpoints):
                verify = await asyncio.to_thread(self._ssl_context)  # reads files: off the loop
            self._http = httpx.AsyncClient(verify=verify, timeout=self.timeout,
                                           limits=httpx.Limits(max_keepalive_connections=len(self.endpoints)))
        return self

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> EtcdClient:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport --------------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        await self.open()
        assert self._http is not None
        last = ""
        for _ in range(len(self.endpoints)):
            url = self.endpoints[0] + path
            self.requests += 1
            sent = True
            try:
                resp = await self._http.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                sent, last = False, f"{self.endpoints[0]}: {type(exc).__name__} {exc}"
            except httpx.HTTPError as exc:
                refused = _tls_alert(exc)
                if refused is not None:
                    raise CertificateRefused(
                        f"{self.endpoints[0]} refused this client's certificate: {refused}") from exc
                last = f"{self.endpoints[0]}: {type(exc).__name__} {exc}"
            except ssl.SSLError as exc:  # TLS 1.3: the member's refusal of our certificate comes after the handshake
                raise CertificateRefused(f"{self.endpoints[0]} refused this client's certificate: {exc}") from exc
            else:
                data = self._decode(resp)
                code = int(data.get("code", 0) or 0) if resp.status_code != 200 else 0
                if resp.status_code == 200:
                    return data
                msg = str(data.get("error") or data.get("message") or resp.text[:200])
                if code not in _RETRYABLE_CODES and resp.status_code < 500:
                    if _LEASE_NOT_FOUND in msg:
                        raise LeaseLost(msg)
                    raise EtcdError(f"etcd refused {path}: {msg}")
                if _LEASE_NOT_FOUND in msg:
                    raise LeaseLost(msg)
                last = f"{self.endpoints[0]}: HTTP {resp.status_code} {msg}"
            # this member failed: ask the others first from now on
            self.endpoints.append(self.endpoints.pop(0))
            self.failovers += 1
            if sent and not idempotent:
                raise EtcdUnavailable(f"etcd write {path} outcome unknown ({last})", ambiguous=True, delay=0.2)
        raise EtcdUnavailable(f"no etcd member answered {path}: {last}", delay=0.5)

    @staticmethod
    def _decode(resp: httpx.Response) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            return {"error": resp.text[:200]}
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
        return [KeyValue.from_json(kv) for kv in data.get("kvs", [])], int(data["header"]["revision"])

    async def get(self, key: str) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        body = {"compare": [c.to_json() for c in compare], "success": [o.to_json() for o in success],
                "failure": [o.to_json() for o in failure]}
        data = await self._post("/v3/kv/txn", body, idempotent=False)
        return TxnResult(bool(data.get("succeeded", False)), int(data["header"]["revision"]),
                         list(data.get("responses", [])))

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        return (await self.txn([], [put(key, value, lease)])).revision

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of ``ttl`` seconds: its id and the TTL etcd granted."""
        data = await self._post("/v3/lease/grant", {"TTL": str(ttl)}, idempotent=False)
        if data.get("error"):
            raise EtcdError(f"lease grant refused: {data['error']}")
        return int(data["ID"]), int(data["TTL"])

    async def lease_keepalive(self, lease: int) -> int:
        """Renew; returns the TTL left. :class:`LeaseLost` when the lease is gone."""
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        ttl = int(data.get("TTL", 0) or 0)
        if ttl <= 0:
            raise LeaseLost(f"lease {lease:x} expired")
        return ttl

    async def lease_revoke(self, lease: int) -> None:
        try:
            await self._post("/v3/lease/revoke", {"ID": str(lease)})
        except LeaseLost:
            pass
