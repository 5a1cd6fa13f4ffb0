"""A throwaway PKI for the peer tests and benchmarks (in the spirit of trustme).

Makes ML-DSA-65 (or ECDSA P-256, for the classical baseline) roots and X509-SVIDs with exactly the
knobs the refusal tests need: validity window, URI SANs, CA flag, key type. It is not the
built-in CA (``x0tta.identity``); it exists so that the transport can be tested against
certificates that the real CA refuses to issue (two URI SANs, a CA as leaf, expired ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId, SpiffeIdError
from x0tta.identity.core.types import RevocationList, TrustBundle, X509Svid
from x0tta.peer.tls import Credentials
from x0tta.telemetry.testing import StandaloneContext

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _new_key(kind: str):
    if kind == "mldsa65":
        return mldsa.MLDSA65PrivateKey.generate()
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key kind {kind!r}")


def _sign(builder: x509.CertificateBuilder, key) -> x509.Certificate:
    algorithm = hashes.SHA256() if isinstance(key, ec.EllipticCurvePrivateKey) else None
    return builder.sign(key, algorithm)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Leaf:
    cert: x509.Certificate
    key: object
    chain: tuple[x509.Certificate, ...] = ()  # intermediates, never the root

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)

    def svid(self) -> X509Svid:
        """As this node's SVID; built directly, so that even a bad certificate can be presented."""
        uris = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        first = uris.get_values_for_type(x509.UniformResourceIdentifier)[0]
        try:
            sid = SpiffeId.parse(first)
        except SpiffeIdError:
            sid = SpiffeId.parse("spiffe://invalid.test/bad")
        return X509Svid(
            sid, (self.cert, *self.chain), self.key_pem, self.cert.not_valid_before_utc, self.cert.not_valid_after_utc
        )


class TestCA:
    """A root CA for one trust domain."""

    __test__ = False  # not a pytest class

    def __init__(self, trust_domain: str = "mesh.test", kind: str = "mldsa65", now: float | None = None):
        self.trust_domain = trust_domain
        self.kind = kind
        self.key = _new_key(kind)
        start = _EPOCH + dt.timedelta(seconds=(now if now is not None else _wall()) - 3600)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"x0tta test root {trust_domain}")])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        self.cert = _sign(builder, self.key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def bundle(self) -> TrustBundle:
        return TrustBundle(self.trust_domain, (self.cert,))

    def credentials(self, leaf: Leaf, *, allowed: tuple[str, ...] = (), revoked: tuple[Leaf, ...] = (),
                    extra: tuple[TestCA, ...] = ()) -> Credentials:
        """Credentials of a node holding ``leaf`` and trusting this CA (and ``extra`` CAs)."""
        bundles = {self.trust_domain: self.bundle(), **{ca.trust_domain: ca.bundle() for ca in extra}}
        revs = ()
        if revoked:
            revs = (RevocationList(self.cert.subject, frozenset(r.cert.serial_number for r in revoked), 0.0, None),)
        policy = AuthorizationPolicy.build(self.trust_domain, allowed_ids=allowed)
        return Credentials(leaf.svid(), bundles, policy, revs)

    def issue(
        self,
        spiffe_id: str | None = None,
        *,
        path: str = "/node/a",
        uris: list[str] | None = None,
        ttl: float = 3600.0,
        not_before: float | None = None,
        is_ca: bool = False,
        kind: str | None = None,
    ) -> Leaf:
        """An X509-SVID; ``uris`` overrides the SAN list (to make bad ones)."""
        key = _new_key(kind or self.kind)
        if uris is None:
            uris = [spiffe_id or f"spiffe://{self.trust_domain}{path}"]
        start = not_before if not_before is not None else _wall() - 60
        ttl = ttl + 60 if not_before is None else ttl
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x0tta test")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_EPOCH + dt.timedelta(seconds=start))
            .not_valid_after(_EPOCH + dt.timedelta(seconds=start + ttl))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, is_ca, is_ca, False, False), critical=True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if not is_ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        if uris:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=True
            )
        return Leaf(_sign(builder, self.key), key)


def _wall() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


# -- running the peer subsystem outside the agent (tests, benchmarks) ------------------------------


class StaticIdentity:
    """An identity provider over an in-memory source; :meth:`rotate` publishes new material."""

    def __init__(self, creds: Credentials) -> None:
        from x0tta.identity.source import SourceBase

        self.source = SourceBase()
        self.source._publish(creds.svid, creds.bundles, creds.revocations)

    async def wait_source(self, timeout: float | None = None) -> object:
        return self.source

    def rotate(self, creds: Credentials) -> None:
        self.source._publish(creds.svid, creds.bundles, creds.revocations)


@dataclass
class FakeContext(StandaloneContext):
    """What the agent hands a subsystem, with a private metrics registry."""

    name: str = "peer"


@contextlib.asynccontextmanager
async def running(service, ctx: FakeContext, ready_timeout: float = 15.0):
    """Run a subsystem's ``run(ctx)`` as a task until the block ends; waits for ``wait_ready``."""
    task = asyncio.create_task(service.run(ctx))
    try:
        await service.wait_ready(ready_timeout)
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def sample(ctx: FakeContext, name: str, **labels: str) -> float:
    """A metric's value in the context's registry (0 when it has no such sample yet)."""
    return ctx.registry.get_sample_value(name, labels) or 0.0
