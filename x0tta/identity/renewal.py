"""Renewal through the mesh: the node that asks (:class:`MeshRenewer`) and the CA node that signs
(:class:`RenewalServer`). The protocol and the decisions are in :mod:`x0tta.identity.core.renewal`;
this module moves files and bytes.

The asking node, once its SVID is due (``renew_fraction`` +- ``renew_jitter`` of its lifetime):

1. makes a fresh key and CSR next to its SVID (``svid.key.new`` 0600 and ``svid.csr``, the same
   pending request ``x0tta ca sign`` completes by hand), in a thread;
2. sends the CSR through :attr:`transport` (set by the composition root: the peer sessions to CA
   nodes) and decodes the answer;
3. checks a granted chain before writing anything: it pairs with the pending key, names this
   node's ID and verifies against the bundle in force; a CRL is taken only if it verifies and is
   not older than the one held. Then ``crl.pem`` and ``svid.pem`` are replaced atomically and the
   source reloads: the pending key becomes ``svid.key`` (one rename) and subscribers (the peer
   sessions) rotate, as they do for any new SVID.

A failure (no CA node connected, a refusal, a bad answer) is logged, counted and retried with a
jittered back-off until the SVID expires; :attr:`MeshRenewer.problem` says what is wrong for the
health conditions ``renewal_ca_unreachable`` and ``renewal_refused``.

The CA node answers each request in a thread: it reads the CSR, asks :func:`decide` (the ID the
session authenticated with, revocations in the CA's state), signs with its ``svid_ttl`` and answers
with the leaf and its current CRL.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from x0tta.common.errors import DecodeError, PermanentError, TemporaryError, X0ttaError
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.builtin import BuiltinSource, write_request
from x0tta.identity.ca import PENDING_KEY_FILE, CertificateAuthority, write_atomic
from x0tta.identity.core import renewal as core
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import RevocationList, SvidError, X509Svid, validate_x509_svid

Transport = Callable[[bytes, float], Awaitable[tuple[str, bytes]]]
"""``(request body, timeout) -> (the answering CA node's SPIFFE ID, answer body)``; raises
:class:`NoCaNode` when no CA node is connected, a :class:`TemporaryError` when the ones asked failed."""


class NoCaNode(TemporaryError):
    """No peer session to a CA node: none connected, or none advertises the CA capability."""


class RenewalRefused(PermanentError):
    def __init__(self, reason: core.RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


class BadAnswer(PermanentError):
    """A CA node's answer that cannot be installed (a chain that does not fit, an old CRL)."""


@dataclass(frozen=True)
class Problem:
    kind: str  # "unreachable" or "refused"
    message: str


def install(source_paths: Any, trust_domain: str, own: SpiffeId, answer: core.Granted, bundles: dict[str, Any],
            current_crl: int | None, now: float) -> X509Svid:
    """Check a granted answer against the pending key and the bundle in force, then write the CRL
    and the certificate (blocking: run in a thread). Raises :class:`BadAnswer`."""
    pending = source_paths.key.with_name(PENDING_KEY_FILE)
    try:
        key_pem = pending.read_bytes()
    except OSError as exc:
        raise BadAnswer(f"the pending key {pending} is gone: {exc.strerror}") from None
    try:
        svid = X509Svid.from_pem(answer.chain_pem, key_pem)
    except SvidError as exc:
        raise BadAnswer(f"the granted certificate does not fit the pending key: {exc}") from None
    if svid.spiffe_id != own:
        raise BadAnswer(f"the granted certificate names {svid.spiffe_id}, not {own}")
    verdict = validate_x509_svid(svid.cert_chain, bundles, now)
    if not verdict.ok:
        raise BadAnswer(f"the granted certificate does not verify ({verdict.reason}): {verdict.detail}")
    try:
        crl = RevocationList.from_crl(answer.crl_pem, bundles[trust_domain])
    except (SvidError, KeyError) as exc:
        raise BadAnswer(f"the CRL does not verify: {exc}") from None
    if core.crl_acceptable(current_crl, crl.number):
        write_atomic(source_paths.revocation, answer.crl_pem)
    write_atomic(source_paths.svid, svid.chain_pem())
    return svid


class MeshRenewer:
    """Renews the built-in source's SVID through a CA node; run :meth:`run` as a task."""

    def __init__(self, source: BuiltinSource, transport: Transport, *,
                 fraction: float, jitter: float, timeout: float, retry_min: float = 1.0,
                 retry_max: float = 60.0, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random, log: Any = None,
                 count: Callable[[str, str], None] | None = None) -> None:
        self.source = source
        self.transport = transport
        self.fraction, self.jitter, self.timeout = fraction, jitter, timeout
        self.retry_min, self.retry_max = retry_min, retry_max
        self.clock, self.rand = clock, rand
        self.log = log if log is not None else source.log
        self.count = count or (lambda result, reason: None)
        self.renewals = 0
        self.failures = 0
        self.problem: Problem | None = None
        self._u: tuple[int, float] | None = None  # (serial, the jitter draw for that SVID)

    def due(self) -> float:
        svid = self.source.svid()
        serial = svid.leaf.serial_number
        if self._u is None or self._u[0] != serial:
            self._u = (serial, self.rand())
        nb = svid.leaf.not_valid_before_utc.timestamp()
        return core.renewal_due(nb, svid.expires_at, self.fraction, self.jitter, self._u[1])

    async def run(self) -> None:
        attempt = 0
        retry_at = 0.0
        while True:
            now = self.clock()
            wake = max(self.due(), retry_at)
            if now < wake:
                await asyncio.sleep(min(wake - now, 1.0))  # also notices an SVID replaced by other means
                continue
            if await self.renew_once():
                attempt, retry_at = 0, 0.0
            else:
                attempt += 1
                retry_at = self.clock() + core.retry_delay(attempt, self.retry_min, self.retry_max, self.rand())

    async def renew_once(self) -> bool:
        """One attempt; True when a new SVID is in force."""
        src = self.source
        old = src.svid()
        own = old.spiffe_id  # renew what this node holds: the ID its sessions authenticate with
        kt = KeyType.ECDSA_P256 if old.key_algorithm.startswith("ECDSA") else KeyType.ML_DSA_65
        ca_id = ""
        try:
            csr_path = await asyncio.to_thread(write_request, src.paths.key.parent, own, kt)
            csr = await asyncio.to_thread(csr_path.read_bytes)
            ca_id, raw = await self.transport(core.encode_request(core.RenewalRequest(csr)), self.timeout)
            answer = core.decode_answer(raw)
            if isinstance(answer, core.Refused):
                raise RenewalRefused(answer.reason, answer.detail)
            current = src.revocations()
            svid = await asyncio.to_thread(install, src.paths, src.trust_domain, own, answer,
                                           dict(src.bundles()), current[0].number if current else None,
                                           self.clock())
            await src.refresh()
        except NoCaNode as exc:
            return self._failed("unreachable", "no_ca_node", str(exc), ca_id)
        except RenewalRefused as exc:
            return self._failed("refused", exc.reason.value, str(exc), ca_id)
        except (DecodeError, BadAnswer) as exc:
            return self._failed("unreachable", "bad_answer", str(exc), ca_id)
        except (X0ttaError, OSError, TimeoutError) as exc:
            return self._failed("unreachable", "failed", str(exc) or type(exc).__name__, ca_id)
        if src.svid().leaf != svid.leaf:
            return self._failed("unreachable", "not_taken", src.last_error or "the source kept the old SVID", ca_id)
        self.renewals += 1
        self.problem = None
        self.count("ok", "ok")
        self.log.info("svid_renewed_via_mesh", ca=ca_id, serial=f"{svid.leaf.serial_number:x}",
                      expires_in=round(svid.seconds_to_expiry(self.clock()), 1))
        return True

    def _failed(self, kind: str, reason: str, message: str, ca_id: str) -> bool:
        self.failures += 1
        self.count("refused" if kind == "refused" else "failed", reason)
        left = self.source.svid().seconds_to_expiry(self.clock())
        self.problem = Problem(kind, f"{message} (SVID expires in {left:.0f} s)")
        self.log.warning("svid_mesh_renewal_failed", reason=reason, detail=message, ca=ca_id,
                         expires_in=round(left, 1))
        return False


class RenewalServer:
    """A CA node's side: signs renewal requests of authenticated peers (blocking parts in a thread)."""

    MIN_INTERVAL_SHARE = 0.1
    """At most one certificate per ID per tenth of ``ttl`` (:func:`core.too_soon`)."""
    MAX_REMEMBERED = 10_000

    def __init__(self, ca_dir: str | Path, ttl: float, *, log: Any = None,
                 count: Callable[[str, str], None] | None = None, clock: Callable[[], float] = time.time,
                 granted: dict[str, float] | None = None) -> None:
        self.ca_dir = Path(ca_dir)
        self.ttl = ttl
        self.log = log
        self.count = count or (lambda result, reason: None)
        self.clock = clock
        self.granted = {} if granted is None else granted  # SPIFFE ID -> time of its last grant

    async def handle(self, session_id: SpiffeId, session_serial: int, body: bytes) -> bytes:
        sid, now = str(session_id), self.clock()
        min_interval = self.MIN_INTERVAL_SHARE * self.ttl
        try:
            req = core.decode_request(body)
        except core.RenewalDecodeError as exc:
            answer: core.Answer = core.Refused(core.RefusalReason.BAD_REQUEST, str(exc))
        else:
            soon = core.too_soon(self.granted.get(sid), now, min_interval)
            if soon is not None:
                answer = soon
            else:
                before = self.granted.get(sid)
                self.granted[sid] = now  # checked and set on the loop: a second request waits its turn
                answer = await asyncio.to_thread(self.sign, session_id, session_serial, req.csr_pem)
                if isinstance(answer, core.Refused):
                    if before is None:
                        self.granted.pop(sid, None)
                    else:
                        self.granted[sid] = before
                elif len(self.granted) > self.MAX_REMEMBERED:
                    for old in [k for k, t in self.granted.items() if now - t >= min_interval]:
                        del self.granted[old]
        if isinstance(answer, core.Refused):
            self.count("refused", answer.reason.value)
            if self.log is not None:
                self.log.warning("svid_renewal_refused", peer=str(session_id), reason=answer.reason.value,
                                 detail=answer.detail)
        else:
            self.count("granted", "ok")
            if self.log is not None:
                self.log.info("svid_renewal_granted", peer=str(session_id))
        return core.encode_answer(answer)

    def sign(self, session_id: SpiffeId, session_serial: int, csr_pem: bytes) -> core.Answer:
        """Decide and sign (blocking)."""
        try:
            ca = CertificateAuthority(self.ca_dir)
            revoked_serials = frozenset(e.serial for e in ca.revoked())
            refusal = core.decide(session_id, session_serial, core.csr_facts(csr_pem), ca.trust_domain,
                                  ca.revoked_ids(), revoked_serials)
            if refusal is not None:
                return refusal
            leaf = ca.sign(csr_pem, self.ttl, spiffe_id=session_id, now=self.clock())
            return core.Granted(leaf.public_bytes(serialization.Encoding.PEM), ca.crl_pem())
        except (X0ttaError, OSError, ValueError) as exc:
            return core.Refused(core.RefusalReason.CA_ERROR, str(exc))
