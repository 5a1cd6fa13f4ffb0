"""A throwaway PKI for tests and benchmarks, built from the built-in CA's own certificate code.

Roots and X509-SVIDs come from :mod:`x0tta.identity.core.certs` (the functions the real CA signs
with), so a test presents what the agent would; the knobs the refusal tests need (validity
window, a second URI SAN, a CA as leaf, an ECDSA key, a foreign trust domain) are the options that
module keeps for breaking the rules on purpose. Unlike :class:`x0tta.identity.ca.CertificateAuthority`
nothing touches the disk and nothing refuses to issue.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from x0tta.clock import SYSTEM, Clock
from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId, SpiffeIdError
from x0tta.identity.core import certs
from x0tta.identity.core.types import RevocationList, TrustBundle, X509Svid
from x0tta.peer.tls import Credentials

KINDS = {"mldsa65": certs.KeyType.ML_DSA_65, "p256": certs.KeyType.ECDSA_P256, "mldsa44": certs.KeyType.ML_DSA_44}
ROOT_VALIDITY = 10 * 365 * 86400.0


@dataclass
class Leaf:
    cert: x509.Certificate
    key: certs.SigningKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return certs.private_key_pem(self.key)

    def svid(self) -> X509Svid:
        """As this node's SVID; built directly, so that even a bad certificate can be presented."""
        uris = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        first = uris.get_values_for_type(x509.UniformResourceIdentifier)[0]
        try:
            sid = SpiffeId.parse(first)
        except SpiffeIdError:
            sid = SpiffeId.parse("spiffe://invalid.test/bad")
        return X509Svid(sid, (self.cert,), self.key_pem, self.cert.not_valid_before_utc,
                        self.cert.not_valid_after_utc)


class TestCA:
    """A root CA for one trust domain (ML-DSA-65, or ``kind="p256"`` for the classical baseline).

    Validity is counted on ``clock``: give it the manual clock a service under test runs on, and
    its certificates are current in that service's time.
    """

    __test__ = False  # not a pytest class

    def __init__(self, trust_domain: str = "mesh.test", kind: str = "mldsa65", clock: Clock = SYSTEM):
        self.trust_domain = trust_domain
        self.clock = clock
        self.kind = kind
        self.key = certs.generate_key(KINDS[kind])
        start = clock.time() - 3600  # older than any leaf a test backdates
        self.cert = certs.build_root(self.key, trust_domain, start, ROOT_VALIDITY)

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
        extra_uris: tuple[str, ...] = (),
        ttl: float = 3600.0,
        not_before: float | None = None,
        is_ca: bool = False,
        kind: str | None = None,
    ) -> Leaf:
        """An X509-SVID for ``spiffe_id`` (default: this trust domain and ``path``), valid from
        ``not_before`` (default: a minute ago) for ``ttl`` seconds; ``extra_uris`` adds URI SANs."""
        key = certs.generate_key(KINDS[kind or self.kind])
        start = self.clock.time() - 60 if not_before is None else not_before
        sid = SpiffeId.parse(spiffe_id or f"spiffe://{self.trust_domain}{path}")
        end = start + ttl + (60 if not_before is None else 0)
        cert = certs.build_leaf(self.key, self.cert, key.public_key(), sid, start, end, extra_uris=extra_uris,
                                leaf_is_ca=is_ca)
        return Leaf(cert, key)
