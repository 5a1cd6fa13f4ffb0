"""The peer transport's errors, and the table that turns an OpenSSL failure into a refusal reason.

Why a table: a refused handshake is logged and counted under a stable ``reason``
(``docs/peer.md``, "Refusal reasons"). OpenSSL says why a handshake failed with codes in its error
queue - a library (``ERR_LIB_SSL``) and a reason (``SSL_R_*``, ``include/openssl/sslerr.h``) -
whose text may change between releases; the codes do not. :data:`TABLE` maps them, first match
wins, in the order below (the order decides when the queue holds several codes: a received alert
says more than the record-layer error that follows it).

Where OpenSSL gives no code there is no table to look in: a ``SysCallError`` (the input ended,
an errno) is ``tls_error``. pyOpenSSL's own ``SSL.Error`` keeps OpenSSL's text of each code and
drops the code; :func:`x0tta.peer.osslshim.codes_of` finds the table's codes again by that exact
text. The handshake itself goes through :func:`x0tta.peer.osslshim.do_handshake`, which keeps
the codes.

The certificate rules (X509-SVID, revocation, policy) are decided in the verify callback
(:mod:`x0tta.peer.tlspolicy`) and take precedence: their reason is
:class:`x0tta.identity.core.types.Reason`, not a code of this table.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from x0tta.common.errors import PermanentError, TemporaryError
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.core.types import Reason
from x0tta.peer.osslshim import Code, codes_of


class Refusal(enum.StrEnum):
    """Why a handshake failed, beyond the certificate rules of :class:`x0tta.identity.core.types.Reason`.

    Stable: log field ``reason`` and metric label ``reason``.
    """

    NO_SHARED_GROUP = "no_shared_group"
    PROTOCOL_VERSION = "protocol_version"
    NOT_TLS = "not_tls"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    BUSY = "busy"
    CLOSED = "closed"
    UNREACHABLE = "unreachable"
    PEER_REFUSED = "peer_refused"
    UNEXPECTED_PEER = "unexpected_peer"
    TLS_ERROR = "tls_error"
    # After TLS, before the session: the peer protocol's Hello (x0tta.peer.service)
    PROTOCOL_ERROR = "protocol_error"  # the peer sent bytes that break the peer protocol before its Hello
    NO_HELLO = "no_hello"  # the connection ended, or handshake_timeout passed, without the peer's Hello


class HandshakeFailed(PermanentError):
    """A handshake that did not produce an authenticated session; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "", spiffe_id: SpiffeId | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = str(reason)
        self.detail = detail
        self.spiffe_id = spiffe_id


class TlsClosed(TemporaryError):
    """The TLS connection is gone (EOF, reset, or a fatal alert)."""


# err.h: the libraries whose codes the table names
ERR_LIB_DH = 5
ERR_LIB_EVP = 6
ERR_LIB_DSA = 10
ERR_LIB_X509 = 11
ERR_LIB_ASN1 = 13
ERR_LIB_EC = 16
ERR_LIB_SSL = 20
ERR_LIB_X509V3 = 34


def _codes(lib: int, *reasons: int) -> frozenset[Code]:
    return frozenset((lib, r) for r in reasons)


def _ssl(*reasons: int) -> frozenset[Code]:
    return _codes(ERR_LIB_SSL, *reasons)


# sslerr.h, OpenSSL 4.0 (the numbers are stable across releases; the tests check each one's text
# against the installed library).
SSL_R_NO_SUITABLE_KEY_SHARE = 101
SSL_R_BAD_PACKET_LENGTH = 115
SSL_R_BAD_PROTOCOL_VERSION_NUMBER = 116
SSL_R_CA_DN_LENGTH_MISMATCH = 131
SSL_R_CERT_LENGTH_MISMATCH = 135
SSL_R_HTTP_REQUEST = 156
SSL_R_LENGTH_MISMATCH = 159
SSL_R_EXT_LENGTH_MISMATCH = 163
SSL_R_PACKET_LENGTH_TOO_LONG = 198
SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE = 199
SSL_R_INVALID_ALERT = 205
SSL_R_RECORD_LENGTH_MISMATCH = 213
SSL_R_UNEXPECTED_MESSAGE = 244
SSL_R_UNKNOWN_ALERT_TYPE = 246
SSL_R_UNKNOWN_PROTOCOL = 252
SSL_R_UNSUPPORTED_PROTOCOL = 258
SSL_R_WRONG_SSL_VERSION = 266
SSL_R_WRONG_VERSION_NUMBER = 267
SSL_R_NO_SUITABLE_GROUPS = 295
SSL_R_RECORD_LAYER_FAILURE = 313
SSL_R_TOO_MANY_WARN_ALERTS = 409
SSL_R_NO_SHARED_GROUPS = 410
SSL_R_ECH_DECODE_ERROR = 426
SSL_R_BAD_RECORD_TYPE = 443
SSL_AD_REASON_OFFSET = 1000  # ssl.h: an alert received from the peer is reason 1000 + its AlertDescription

# A structure inside a handshake message (the peer's certificate, its key) that does not decode:
# the *_R_DECODE_ERROR and length mismatches of the libraries that parse it (dherr.h, evperr.h,
# dsaerr.h, x509err.h, asn1err.h, ecerr.h, x509v3err.h).
DECODE_ERRORS = (
    _codes(ERR_LIB_DH, 104, 109)  # DH_R_DECODE_ERROR, DH_R_BN_DECODE_ERROR
    | _codes(ERR_LIB_EVP, 114)  # EVP_R_DECODE_ERROR
    | _codes(ERR_LIB_DSA, 104, 108)  # DSA_R_DECODE_ERROR, DSA_R_BN_DECODE_ERROR
    | _codes(ERR_LIB_X509, 125)  # X509_R_PUBLIC_KEY_DECODE_ERROR
    | _codes(ERR_LIB_ASN1, 110, 119, 148)  # ASN1_R_DECODE_ERROR, _EXPLICIT_LENGTH_MISMATCH, _SEQUENCE_LENGTH_MISMATCH
    | _codes(ERR_LIB_EC, 142)  # EC_R_DECODE_ERROR
    | _codes(ERR_LIB_X509V3, 126)  # X509V3_R_ISSUER_DECODE_ERROR
)

# Received alerts, and alert records that are not alerts. Five received alerts are left out: the
# TLS 1.2 extension alerts (unsupported_extension 110 ... bad_certificate_hash_value 114, sslerr.h
# SSL_R_TLSV1_UNSUPPORTED_EXTENSION ...) have always been reported as tls_error, and still are.
_EXTENSION_ALERTS = range(SSL_AD_REASON_OFFSET + 110, SSL_AD_REASON_OFFSET + 115)
ALERTS = _ssl(*(r for r in range(SSL_AD_REASON_OFFSET, SSL_AD_REASON_OFFSET + 256) if r not in _EXTENSION_ALERTS),
              SSL_R_INVALID_ALERT, SSL_R_UNKNOWN_ALERT_TYPE, SSL_R_TOO_MANY_WARN_ALERTS)


@dataclass(frozen=True)
class Rule:
    """``reason`` when the error queue holds a code of ``codes`` and none of ``unless``."""

    reason: str
    codes: frozenset[Code]
    unless: frozenset[Code] = frozenset()
    why: str = ""

    def matches(self, queue: Sequence[Code]) -> bool:
        return any(c in self.codes for c in queue) and not any(c in self.unless for c in queue)


TABLE: tuple[Rule, ...] = (
    Rule(Reason.NO_CERTIFICATE.value, _ssl(SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE),
         why="a client that sent no certificate (the server requires one)"),
    Rule(Refusal.NO_SHARED_GROUP.value,
         _ssl(SSL_R_NO_SUITABLE_KEY_SHARE, SSL_R_NO_SHARED_GROUPS, SSL_R_NO_SUITABLE_GROUPS),
         why="a classical-only peer: no ML-KEM group in common"),
    Rule(Refusal.PROTOCOL_VERSION.value, _ssl(SSL_R_UNSUPPORTED_PROTOCOL),
         why="a peer offering TLS 1.2 or older"),
    Rule(Refusal.PROTOCOL_VERSION.value, _ssl(SSL_R_BAD_PROTOCOL_VERSION_NUMBER), unless=ALERTS,
         why="a version we refuse, said by us (with an alert from the peer it is the peer's refusal)"),
    Rule(Refusal.PEER_REFUSED.value, ALERTS,
         why="the peer sent a fatal alert (or one that is not an alert)"),
    Rule(Refusal.NOT_TLS.value, _ssl(
        SSL_R_WRONG_VERSION_NUMBER, SSL_R_PACKET_LENGTH_TOO_LONG, SSL_R_UNKNOWN_PROTOCOL, SSL_R_HTTP_REQUEST,
        SSL_R_RECORD_LAYER_FAILURE, SSL_R_BAD_RECORD_TYPE, SSL_R_UNEXPECTED_MESSAGE, SSL_R_WRONG_SSL_VERSION,
        SSL_R_RECORD_LENGTH_MISMATCH, SSL_R_LENGTH_MISMATCH, SSL_R_CA_DN_LENGTH_MISMATCH, SSL_R_CERT_LENGTH_MISMATCH,
        SSL_R_EXT_LENGTH_MISMATCH, SSL_R_BAD_PACKET_LENGTH, SSL_R_ECH_DECODE_ERROR,
    ) | DECODE_ERRORS,
         why="bytes that are not TLS records or messages (an HTTP request, garbage, a truncated message)"),
)
KNOWN: frozenset[Code] = frozenset().union(*(r.codes | r.unless for r in TABLE))


def refusal(queue: Sequence[Code]) -> str:
    """The reason for an OpenSSL error queue: the first rule of :data:`TABLE` it matches, else
    ``tls_error``."""
    for rule in TABLE:
        if rule.matches(queue):
            return rule.reason
    return Refusal.TLS_ERROR.value


def classify(exc: Exception) -> tuple[str, str]:
    """(reason, detail) of an OpenSSL failure raised by a handshake step."""
    return refusal(codes_of(exc, KNOWN)), str(exc)[:300]


__all__ = ["ALERTS", "KNOWN", "TABLE", "HandshakeFailed", "Refusal", "Rule", "TlsClosed", "classify", "refusal"]
