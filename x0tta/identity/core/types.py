"""The identity types every other package codes against, and the X509-SVID verification rules.

Pure: this module parses and checks certificates it is handed, with the time it is handed. It
never reads a file or a clock. The peer transport calls :func:`validate_x509_svid` on the chain a
peer presented, and logs and counts the :class:`Reason` it returns.

The rules come from the SPIFFE X509-SVID specification (X509-SVID.md), paraphrased:

* an X.509-SVID carries exactly one URI SAN, and it is the SPIFFE ID; a validator meeting more
  than one must reject the SVID (section 2); a leaf's ID has a path (the bare trust domain ID
  names the signing authority);
* a leaf has basicConstraints cA=false, keyUsage with digitalSignature and without keyCertSign
  or cRLSign (sections 4.1, 4.3);
* a signing (CA) certificate has cA=true and keyCertSign (sections 4.1, 4.3);
* the chain is validated against the bundle of the leaf's own trust domain, not any bundle held
  (section 5), and every certificate on the path is inside its validity window.

Revocation and authorization are x0tta's additions on top: a certificate whose (issuer, serial)
is in a signed revocation list of that issuer is refused, and an authenticated ID must be allowed
by the :class:`~x0tta.common.spiffe_id.AuthorizationPolicy`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, mldsa, rsa

from x0tta.common.errors import DecodeError, PermanentError, TemporaryError
from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId, SpiffeIdError


class Reason(enum.StrEnum):
    """Why a peer's certificate chain was refused. Stable: used as a log field and a metric label."""

    NO_CERTIFICATE = "no_certificate"
    MALFORMED = "malformed"
    NO_URI_SAN = "no_uri_san"
    MULTIPLE_URI_SANS = "multiple_uri_sans"
    BAD_SPIFFE_ID = "bad_spiffe_id"
    LEAF_IS_CA = "leaf_is_ca"
    BAD_KEY_USAGE = "bad_key_usage"
    UNTRUSTED_DOMAIN = "untrusted_domain"
    BAD_CHAIN = "bad_chain"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    KEY_ALGORITHM_NOT_ALLOWED = "key_algorithm_not_allowed"
    UNAUTHORIZED = "unauthorized"


class SvidError(PermanentError):
    """An SVID, bundle or revocation list that cannot be used as given (bad PEM, key mismatch)."""


class SvidUnavailable(TemporaryError):
    """The source has no SVID (yet): SPIRE not reachable, files not written, first fetch pending."""


class SvidRejected(PermanentError):
    """A chain that failed :func:`validate_x509_svid`; raised by :meth:`SvidVerdict.raise_for`."""

    def __init__(self, reason: Reason, detail: str, spiffe_id: SpiffeId | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.spiffe_id = spiffe_id


def key_algorithm(cert: x509.Certificate) -> str:
    """A short name of the certificate's public key type: ML-DSA-65, ECDSA-P256, Ed25519, RSA-2048."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "unknown"
    if isinstance(key, mldsa.MLDSA44PublicKey):
        return "ML-DSA-44"
    if isinstance(key, mldsa.MLDSA65PublicKey):
        return "ML-DSA-65"
    if isinstance(key, mldsa.MLDSA87PublicKey):
        return "ML-DSA-87"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSA-P256", "secp384r1": "ECDSA-P384", "secp521r1": "ECDSA-P521"}.get(
            key.curve.name, f"ECDSA-{key.curve.name}"
        )
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}"
    return type(key).__name__


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_pem_chain(data: bytes) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM blob, in order; :class:`SvidError` if there is none or one is bad."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise SvidError(f"bad PEM certificates: {exc}") from exc
    if not certs:
        raise SvidError("no certificate in PEM data")
    return certs


def load_der_chain(ders: Iterable[bytes]) -> tuple[x509.Certificate, ...]:
    """A peer's certificates from DER; anything cryptography will not parse is
    :class:`SvidRejected` with :attr:`Reason.MALFORMED` (it raises ``InvalidVersion``, not only
    ``ValueError``, on some hostile encodings)."""
    try:
        return tuple(x509.load_der_x509_certificate(bytes(d)) for d in ders)
    except (ValueError, x509.InvalidVersion) as exc:
        raise SvidRejected(Reason.MALFORMED, f"unparsable certificate: {exc}") from exc


def chain_to_pem(chain: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI SANs of ``cert`` ([] when it has no SAN extension); DecodeError if the SAN is malformed."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except (ValueError, x509.DuplicateExtension) as exc:  # DuplicateExtension is no ValueError
        raise DecodeError(f"malformed extensions: {exc}") from exc
    return list(ext.value.get_values_for_type(x509.UniformResourceIdentifier))


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X509-SVID leaf (exactly one URI SAN), or :class:`SvidRejected`."""
    uris = uri_sans(cert)
    if not uris:
        raise SvidRejected(Reason.NO_URI_SAN, "leaf has no URI SAN")
    if len(uris) > 1:
        raise SvidRejected(Reason.MULTIPLE_URI_SANS, f"leaf has {len(uris)} URI SANs")
    try:
        sid = SpiffeId.parse(uris[0])
    except SpiffeIdError as exc:
        raise SvidRejected(Reason.BAD_SPIFFE_ID, f"{exc.code}: {exc}") from exc
    if not sid.path:  # X509-SVID 2: a leaf's ID names a workload, never the trust domain itself
        raise SvidRejected(Reason.BAD_SPIFFE_ID, f"leaf SPIFFE ID {sid} has no path")
    return sid


@dataclass(frozen=True)
class X509Svid:
    """This node's identity: its SPIFFE ID, certificate chain (leaf first) and private key.

    ``private_key_pem`` is PKCS#8 PEM, unencrypted, because that is the one form pyOpenSSL loads
    ML-DSA keys from (``OpenSSL.crypto.load_privatekey(FILETYPE_PEM, ...)``;
    ``PKey.from_cryptography_key`` refuses them). It is never shown in ``repr``.
    ``not_before``/``not_after`` are the leaf's, timezone-aware UTC.
    """

    spiffe_id: SpiffeId
    cert_chain: tuple[x509.Certificate, ...]
    private_key_pem: bytes = field(repr=False)
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_pem(cls, chain_pem: bytes, key_pem: bytes) -> X509Svid:
        """Parse and check (one URI SAN, key matches the leaf); :class:`SvidError` otherwise."""
        chain = load_pem_chain(chain_pem)
        return cls.from_parts(chain, key_pem)

    @classmethod
    def from_parts(cls, chain: Sequence[x509.Certificate], key_pem: bytes) -> X509Svid:
        chain = tuple(chain)
        if not chain:
            raise SvidError("empty certificate chain")
        try:
            sid = spiffe_id_of(chain[0])
        except (SvidRejected, DecodeError) as exc:
            raise SvidError(f"not an X509-SVID: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SvidError(f"bad private key PEM: {type(exc).__name__}") from None
        if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
            raise SvidError("private key does not match the leaf certificate")
        if b"PRIVATE KEY" not in key_pem:
            raise SvidError("private key is not PEM")
        return cls(sid, chain, key_pem, chain[0].not_valid_before_utc, chain[0].not_valid_after_utc)

    @property
    def leaf(self) -> x509.Certificate:
        return self.cert_chain[0]

    @property
    def expires_at(self) -> float:
        """Unix seconds of the leaf's notAfter."""
        return self.not_after.timestamp()

    @property
    def lifetime(self) -> float:
        return (self.not_after - self.not_before).total_seconds()

    @property
    def key_algorithm(self) -> str:
        return key_algorithm(self.leaf)

    def seconds_to_expiry(self, now: float) -> float:
        return self.expires_at - now

    def renew_at(self, fraction: float = 0.5) -> float:
        """Unix seconds at which ``fraction`` of the lifetime has passed (SPIRE renews at 1/2)."""
        return self.not_before.timestamp() + self.lifetime * fraction

    def chain_pem(self) -> bytes:
        return chain_to_pem(self.cert_chain)


@dataclass(frozen=True)
class TrustBundle:
    """The root certificates (X.509 authorities) of one trust domain."""

    trust_domain: str
    roots: tuple[x509.Certificate, ...]

    @classmethod
    def from_pem(cls, trust_domain: str, pem: bytes) -> TrustBundle:
        return cls(trust_domain, load_pem_chain(pem))

    @classmethod
    def from_der_concat(cls, trust_domain: str, der: bytes) -> TrustBundle:
        """Concatenated DER certificates, the Workload API's encoding of bundles."""
        certs = _split_der(der)
        if not certs:
            raise SvidError(f"empty bundle for {trust_domain}")
        return cls(trust_domain, certs)

    def to_pem(self) -> bytes:
        return chain_to_pem(self.roots)

    @functools.cached_property
    def _ders(self) -> frozenset[bytes]:
        return frozenset(c.public_bytes(serialization.Encoding.DER) for c in self.roots)

    def fingerprint_set(self) -> frozenset[bytes]:
        """The roots' DER encodings (computed once: this is on every handshake's path)."""
        return self._ders


def _split_der(der: bytes) -> tuple[x509.Certificate, ...]:
    """Split concatenated DER certificates by their outer SEQUENCE lengths."""
    certs = []
    i = 0
    try:
        while i < len(der):
            if der[i] != 0x30 or i + 2 > len(der):
                raise ValueError("not a DER SEQUENCE")
            first = der[i + 1]
            if first < 0x80:
                length, head = first, 2
            else:
                n = first & 0x7F
                if n == 0 or n > 4 or i + 2 + n > len(der):
                    raise ValueError("bad DER length")
                length, head = int.from_bytes(der[i + 2 : i + 2 + n], "big"), 2 + n
            end = i + head + length
            if end > len(der):
                raise ValueError("truncated DER certificate")
            certs.append(x509.load_der_x509_certificate(der[i:end]))
            i = end
    except ValueError as exc:
        raise SvidError(f"bad DER bundle: {exc}") from exc
    return tuple(certs)


Bundles = Mapping[str, TrustBundle]
"""Trust bundles by trust domain name: ours, plus federated ones."""


@dataclass(frozen=True)
class RevocationList:
    """Revoked serial numbers of one issuing CA, from a CRL whose signature has been verified.

    ``this_update``/``next_update`` are unix seconds; ``next_update`` tells agents when to expect a
    fresher list (the built-in CA rewrites it on every revoke and before it goes stale).
    """

    issuer: x509.Name
    serials: frozenset[int]
    this_update: float
    next_update: float | None
    number: int = 0

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return cert.issuer == self.issuer and cert.serial_number in self.serials

    @classmethod
    def from_crl(cls, data: bytes, bundle: TrustBundle) -> RevocationList:
        """Parse a PEM or DER X.509 CRL and verify it was signed by a root of ``bundle``."""
        try:
            pem = data.lstrip().startswith(b"-----")
            crl = x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data)
        except ValueError as exc:
            raise SvidError(f"bad CRL: {exc}") from exc
        signers = [r for r in bundle.roots if r.subject == crl.issuer]
        if not signers:
            who = crl.issuer.rfc4514_string()
            raise SvidError(f"CRL issuer {who} is not a root of {bundle.trust_domain}")
        # During a root rollover two roots share the name: the CRL is good if one of them signed it.
        for signer in signers:
            try:
                if crl.is_signature_valid(signer.public_key()):  # type: ignore[arg-type]
                    break
            except (TypeError, ValueError, UnsupportedAlgorithm):
                continue
        else:
            raise SvidError("CRL signature is not valid for any root of that name")
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            number = 0
        nxt = crl.next_update_utc
        return cls(
            crl.issuer,
            frozenset(r.serial_number for r in crl),
            crl.last_update_utc.timestamp(),
            nxt.timestamp() if nxt else None,
            number,
        )


@dataclass(frozen=True)
class SvidVerdict:
    """Result of :func:`validate_x509_svid`: ``reason`` None means accepted."""

    reason: Reason | None
    spiffe_id: SpiffeId | None = None
    detail: str = ""
    key_algorithm: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None

    def raise_for(self) -> SpiffeId:
        """The SPIFFE ID if accepted, else raise :class:`SvidRejected`."""
        if self.reason is not None or self.spiffe_id is None:
            raise SvidRejected(self.reason or Reason.MALFORMED, self.detail, self.spiffe_id)
        return self.spiffe_id


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _path_to_root(chain: Sequence[x509.Certificate], bundle: TrustBundle) -> list[x509.Certificate] | str:
    """The path leaf..root if ``chain`` (leaf first, as sent) ends in a root of ``bundle``, else why not.

    A peer normally sends leaf + intermediates and leaves the root out (it saves ~5 KB per ML-DSA
    handshake); a sent root is accepted only if it is byte-identical to one in the bundle.
    """
    roots = bundle.roots
    root_ders = bundle.fingerprint_set()
    path = [chain[0]]
    for nxt in chain[1:]:
        cur = path[-1]
        if cur.public_bytes(serialization.Encoding.DER) in root_ders:
            return path
        if not _is_ca(nxt):
            return f"intermediate {nxt.subject.rfc4514_string()} is not a CA"
        ku = _key_usage(nxt)
        if ku is not None and not ku.key_cert_sign:
            return f"intermediate {nxt.subject.rfc4514_string()} lacks keyCertSign"
        if not _issued_by(cur, nxt):
            return f"{cur.subject.rfc4514_string()} is not signed by the next certificate in the chain"
        path.append(nxt)
    last = path[-1]
    if last.public_bytes(serialization.Encoding.DER) in root_ders and len(path) > 1:
        return path
    for root in roots:
        if root.subject == last.issuer and _issued_by(last, root):
            path.append(root)
            return path
    return f"no root of trust domain {bundle.trust_domain} signed {last.subject.rfc4514_string()}"


def validate_x509_svid(
    chain: Sequence[x509.Certificate],
    bundles: Bundles,
    now: float,
    *,
    revocations: Iterable[RevocationList] = (),
    policy: AuthorizationPolicy | None = None,
    allowed_key_algorithms: frozenset[str] | None = None,
) -> SvidVerdict:
    """Check a presented chain (leaf first) against the X509-SVID rules; never raises on bad input.

    ``now`` is unix seconds. ``allowed_key_algorithms`` (names from :func:`key_algorithm`, e.g.
    ``{"ML-DSA-65"}``) applies to the leaf; None allows any. ``policy`` None skips authorization.
    Checks run in a fixed order and the first failure is the verdict: structure of the leaf, trust
    domain, chain, validity of every certificate on the path, revocation, key algorithm, policy.
    """
    if not chain:
        return SvidVerdict(Reason.NO_CERTIFICATE, detail="no certificate presented")
    leaf = chain[0]
    try:
        sid = spiffe_id_of(leaf)
    except SvidRejected as exc:
        return SvidVerdict(exc.reason, detail=exc.detail)
    except DecodeError as exc:
        return SvidVerdict(Reason.MALFORMED, detail=str(exc))
    alg = key_algorithm(leaf)
    try:
        if _is_ca(leaf):
            return SvidVerdict(Reason.LEAF_IS_CA, sid, "leaf has basicConstraints cA=true", alg)
        ku = _key_usage(leaf)
        if ku is None or not ku.digital_signature:
            return SvidVerdict(Reason.BAD_KEY_USAGE, sid, "leaf lacks digitalSignature key usage", alg)
        if ku.key_cert_sign or ku.crl_sign:
            return SvidVerdict(Reason.BAD_KEY_USAGE, sid, "leaf has keyCertSign or cRLSign", alg)
        bundle = bundles.get(sid.trust_domain)
        if bundle is None or not bundle.roots:
            detail = f"no bundle for trust domain {sid.trust_domain}"
            return SvidVerdict(Reason.UNTRUSTED_DOMAIN, sid, detail, alg)
        path = _path_to_root(chain, bundle)
        if isinstance(path, str):
            return SvidVerdict(Reason.BAD_CHAIN, sid, path, alg)
        for cert in path:
            what = "leaf" if cert is leaf else cert.subject.rfc4514_string()
            if now < cert.not_valid_before_utc.timestamp():
                detail = f"{what} not valid before {cert.not_valid_before_utc}"
                return SvidVerdict(Reason.NOT_YET_VALID, sid, detail, alg)
            if now > cert.not_valid_after_utc.timestamp():
                return SvidVerdict(Reason.EXPIRED, sid, f"{what} expired at {cert.not_valid_after_utc}", alg)
        revs = tuple(revocations)
        for cert in path[:-1]:
            if any(r.is_revoked(cert) for r in revs):
                return SvidVerdict(Reason.REVOKED, sid, f"serial {cert.serial_number:x} is revoked", alg)
    except (ValueError, TypeError, x509.DuplicateExtension) as exc:  # lazily parsed names and extensions of a
        # hostile certificate (a mutated issuer name can raise TypeError from cryptography, 2026-12)
        return SvidVerdict(Reason.MALFORMED, sid, str(exc), alg)
    if allowed_key_algorithms is not None and alg not in allowed_key_algorithms:
        return SvidVerdict(Reason.KEY_ALGORITHM_NOT_ALLOWED, sid, f"leaf key {alg} is not allowed", alg)
    if policy is not None and not policy.allows(sid):
        return SvidVerdict(Reason.UNAUTHORIZED, sid, f"{sid} is not allowed by the authorization policy", alg)
    return SvidVerdict(None, sid, "", alg)


@dataclass(frozen=True)
class SourceUpdate:
    """What a source hands its subscribers after a change. ``rotated``: the SVID itself changed."""

    svid: X509Svid
    bundles: Bundles
    revocations: tuple[RevocationList, ...]
    rotated: bool


class SvidSource(Protocol):
    """Where this node's SVID, the trust bundles and the revocation lists come from.

    Implemented by :class:`x0tta.identity.builtin.BuiltinSource` (files of the built-in CA) and
    :class:`x0tta.identity.workload.WorkloadApiSource` (SPIRE Workload API). All methods are called
    from the event loop thread; subscribers are called there too, after the new state is in place,
    and must not block.
    """

    kind: str  # "builtin" or "workload_api"

    async def start(self) -> None:
        """Begin watching; return once the first SVID and bundles are in. Raises
        :class:`SvidUnavailable` (or CapabilityMissing for an absent SPIRE socket) if they cannot be had."""

    def svid(self) -> X509Svid:
        """The current SVID; :class:`SvidUnavailable` before the first one."""

    def bundles(self) -> Bundles:
        """Current trust bundles by trust domain (ours and federated)."""

    def revocations(self) -> tuple[RevocationList, ...]:
        """Current verified revocation lists (empty for SPIRE, which relies on short TTLs)."""

    def subscribe(self, callback: Callable[[SourceUpdate], None]) -> Callable[[], None]:
        """Call ``callback`` on every change; returns a function that unsubscribes."""

    async def close(self) -> None:
        """Stop watching and release sockets, threads and file watches. Idempotent."""
