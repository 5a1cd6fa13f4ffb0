"""Renewal of a built-in-CA SVID through the mesh, no operator: the pure parts.

A node without the CA key renews its SVID before expiry by asking a *CA node* (a node holding the
CA key, ``[identity] ca_dir``) over an authenticated PQ peer session:

1. At :func:`renewal_due` (``renew_fraction`` of the lifetime, spread by ``renew_jitter`` so that a
   mesh issued at once does not ask at once) the node makes a fresh key and its CSR. The key never
   leaves the node.
2. It sends a :class:`RenewalRequest` as the peer request :data:`METHOD` to a peer that advertised
   :data:`CAPABILITY` in its Hello (or that ``[identity] ca_ids`` names).
3. The CA node signs only if :func:`decide` finds nothing wrong: the CSR's own signature holds, it
   names exactly one SPIFFE ID, that ID is the one the *session* authenticated with (a node renews
   itself, never another), neither the ID nor the session's certificate is revoked, and the ID was
   not granted a certificate within the last tenth of a lifetime (:func:`too_soon`). It answers
   :class:`Granted` (the signed chain and its current CRL) or :class:`Refused` (a typed reason).
4. The node checks the answer and installs it as a rotation does; a CRL older than the one it holds
   is not taken (:func:`crl_acceptable`): a node claiming to be a CA cannot roll revocations back.

The wire format of both messages is a JSON object (UTF-8), version 1::

    request  {"v": 1, "csr": "<PEM CERTIFICATE REQUEST>"}
    answer   {"v": 1, "status": "granted", "chain": "<PEM CERTIFICATE...>", "crl": "<PEM X509 CRL>"}
             {"v": 1, "status": "refused", "reason": "<RefusalReason>", "detail": "<text>"}

Keys beyond these are an error, never ignored. The decoders' promise (held by
``tests/fuzz/test_identity_renewal_fuzz.py``): any bytes decode or raise
:class:`RenewalDecodeError`; nothing else escapes.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from x0tta.common.errors import DecodeError
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.core.certs import CsrFacts, read_csr

METHOD = "identity.renew"
"""The peer request a node sends its CSR with."""
CAPABILITY = "identity.ca.v1"
"""Advertised in the peer Hello by a node that signs renewals (it holds the CA key)."""
VERSION = 1
MAX_BODY = 60 * 1024
"""Below the peer protocol's default frame (64 KiB): an ML-DSA-65 chain and a CRL fit with room."""
MAX_DETAIL = 512

CSR_MARK = "-----BEGIN CERTIFICATE REQUEST-----"
CERT_MARK = "-----BEGIN CERTIFICATE-----"
CRL_MARK = "-----BEGIN X509 CRL-----"


class RefusalReason(enum.StrEnum):
    BAD_REQUEST = "bad_request"  # the request did not decode
    BAD_CSR = "bad_csr"  # not a CSR, its signature fails, or an unsupported key
    WRONG_ID = "wrong_id"  # the CSR asks for another ID than the session authenticated with
    WRONG_TRUST_DOMAIN = "wrong_trust_domain"  # the ID is not of the CA's trust domain
    REVOKED = "revoked"  # the ID, or the certificate the session authenticated with, is revoked
    TOO_SOON = "too_soon"  # this ID was granted a certificate less than min_interval ago
    NOT_A_CA = "not_a_ca"  # the asked node holds no CA key (or does not serve renewals)
    CA_ERROR = "ca_error"  # the CA node failed to sign (its directory, its key)


class RenewalDecodeError(DecodeError):
    """A renewal request or answer that does not follow its format."""


@dataclass(frozen=True)
class RenewalRequest:
    csr_pem: bytes


@dataclass(frozen=True)
class Granted:
    chain_pem: bytes
    crl_pem: bytes


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason
    detail: str = ""


Answer = Granted | Refused


# -- when ----------------------------------------------------------------------------------------


def renewal_due(not_before: float, not_after: float, fraction: float, jitter: float, u: float) -> float:
    """When to renew an SVID valid from ``not_before`` to ``not_after``.

    ``fraction`` of the lifetime, moved by up to ``jitter`` of the lifetime either way (``u`` in
    [0, 1) drawn once per SVID by the caller), and kept between a tenth and nine tenths of the
    lifetime: never at once, never so late that one failed attempt means expiry.
    """
    lifetime = max(0.0, not_after - not_before)
    share = fraction + jitter * (2.0 * min(max(u, 0.0), 1.0) - 1.0)
    return not_before + lifetime * min(max(share, 0.1), 0.9)


def retry_delay(attempt: int, base: float, cap: float, u: float) -> float:
    """Back-off before attempt ``attempt + 1`` (``attempt`` >= 1 failures so far): ``base`` doubled
    per failure up to ``cap``, then between half and all of it (``u`` in [0, 1))."""
    full = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 30))
    return full * (0.5 + 0.5 * min(max(u, 0.0), 1.0))


# -- the CA's decision -----------------------------------------------------------------------------


def csr_facts(csr_pem: bytes) -> CsrFacts:
    """What the CA reads from a CSR (:func:`x0tta.identity.core.certs.read_csr`, as ``x0tta ca sign``)."""
    return read_csr(csr_pem)


def decide(
    session_id: SpiffeId,
    session_serial: int,
    csr: CsrFacts,
    trust_domain: str,
    revoked_ids: frozenset[str],
    revoked_serials: frozenset[int],
) -> Refused | None:
    """The CA node's verdict on a renewal asked over a session authenticated as ``session_id``
    with the certificate ``session_serial``: None to sign, else why not."""
    if csr.spiffe_id is None:
        return Refused(RefusalReason.BAD_CSR, csr.error)
    if csr.spiffe_id != session_id:
        return Refused(RefusalReason.WRONG_ID,
                       f"the request asks for {csr.spiffe_id} but the session authenticated as {session_id}")
    if session_id.trust_domain != trust_domain or not session_id.path:
        return Refused(RefusalReason.WRONG_TRUST_DOMAIN, f"{session_id} is not a node ID of {trust_domain}")
    if str(session_id) in revoked_ids:
        return Refused(RefusalReason.REVOKED, f"{session_id} is revoked")
    if session_serial in revoked_serials:
        return Refused(RefusalReason.REVOKED, f"the certificate {session_serial:x} of this session is revoked")
    return None


def too_soon(last_grant: float | None, now: float, min_interval: float) -> Refused | None:
    """One grant per ID per ``min_interval``: an authenticated node cannot make the CA node sign (and
    record) certificates as fast as it can ask. A node whose answer was lost asks again later."""
    if last_grant is not None and 0.0 <= now - last_grant < min_interval:
        return Refused(RefusalReason.TOO_SOON,
                       f"a certificate was granted {now - last_grant:.0f} s ago; ask again in "
                       f"{min_interval - (now - last_grant):.0f} s")
    return None


def crl_acceptable(current_number: int | None, new_number: int) -> bool:
    """Take a CRL only if it is not older than the one in force (its CRL number, RFC 5280 5.2.3)."""
    return current_number is None or new_number >= current_number


# -- codec -----------------------------------------------------------------------------------------


def encode_request(req: RenewalRequest) -> bytes:
    return _dump({"v": VERSION, "csr": req.csr_pem.decode("ascii")})


def encode_answer(answer: Answer) -> bytes:
    if isinstance(answer, Granted):
        return _dump({"v": VERSION, "status": "granted", "chain": answer.chain_pem.decode("ascii"),
                      "crl": answer.crl_pem.decode("ascii")})
    return _dump({"v": VERSION, "status": "refused", "reason": answer.reason.value,
                  "detail": answer.detail[:MAX_DETAIL]})


def decode_request(body: bytes) -> RenewalRequest:
    obj = _load(body, ("v", "csr"), ())
    return RenewalRequest(_pem(obj, "csr", CSR_MARK))


def decode_answer(body: bytes) -> Answer:
    obj = _load(body, ("v", "status"), ("chain", "crl", "reason", "detail"))
    status = obj["status"]
    if status == "granted":
        _keys(obj, {"v", "status", "chain", "crl"})
        return Granted(_pem(obj, "chain", CERT_MARK), _pem(obj, "crl", CRL_MARK))
    if status == "refused":
        _keys(obj, {"v", "status", "reason", "detail"})
        reason, detail = obj.get("reason"), obj.get("detail", "")
        if not isinstance(reason, str) or reason not in RefusalReason.__members__.values():
            raise RenewalDecodeError(f"unknown refusal reason {str(reason)[:40]!r}")
        if not isinstance(detail, str) or len(detail) > MAX_DETAIL:
            raise RenewalDecodeError("refusal detail must be a string of at most 512 characters")
        return Refused(RefusalReason(reason), detail)
    raise RenewalDecodeError(f"unknown status {str(status)[:40]!r}")


def _dump(obj: dict[str, object]) -> bytes:
    out = json.dumps(obj, separators=(",", ":")).encode()
    if len(out) > MAX_BODY:
        raise ValueError(f"renewal message of {len(out)} bytes exceeds {MAX_BODY}")
    return out


def _load(body: bytes, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, object]:
    if len(body) > MAX_BODY:
        raise RenewalDecodeError(f"message of {len(body)} bytes exceeds {MAX_BODY}")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RenewalDecodeError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise RenewalDecodeError("not a JSON object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise RenewalDecodeError(f"missing {', '.join(missing)}")
    _keys(obj, set(required) | set(optional))
    v = obj["v"]
    if type(v) is not int or v != VERSION:
        raise RenewalDecodeError(f"unsupported version {str(v)[:20]!r}")
    return obj


def _keys(obj: dict[str, object], allowed: set[str]) -> None:
    extra = set(obj) - allowed
    if extra:
        raise RenewalDecodeError(f"unexpected keys {[k[:40] for k in sorted(extra)[:4]]}")


def _pem(obj: dict[str, object], key: str, mark: str) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str):
        raise RenewalDecodeError(f"{key} must be a string")
    if not value.startswith(mark) or not value.isascii():
        raise RenewalDecodeError(f"{key} is not PEM ({mark})")
    return value.encode("ascii")
