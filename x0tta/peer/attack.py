"""Clients that must be refused: one per rule of the peer transport (tests and security drills).

``python -m x0tta.peer.attack --ca DIR [--other-ca DIR] HOST PORT CASE...`` runs each case against a
running agent and prints one JSON line per case with what the client saw. The agent's own logs and
metrics must show the refusal with the case's reason (see :data:`EXPECTED`). Certificates come from
the built-in CA in ``DIR`` (its options make the bad ones); ``other_trust_domain`` needs a second
CA of another trust domain, ``revoked`` an SVID made beforehand by :func:`prepare_revoked` (whose
CRL the target must have loaded). ``frame_before_hello`` holds a valid SVID and completes TLS, then
breaks the peer protocol: the refusal comes from the session, after the handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from OpenSSL import SSL

from x0tta.clock import SYSTEM
from x0tta.common.errors import PermanentError
from x0tta.common.spiffe_id import AuthorizationPolicy
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import X509Svid
from x0tta.peer.core import Hello
from x0tta.peer.core.frames import Ping, encode
from x0tta.peer.tls import Credentials, HandshakeFailed, TlsClosed, TlsEndpoint, TlsPolicy

EXPECTED = {
    "no_client_certificate": "no_certificate",
    "tls12_client": "protocol_version",
    "expired": "expired",
    "not_yet_valid": "not_yet_valid",
    "other_trust_domain": "untrusted_domain",
    "two_uri_sans": "multiple_uri_sans",
    "ca_as_leaf": "leaf_is_ca",
    "revoked": "revoked",
    "unauthorized": "unauthorized",
    "classical_only_client": "no_shared_group",
    "ecdsa_certificate": "key_algorithm_not_allowed",
    "ml_dsa_44_certificate": "key_algorithm_not_allowed",
    "frame_before_hello": "protocol_error",
    "garbage": "not_tls",
    "never_completes": "handshake_timeout",
}
"""Attack case -> the reason the server must give."""
REVOKED_DIR = "attack-revoked"


def prepare_revoked(ca: CertificateAuthority) -> X509Svid:
    """Issue and revoke the SVID the ``revoked`` case presents; deliver ``ca.crl_pem()`` to the target."""
    svid = ca.issue_to(ca.directory / REVOKED_DIR, f"spiffe://{ca.trust_domain}/node/revoked", 3600)
    ca.revoke([svid.leaf.serial_number])
    return svid


def credentials(case: str, ca: CertificateAuthority, other: CertificateAuthority | None) -> Credentials:
    td = ca.trust_domain
    now = time.time()
    revoked = ca.directory / REVOKED_DIR
    issue = {
        "expired": lambda: ca.issue(f"spiffe://{td}/node/old", 60, now=now - 3600),
        "not_yet_valid": lambda: ca.issue(f"spiffe://{td}/node/future", 3600, not_before=now + 600),
        "two_uri_sans": lambda: ca.issue(f"spiffe://{td}/node/twin", 600, extra_uris=(f"spiffe://{td}/node/t2",)),
        "ca_as_leaf": lambda: ca.issue(f"spiffe://{td}/node/ca", 600, leaf_is_ca=True),
        "revoked": lambda: X509Svid.from_pem((revoked / "svid.pem").read_bytes(), (revoked / "svid.key").read_bytes()),
        "unauthorized": lambda: ca.issue(f"spiffe://{td}/service/intruder", 600),
        "ecdsa_certificate": lambda: ca.issue(f"spiffe://{td}/node/classic", 600, key_type=KeyType.ECDSA_P256),
        # weaker than the ML-DSA-65 a peer accepts by default ([peer] accepted_signatures)
        "ml_dsa_44_certificate": lambda: ca.issue(f"spiffe://{td}/node/weak", 600, key_type=KeyType.ML_DSA_44),
        "frame_before_hello": lambda: ca.issue(f"spiffe://{td}/node/chatty", 600),
        "classical_only_client": lambda: ca.issue(f"spiffe://{td}/node/classic", 600),
    }
    if case == "other_trust_domain":
        if other is None:
            raise PermanentError("other_trust_domain needs --other-ca")
        svid = other.issue(f"spiffe://{other.trust_domain}/node/stranger", 600)
        bundles = {other.trust_domain: other.bundle(), td: ca.bundle()}
    else:
        svid = issue[case]()
        bundles = {td: ca.bundle()}
    return Credentials(svid, bundles, AuthorizationPolicy.build(td))


async def _tls_client(case: str, host: str, port: int, ca: CertificateAuthority,
                      other: CertificateAuthority | None) -> str:
    groups = ("X25519",) if case == "classical_only_client" else ("X25519MLKEM768",)
    ep = TlsEndpoint(TlsPolicy(groups=groups, allowed_key_algorithms=None), credentials(case, ca, other))
    try:
        stream = await ep.connect(host, port, resume=False)
        # a Ping before the Hello: a frame the session's state machine does not allow yet
        await stream.send(encode(Ping(1) if case == "frame_before_hello" else Hello("attacker")))
        data = await SYSTEM.wait_for(stream.recv(), 10)
        if case == "frame_before_hello":  # the server's Hello may come first: read on to the close
            while data:
                data = await SYSTEM.wait_for(stream.recv(), 10)
            return "refused: closed by the server"
        await stream.close()
        return f"not refused: got {len(data)} bytes"
    except (HandshakeFailed, TlsClosed) as exc:
        return f"refused: {exc}"
    finally:
        ep.close()


async def _no_certificate(host: str, port: int, tls12: bool = False) -> str:
    """A client without a certificate: TLS 1.3, or (``tls12``) one that offers TLS 1.2 at most."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    if tls12:
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    else:
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(20):
            with contextlib.suppress(SSL.WantReadError):
                conn.do_handshake()
                conn.send(encode(Hello("attacker")))
            with contextlib.suppress(SSL.WantReadError):
                writer.write(conn.bio_read(1 << 20))
            data = await SYSTEM.wait_for(reader.read(1 << 20), 10)
            if not data:
                return "refused: closed"
            conn.bio_write(data)
            with contextlib.suppress(SSL.WantReadError):
                conn.recv(1 << 16)
        return "not refused"
    except SSL.Error as exc:
        return f"refused: {exc}"
    finally:
        writer.close()


async def _raw(case: str, host: str, port: int, wait: float) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if case == "garbage":
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)))
        else:
            writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello that stops
        await writer.drain()
        data = await SYSTEM.wait_for(reader.read(), wait)
        return f"closed by the server after {len(data)} bytes"
    finally:
        writer.close()


async def run_case(case: str, host: str, port: int, ca: CertificateAuthority,
                   other: CertificateAuthority | None = None, wait: float = 30.0) -> str:
    if case in ("no_client_certificate", "tls12_client"):
        return await _no_certificate(host, port, tls12=case == "tls12_client")
    if case in ("garbage", "never_completes"):
        return await _raw(case, host, port, wait)
    return await _tls_client(case, host, port, ca, other)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m x0tta.peer.attack")
    p.add_argument("--ca", required=True)
    p.add_argument("--other-ca")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("cases", nargs="+", choices=sorted(EXPECTED))
    args = p.parse_args(argv)
    if "other_trust_domain" in args.cases and not args.other_ca:
        p.error("other_trust_domain needs --other-ca")
    ca = CertificateAuthority(Path(args.ca))
    other = CertificateAuthority(Path(args.other_ca)) if args.other_ca else None

    async def go() -> None:
        for case in args.cases:
            try:
                seen = await run_case(case, args.host, args.port, ca, other)
            except Exception as exc:  # report, then go on with the next case
                seen = f"error: {type(exc).__name__}: {exc}"
            print(json.dumps({"case": case, "client_saw": seen}), flush=True)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
