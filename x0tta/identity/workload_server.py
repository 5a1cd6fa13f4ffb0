"""A SPIFFE Workload API server backed by the built-in CA: the stand-in for a SPIRE agent.

SPIRE's binaries are not available where x0tta is built and tested, yet the Workload API source
must be shown against the real protocol. This server speaks it: gRPC over a Unix socket, the
``SpiffeWorkloadAPI`` service from the protobufs shipped in the ``spiffe`` package, the
``workload.spiffe.io: true`` security header required on every call (SPIRE refuses a call without
it, and so does this server). It serves one SVID, issued by a
:class:`~x0tta.identity.ca.CertificateAuthority`, and rotates it the way a SPIRE agent does: a
new key and certificate once ``rotate_fraction`` of the lifetime has passed, pushed at once to
every open ``FetchX509SVID`` stream. Tests and the lab use it; the agent never does.

It does no workload attestation (every caller gets the one SVID) and no JWT-SVIDs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import X509Svid

HEADER_KEY, HEADER_VALUE = "workload.spiffe.io", "true"


def _der_chain(svid: X509Svid) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in svid.cert_chain)


def _der_key(svid: X509Svid) -> bytes:
    key = serialization.load_pem_private_key(svid.private_key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):  # type: ignore[misc]
    def __init__(self, server: WorkloadApiServer) -> None:
        self.s = server

    def _check_header(self, context: grpc.ServicerContext) -> None:
        md = dict(context.invocation_metadata())
        if md.get(HEADER_KEY) != HEADER_VALUE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")

    def _stream(self, context: grpc.ServicerContext, make: object) -> Iterator[object]:
        self._check_header(context)
        seen = -1
        while context.is_active() and not self.s._stopping:
            with self.s._cond:
                if self.s._generation == seen:
                    self.s._cond.wait(timeout=0.5)
                    continue
                seen = self.s._generation
                message = make()  # type: ignore[operator]
            self.s.responses_sent += 1
            yield message

    def FetchX509SVID(self, request: object, context: grpc.ServicerContext) -> Iterator[object]:
        yield from self._stream(context, self.s._x509_response)

    def FetchX509Bundles(self, request: object, context: grpc.ServicerContext) -> Iterator[object]:
        yield from self._stream(context, self.s._bundles_response)


class WorkloadApiServer:
    """Serve and rotate one SVID on ``socket_path``. ``start()``/``stop()``, or use as a context."""

    def __init__(
        self,
        ca: CertificateAuthority,
        socket_path: str | Path,
        spiffe_id: SpiffeId | str,
        *,
        ttl: float = 10.0,
        rotate_fraction: float = 0.5,
        key_type: KeyType = KeyType.ML_DSA_65,
        federated: dict[str, bytes] | None = None,
    ) -> None:
        self.ca = ca
        self.socket_path = str(socket_path)
        self.spiffe_id = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
        self.ttl = ttl
        self.rotate_fraction = rotate_fraction
        self.key_type = key_type
        self.federated = dict(federated or {})
        self.rotations = 0
        self.responses_sent = 0
        self._cond = threading.Condition()
        self._generation = 0
        self._svid: X509Svid | None = None
        self._stopping = False
        self._server: grpc.Server | None = None
        self._rotator: threading.Thread | None = None
        self._wake = threading.Event()

    # -- state -------------------------------------------------------------------------------
    @property
    def svid(self) -> X509Svid:
        assert self._svid is not None, "server not started"
        return self._svid

    def rotate(self) -> X509Svid:
        """Issue a new SVID now and push it to every stream."""
        svid = self.ca.issue(self.spiffe_id, self.ttl, key_type=self.key_type)
        with self._cond:
            if self._svid is not None:
                self.rotations += 1
            self._svid = svid
            self._generation += 1
            self._cond.notify_all()
        return svid

    def set_federated(self, bundles: dict[str, bytes]) -> None:
        """Replace the federated bundles (trust domain -> concatenated DER roots); pushed at once."""
        with self._cond:
            self.federated = dict(bundles)
            self._generation += 1
            self._cond.notify_all()

    def _bundle_der(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.ca.bundle().roots)

    def _x509_response(self) -> object:
        svid = self.svid
        return workload_pb2.X509SVIDResponse(
            svids=[
                workload_pb2.X509SVID(
                    spiffe_id=str(svid.spiffe_id),
                    x509_svid=_der_chain(svid),
                    x509_svid_key=_der_key(svid),
                    bundle=self._bundle_der(),
                )
            ],
            federated_bundles={f"spiffe://{td}": der for td, der in self.federated.items()},
        )

    def _bundles_response(self) -> object:
        bundles = {f"spiffe://{self.ca.trust_domain}": self._bundle_der()}
        bundles.update({f"spiffe://{td}": der for td, der in self.federated.items()})
        return workload_pb2.X509BundlesResponse(bundles=bundles)

    def _rotate_loop(self) -> None:
        while not self._stopping:
            due = self.svid.renew_at(self.rotate_fraction) - time.time()
            if self._wake.wait(timeout=max(0.0, due)):
                return
            if not self._stopping:
                self.rotate()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WorkloadApiServer:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.rotate()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="wlapi"))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(_Servicer(self), self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        self._server.start()
        self._rotator = threading.Thread(target=self._rotate_loop, name="wlapi-rotate", daemon=True)
        self._rotator.start()
        return self

    def stop(self, grace: float = 0.5) -> None:
        self._stopping = True
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self._rotator is not None:
            self._rotator.join(timeout=5)
            self._rotator = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def __enter__(self) -> WorkloadApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
