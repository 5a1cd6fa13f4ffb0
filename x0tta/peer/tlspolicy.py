"""What this node demands of a peer handshake, and the pyOpenSSL contexts that enforce it.

Why apart from the stream (:mod:`x0tta.peer.tls`): the policy is decided once per credentials
snapshot, here; the stream only runs handshakes with the contexts built here.

* TLS 1.3 only. The key exchange groups are restricted (``SSL_CTX_set1_groups_list``) to
  ``X25519MLKEM768`` by default: a hybrid of X25519 and ML-KEM-768 (FIPS 203), so a recording made
  today stays secret unless *both* are broken. A peer offering only classical groups finds no
  shared group and is refused (reason ``no_shared_group``).
* Both sides present an X509-SVID and verify the other's inside the handshake, in OpenSSL's verify
  callback (:func:`make_verify`): the chain must end in the trust bundle of the leaf's trust domain
  (OpenSSL's store *and* :func:`x0tta.identity.core.types.validate_x509_svid`), the leaf must follow
  the X509-SVID rules, must not be revoked, must use an allowed key algorithm (ML-DSA-65 by default)
  and its SPIFFE ID must be allowed by the authorization policy. The first failing rule is the
  refusal's reason (:func:`check_peer`, also used on established sessions when the bundle, the
  revocation lists or the policy change).
* Only the leaf and intermediates are sent, never the root (``SSL_MODE_NO_AUTO_CHAIN``): the peer
  has the root in its bundle, and an ML-DSA-65 root is ~5.5 KB on the wire per handshake.
* Resumption: the server keeps TLS 1.3 sessions in its (per-context) cache and hands out small
  stateful tickets (``SSL_OP_NO_TICKET`` makes OpenSSL's TLS 1.3 tickets session ids instead of
  ~6 KB encrypted sessions that would carry the ML-DSA peer certificate). A resumed handshake uses
  ``psk_dhe_ke``: the hybrid group is still negotiated, so forward secrecy stays post-quantum.
* Rotation: a new credentials snapshot gets new :class:`Contexts`; a new server context has a new
  session cache, so no session made under the old credentials resumes.

The OpenSSL calls pyOpenSSL does not offer (the groups, the verify error text) are in
:mod:`x0tta.peer.osslshim`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from OpenSSL import SSL, crypto

from x0tta.common.errors import PermanentError
from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId
from x0tta.identity.core.types import (
    Bundles,
    Reason,
    RevocationList,
    X509Svid,
    validate_x509_svid,
)
from x0tta.peer import osslshim
from x0tta.peer.tlserrors import Refusal

DEFAULT_GROUPS = ("X25519MLKEM768",)


@dataclass(frozen=True)
class TlsPolicy:
    """What this node demands of every handshake (from ``[peer]`` settings)."""

    groups: tuple[str, ...] = DEFAULT_GROUPS
    allowed_key_algorithms: frozenset[str] | None = frozenset({"ML-DSA-65"})
    handshake_timeout: float = 10.0
    max_concurrent_handshakes: int = 16
    session_lifetime: float = 3600.0
    handshake_threads: int = 2


@dataclass(frozen=True)
class Credentials:
    """This node's identity and what it trusts, as one immutable snapshot."""

    svid: X509Svid
    bundles: Bundles
    policy: AuthorizationPolicy
    revocations: tuple[RevocationList, ...] = ()


@dataclass
class Verification:
    """Per-connection scratch of the verify callback (runs in a worker thread)."""

    credentials: Credentials
    expect: SpiffeId | None
    certs: dict[int, x509.Certificate] = field(default_factory=dict)
    openssl_errors: list[tuple[int, int]] = field(default_factory=list)
    verdict_reason: str | None = None
    detail: str = ""
    spiffe_id: SpiffeId | None = None
    done: bool = False



def check_peer(policy: TlsPolicy, creds: Credentials, chain: list[x509.Certificate] | tuple[x509.Certificate, ...],
               now: float, expect: SpiffeId | None = None) -> tuple[str | None, str, SpiffeId | None]:
    """(reason or None, detail, SPIFFE ID) of a peer chain under ``creds`` at ``now``.

    Used inside the handshake, and again on established sessions when the bundle, the revocation
    lists or the policy change.
    """
    verdict = validate_x509_svid(
        list(chain),
        creds.bundles,
        now,
        revocations=creds.revocations,
        policy=creds.policy,
        allowed_key_algorithms=policy.allowed_key_algorithms,
    )
    if not verdict.ok:
        return str(verdict.reason), verdict.detail, verdict.spiffe_id
    if expect is not None and verdict.spiffe_id != expect:
        return Refusal.UNEXPECTED_PEER.value, f"expected {expect}, got {verdict.spiffe_id}", verdict.spiffe_id
    return None, "", verdict.spiffe_id



class Contexts:
    """The pair of SSL contexts built from one credentials snapshot."""

    def __init__(self, policy: TlsPolicy, creds: Credentials, clock: Callable[[], float]) -> None:
        self.credentials = creds
        self.server = self._build(policy, creds, clock, server=True)
        self.client = self._build(policy, creds, clock, server=False)

    @staticmethod
    def _build(policy: TlsPolicy, creds: Credentials, clock: Callable[[], float], server: bool) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
        if not osslshim.set_groups(ctx, policy.groups):
            raise PermanentError(f"OpenSSL refuses key exchange groups {policy.groups}")
        ctx.set_mode(osslshim.SSL_MODE_NO_AUTO_CHAIN)
        svid = creds.svid
        ctx.use_certificate(svid.leaf)
        for cert in svid.cert_chain[1:]:
            if cert.issuer != cert.subject:  # never send a (self-signed) root
                ctx.add_extra_chain_cert(cert)
        with warnings.catch_warnings():
            # pyOpenSSL deprecates PKey objects, but cannot take an ML-DSA key from cryptography
            # (PKey.from_cryptography_key refuses it): PEM through load_privatekey is the one way.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.use_privatekey(crypto.load_privatekey(crypto.FILETYPE_PEM, svid.private_key_pem))
        ctx.check_privatekey()
        store = ctx.get_cert_store()
        assert store is not None
        for bundle in creds.bundles.values():
            for root in bundle.roots:
                store.add_cert(crypto.X509.from_cryptography(root))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, make_verify(policy, clock))
        ctx.set_timeout(int(policy.session_lifetime))
        if server:
            ctx.set_options(SSL.OP_NO_TICKET)
            ctx.set_session_id(b"x0tta-peer")
            ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        else:
            ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
        return ctx



def make_verify(policy: TlsPolicy, clock: Callable[[], float]) -> Callable[..., bool]:
    def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        """OpenSSL calls this per certificate of the built path (top first) and per error found.

        Decisions wait for depth 0, where the whole path is known; there the X509-SVID rules run on
        it and the first failing rule becomes the reason. OpenSSL's own errors still refuse.
        """
        st: Verification = conn.get_app_data()
        try:
            return _decide(st, cert, errno, depth, ok)
        except Exception as exc:  # never let a surprise escape into OpenSSL: refuse, say why
            st.verdict_reason, st.detail = Reason.MALFORMED.value, f"{type(exc).__name__}: {exc}"
            return False

    def _decide(st: Verification, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        st.certs[depth] = cert.to_cryptography()
        if not ok:
            st.openssl_errors.append((depth, errno))
        if depth != 0:
            return True
        if not st.done:
            st.done = True
            chain = [st.certs[d] for d in sorted(st.certs)]
            reason, detail, sid = check_peer(policy, st.credentials, chain, clock(), st.expect)
            st.verdict_reason, st.detail, st.spiffe_id = reason, detail, sid
        if st.verdict_reason is not None:
            return False
        if st.openssl_errors:
            d, e = st.openssl_errors[0]
            st.verdict_reason = Reason.BAD_CHAIN.value
            st.detail = f"OpenSSL: {osslshim.verify_error_string(e)} at depth {d}"
            return False
        return True

    return verify



__all__ = ["DEFAULT_GROUPS", "Contexts", "Credentials", "TlsPolicy", "Verification", "check_peer", "make_verify"]
