"""Building the built-in CA's certificates and revocation lists. Pure: keys and times in, objects out.

What is built follows the X509-SVID specification (see :mod:`x0tta.identity.core.types`):

* the root is the trust domain's signing authority: a self-signed CA certificate whose one URI SAN
  is the trust domain's own SPIFFE ID (``spiffe://<td>``, no path, as SPIFFE-ID.md 3.1 asks),
  basicConstraints cA=true pathLen=0 (no intermediates: every extra certificate costs ~5 KB per
  ML-DSA handshake), keyCertSign and cRLSign;
* a leaf is an X509-SVID: an empty subject and a critical SAN holding exactly one URI (RFC 5280
  4.2.1.6 requires the SAN to be critical when the subject is empty; the empty subject saves
  bytes on every handshake), cA=false, digitalSignature only, extended key usage serverAuth and
  clientAuth (X509-SVID 4.4), and the authority key id so a bundle holding an old and a new root
  during a root rollover still selects the right one;
* a revocation list is an X.509 CRL (RFC 5280 section 5) signed by the root itself: cryptography
  signs CRLs with ML-DSA-65 like certificates, so there is no home-made format to get wrong.

ML-DSA keys sign without a separate hash (``sign(key, None)``); ECDSA keys sign with SHA-256.
The options that break the rules on purpose (``extra_uris``, ``sans``, ``leaf_is_ca``, no key usage)
exist for tests and the lab, which must show that peers refuse such certificates.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from x0tta.common.spiffe_id import SpiffeId, SpiffeIdError
from x0tta.identity.core.types import X509Svid

CLOCK_SKEW = timedelta(seconds=60)
"""Certificates are dated this much before issuance, so a peer whose clock is a little behind
accepts them; short-lived leaves by at most a tenth of their lifetime (:func:`backdate`), so that
renewal at half-life still falls after issuance."""


def backdate(ttl: float) -> float:
    return min(CLOCK_SKEW.total_seconds(), ttl / 10)


class KeyType(enum.StrEnum):
    ML_DSA_65 = "ml-dsa-65"
    ECDSA_P256 = "ecdsa-p256"
    # A leaf key weaker than the ML-DSA-65 peers accept: only for the attack drill and tests that
    # show it refused (`x0tta ca` does not offer it, and a CA key is never one).
    ML_DSA_44 = "ml-dsa-44"


ISSUED_KEY_TYPES = (KeyType.ML_DSA_65, KeyType.ECDSA_P256)
"""The key types `x0tta ca` and the identity settings offer."""

SigningKey = mldsa.MLDSA65PrivateKey | ec.EllipticCurvePrivateKey


def generate_key(key_type: KeyType) -> SigningKey:
    if key_type is KeyType.ML_DSA_65:
        return mldsa.MLDSA65PrivateKey.generate()
    if key_type is KeyType.ML_DSA_44:
        return mldsa.MLDSA44PrivateKey.generate()  # type: ignore[return-value]
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: SigningKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM: unencrypted (the form pyOpenSSL loads ML-DSA keys from), or encrypted with
    ``passphrase`` (the CA's own key at rest)."""
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_signing_key(pem: bytes, passphrase: bytes | None = None) -> SigningKey:
    """Raises TypeError when the key is encrypted and no passphrase is given, ValueError when the
    passphrase is wrong or the key is not an ML-DSA-65 or P-256 key."""
    key = serialization.load_pem_private_key(pem, password=passphrase or None)
    if not isinstance(key, (mldsa.MLDSA65PrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported CA key type {type(key).__name__}")
    return key


def _hash_for(key: SigningKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, mldsa.MLDSA65PrivateKey) else hashes.SHA256()


def key_type_of(key: SigningKey) -> KeyType:
    return KeyType.ML_DSA_65 if isinstance(key, mldsa.MLDSA65PrivateKey) else KeyType.ECDSA_P256


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def build_root(key: SigningKey, trust_domain: str, now: float, validity: float) -> x509.Certificate:
    """A self-signed root for ``trust_domain``, valid from ``now`` for ``validity`` seconds."""
    td_id = SpiffeId(trust_domain)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x0tta"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"x0tta CA {trust_domain}"[:64]),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now) - CLOCK_SKEW)
        .not_valid_after(_utc(now + validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(td_id))]), critical=False)
        .add_extension(ski, critical=False)
        .sign(key, _hash_for(key))
    )


_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def build_leaf(
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    public_key: object,
    spiffe_id: SpiffeId,
    not_before: float,
    not_after: float,
    *,
    serial: int | None = None,
    extra_uris: Sequence[str] = (),
    leaf_is_ca: bool = False,
    key_usage: bool = True,
    sans: Sequence[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """An X509-SVID for ``spiffe_id`` signed by the CA. The keyword options break rules on purpose:
    ``sans`` replaces the subject alternative names ``spiffe_id`` would get (empty: none at all)."""
    uris: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
    uris += [x509.UniformResourceIdentifier(u) for u in extra_uris]
    names = uris if sans is None else list(sans)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=leaf_is_ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    builder = (
        builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if key_usage:
        builder = builder.add_extension(_LEAF_USAGE, critical=True)
    return builder.sign(ca_key, _hash_for(ca_key))


def make_svid(
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    spiffe_id: SpiffeId,
    now: float,
    ttl: float,
    key_type: KeyType = KeyType.ML_DSA_65,
    *,
    not_before: float | None = None,
    extra_uris: Sequence[str] = (),
    leaf_is_ca: bool = False,
    key_usage: bool = True,
) -> X509Svid:
    """A fresh key pair and its X509-SVID, valid until ``now + ttl``.

    ``not_before`` defaults to ``now`` minus :func:`backdate`. The chain holds the leaf only:
    peers have the root in their bundle, and not sending it saves ~5.3 KB per ML-DSA handshake in
    each direction.
    """
    key = generate_key(key_type)
    start = now - backdate(ttl) if not_before is None else not_before
    leaf = build_leaf(
        ca_key,
        ca_cert,
        key.public_key(),
        spiffe_id,
        start,
        now + ttl,
        extra_uris=extra_uris,
        leaf_is_ca=leaf_is_ca,
        key_usage=key_usage,
    )
    return X509Svid(spiffe_id, (leaf,), private_key_pem(key), leaf.not_valid_before_utc, leaf.not_valid_after_utc)


def build_csr(key: SigningKey, spiffe_id: SpiffeId) -> x509.CertificateSigningRequest:
    """A certificate request for ``spiffe_id`` (empty subject, the ID as its one URI SAN)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=True)
        .sign(key, _hash_for(key))
    )


@dataclass(frozen=True)
class CsrFacts:
    """What a CA reads from a certificate request before deciding; ``error`` says why it is unusable
    (then the other fields are None)."""

    spiffe_id: SpiffeId | None
    key_type: KeyType | None = None
    public_key: object = None
    error: str = ""


def read_csr(csr_pem: bytes) -> CsrFacts:
    """Parse a CSR: its own signature must hold, it names exactly one SPIFFE ID, its key is ML-DSA-65
    or ECDSA P-256. Never raises: an unusable request is a :class:`CsrFacts` with ``error``."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid = csr.is_signature_valid
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        key = csr.public_key()
    except (ValueError, TypeError, x509.ExtensionNotFound) as exc:
        return CsrFacts(None, error=f"not a usable certificate request: {exc}")
    if not valid:
        return CsrFacts(None, error="the certificate request's signature does not verify")
    if len(uris) != 1:
        return CsrFacts(None, error=f"the request must name exactly one SPIFFE ID (it names {len(uris)} URIs)")
    if isinstance(key, mldsa.MLDSA65PublicKey):
        key_type = KeyType.ML_DSA_65
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        key_type = KeyType.ECDSA_P256
    else:
        return CsrFacts(None, error=f"unsupported key in the request: {type(key).__name__}")
    try:
        return CsrFacts(SpiffeId.parse(uris[0]), key_type, key)
    except SpiffeIdError as exc:
        return CsrFacts(None, error=f"the request's URI is not a SPIFFE ID: {exc}")


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: float
    reason: x509.ReasonFlags | None = None


def build_crl(
    ca_key: SigningKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[RevokedEntry],
    number: int,
    now: float,
    validity: float,
) -> x509.CertificateRevocationList:
    """A CRL listing ``revoked``, numbered ``number``, to be replaced within ``validity`` seconds."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(_utc(now) - CLOCK_SKEW)
        .next_update(_utc(now + validity))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for entry in revoked:
        rb = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(_utc(entry.revoked_at))
        if entry.reason is not None:
            rb = rb.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(rb.build())
    return builder.sign(ca_key, _hash_for(ca_key))
