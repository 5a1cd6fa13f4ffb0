"""Signed birth and death: a consumer tells a node's own status messages from forged ones.

A node's status topic carries its birth and its death; the death is usually its Last Will, which
the broker publishes for it. Anyone who can write that topic (the broker, or a client the ACL lets
through by mistake) could mark the node dead. So the node signs both with the key of its fleet
client certificate (the one the broker authenticates, CN = node id) and puts the certificate in
the message; the Will is signed when the connection is made, before the broker holds it.

The signature sits in the payload's envelope, beside ``body``::

    "sig": {"alg": "ecdsa-p256-sha256" | "ed25519" | "ml-dsa-65", "cert": <PEM>, "value": <base64>}

and covers ``DOMAIN`` followed by the payload's canonical encoding without ``sig``
(:func:`x0tta.fleet.core.payloads.encode`: keys sorted, no spaces). :func:`verify_status` is what a
consumer runs (``x0tta fleet nodes`` does): the certificate must be issued by one of the fleet's
CA certificates, be valid at the message's time, carry the message's node id as its CN, and its key
must verify the signature. A reader also matches a death's ``session`` to the birth it ends, so an
old, validly signed Will cannot end a newer session.

Pure: data, keys and certificates in; a signed payload or :class:`StatusSignatureError` out.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.x509.oid import NameOID

from x0tta.common.errors import PermanentError
from x0tta.fleet.core.payloads import encode

DOMAIN = b"x0tta-fleet-status/1\x00"
SIGNED_KINDS = ("x0tta.fleet.birth/1", "x0tta.fleet.death/1")
ALGS = ("ecdsa-p256-sha256", "ed25519", "ml-dsa-65")


class StatusSignatureError(PermanentError):
    """A status message that is unsigned or whose signature does not hold: treat it as forged."""


def signing_alg(key: Any) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return "ecdsa-p256-sha256"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey)):
        return "ml-dsa-65"
    raise StatusSignatureError(f"a {type(key).__name__} cannot sign status messages: one of {ALGS}")


def _signed_bytes(obj: Mapping[str, Any]) -> bytes:
    return DOMAIN + encode({k: v for k, v in obj.items() if k != "sig"})


def sign_status(obj: Mapping[str, Any], key: Any, cert_pem: bytes) -> dict[str, Any]:
    """``obj`` (a birth or death payload) with its ``sig``, made with the fleet certificate's ``key``."""
    alg = signing_alg(key)
    data = _signed_bytes(obj)
    if alg == "ecdsa-p256-sha256":
        value = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        value = key.sign(data)
    return {**obj, "sig": {"alg": alg, "cert": cert_pem.decode("ascii"), "value": base64.b64encode(value).decode()}}


def load_cas(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise StatusSignatureError(f"no CA certificate in the fleet CA file: {exc}") from None


def verify_status(obj: Mapping[str, Any], cas: Sequence[x509.Certificate], now: float | None = None) -> str:
    """Check a decoded birth or death; returns the certificate's subject CN (the node id) or raises
    :class:`StatusSignatureError` saying why it is not the node's own. ``now`` defaults to the
    message's own ``at``."""
    sig = obj.get("sig")
    if sig is None:
        raise StatusSignatureError("unsigned: anyone who can write the status topic could have sent it")
    if not isinstance(sig, dict) or set(sig) != {"alg", "cert", "value"} or sig["alg"] not in ALGS:
        raise StatusSignatureError("the sig field is not {alg, cert, value}")
    try:
        cert = x509.load_pem_x509_certificate(str(sig["cert"]).encode("ascii"))
        value = base64.b64decode(str(sig["value"]), validate=True)
    except (ValueError, UnicodeEncodeError, binascii.Error) as exc:
        raise StatusSignatureError(f"unreadable certificate or signature: {str(exc)[:80]}") from None
    when = datetime.fromtimestamp(float(now if now is not None else obj.get("at", 0)), UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise StatusSignatureError(f"the certificate was not valid at {when.isoformat()}")
    issuer = next((ca for ca in cas if ca.subject == cert.issuer), None)
    if issuer is None:
        raise StatusSignatureError(f"the certificate's issuer {cert.issuer.rfc4514_string()} is not a fleet CA")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise StatusSignatureError("the certificate is not signed by the fleet CA") from None
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [obj.get("node")]:
        raise StatusSignatureError(f"the certificate is {cns}'s, the message says node {obj.get('node')!r}")
    key = cert.public_key()
    try:
        if signing_alg(key) != sig["alg"]:
            raise StatusSignatureError(f"alg {sig['alg']} does not match the certificate's key")
        data = _signed_bytes(obj)
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(value, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(value, data)  # type: ignore[union-attr]
    except InvalidSignature:
        raise StatusSignatureError("the signature does not verify: the message is not the node's") from None
    return str(cns[0])
