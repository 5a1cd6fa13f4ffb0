"""SVIDs from a SPIRE agent through the SPIFFE Workload API, via the ``spiffe`` library.

``spiffe.workloadapi.x509_source.X509Source`` keeps a ``FetchX509SVID`` stream open on the SPIRE
agent's Unix socket (gRPC, with the ``workload.spiffe.io`` security header), reconnects with
backoff when the stream breaks, and calls its subscribers from its own watcher thread whenever SPIRE
pushes a new SVID or new bundles. It handles ML-DSA-65 certificates and keys: it parses them with
``cryptography``, which knows ML-DSA (checked against :mod:`x0tta.identity.workload_server`,
2026-11), so no client of our own is needed.

This adapter hops every notification onto the event loop (``call_soon_threadsafe``), converts the
library's objects into x0tta's (:class:`~x0tta.identity.core.types.X509Svid` with the key as PKCS#8
PEM, :class:`~x0tta.identity.core.types.TrustBundle` per trust domain, federated ones included) and
publishes them. Constructing the ``X509Source`` blocks until the first SVID arrives, so it runs in
a thread. SPIRE relies on short SVID lifetimes rather than CRLs (the library drops the ``crl``
field of the response), so this source has no revocation lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from x0tta.common.errors import CapabilityMissing
from x0tta.identity.conditions import SPIRE_SOCKET_MISSING
from x0tta.identity.core.types import SvidError, SvidUnavailable, TrustBundle, X509Svid
from x0tta.identity.source import SourceBase

_SHA256 = hashes.SHA256()

DEFAULT_SOCKET = "/tmp/spire-agent/public/api.sock"  # noqa: S108 - SPIRE's own default path, only read
"""Where a SPIRE agent listens unless told otherwise (its ``socket_path`` default)."""


def resolve_socket(configured: str, environ: Mapping[str, str]) -> str:
    """The socket path: configured, else $SPIFFE_ENDPOINT_SOCKET, else SPIRE's default; no ``unix:``."""
    value = configured or environ.get("SPIFFE_ENDPOINT_SOCKET", "") or DEFAULT_SOCKET
    if value.startswith("unix:"):
        value = value[5:]
        if value.startswith("//"):
            value = "/" + value.lstrip("/")
    return value


def convert_context(ctx: Any) -> tuple[X509Svid, dict[str, TrustBundle]]:
    """spiffe's X509Context -> (our SVID, our bundles by trust domain name)."""
    s = ctx.default_svid
    key_pem = s.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    svid = X509Svid.from_parts(tuple(s.cert_chain), key_pem)
    bundles: dict[str, TrustBundle] = {}
    for b in ctx.x509_bundle_set.bundles:
        roots = sorted(b.x509_authorities, key=lambda c: c.fingerprint(_SHA256))
        bundles[b.trust_domain.name] = TrustBundle(b.trust_domain.name, tuple(roots))
    return svid, bundles


class WorkloadApiSource(SourceBase):
    kind = "workload_api"

    def __init__(
        self,
        socket_path: str = "",
        *,
        timeout: float = 10.0,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        log: Any = None,
    ) -> None:
        super().__init__(log)
        self.socket_path = resolve_socket(socket_path, os.environ if environ is None else environ)
        self.timeout = timeout
        self.clock = clock
        self._x509_source: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if not await asyncio.to_thread(os.path.exists, self.socket_path):
            raise CapabilityMissing(
                SPIRE_SOCKET_MISSING, f"no SPIRE Workload API socket at {self.socket_path}"
            )
        self._loop = asyncio.get_running_loop()
        try:
            self._x509_source = await asyncio.to_thread(self._open)
        except Exception as exc:  # the library raises its own errors (X509SourceError, ArgumentError)
            self.last_error = f"Workload API: {type(exc).__name__}: {exc}"
            raise SvidUnavailable(self.last_error) from exc
        if self.closed:  # closed while the first fetch was pending
            await asyncio.to_thread(self._x509_source.close)
            return
        self._x509_source.subscribe_for_updates(self._from_thread)
        self._pull()
        if self._svid is None:
            raise SvidUnavailable(self.last_error or "Workload API gave no usable SVID")

    def _open(self) -> Any:
        from spiffe.workloadapi.x509_source import X509Source

        return X509Source(socket_path=f"unix:{self.socket_path}", timeout_in_seconds=self.timeout)

    def _from_thread(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing
                loop.call_soon_threadsafe(self._pull)

    def _pull(self) -> None:
        if self.closed or self._x509_source is None:
            return
        try:
            ctx = self._x509_source.get_x509_context()
            svid, bundles = convert_context(ctx)
        except SvidError as exc:
            self.last_error = f"SVID from the Workload API is not usable: {exc}"
            self.log.error("svid_refused", reason=self.last_error)
            return
        except Exception as exc:  # X509SourceError: the stream failed for good
            self.last_error = f"Workload API: {type(exc).__name__}: {exc}"
            self.log.error("workload_api_failed", reason=self.last_error)
            return
        self.last_error = None
        update = self._publish(svid, bundles, ())
        if update is not None:
            self.log.info(
                "svid_received",
                spiffe_id=str(svid.spiffe_id),
                serial=f"{svid.leaf.serial_number:x}",
                expires_in=round(svid.seconds_to_expiry(self.clock()), 1),
                rotated=update.rotated,
                trust_domains=sorted(bundles),
            )

    async def close(self) -> None:
        self.closed = True
        src, self._x509_source = self._x509_source, None
        if src is not None:
            await asyncio.to_thread(src.close)
