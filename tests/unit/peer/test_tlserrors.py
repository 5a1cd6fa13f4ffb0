"""The table from OpenSSL's error codes to refusal reasons, and the shim that keeps the codes.

Every code the table names is checked against the installed OpenSSL (its text says what the code
is), every mapped code gives its reason as :class:`HandshakeFailed` would carry it, and real
handshake steps over memory BIOs (no sockets) show the codes arriving through
:func:`x0tta.peer.osslshim.do_handshake`.
"""

from __future__ import annotations

import time

import pytest
from OpenSSL import SSL

from tests.kit.pki import TestCA
from x0tta.peer import osslshim
from x0tta.peer.osslshim import OpensslError
from x0tta.peer.tlserrors import ALERTS, KNOWN, TABLE, HandshakeFailed, Refusal, classify, refusal
from x0tta.peer.tlspolicy import Contexts, TlsPolicy, Verification

SSL_LIB = 20

# (library, reason), OpenSSL's text for it, the reason a handshake refused with it reports
MAPPED = [
    ((SSL_LIB, 199), "peer did not return a certificate", "no_certificate"),
    ((SSL_LIB, 101), "no suitable key share", "no_shared_group"),
    ((SSL_LIB, 410), "no shared groups", "no_shared_group"),
    ((SSL_LIB, 295), "no suitable groups", "no_shared_group"),
    ((SSL_LIB, 258), "unsupported protocol", "protocol_version"),
    ((SSL_LIB, 116), "bad protocol version number", "protocol_version"),
    ((SSL_LIB, 1070), "tlsv1 alert protocol version", "peer_refused"),
    ((SSL_LIB, 1040), "tls alert handshake failure", "peer_refused"),
    ((SSL_LIB, 1042), "tls alert bad certificate", "peer_refused"),
    ((SSL_LIB, 1048), "tlsv1 alert unknown ca", "peer_refused"),
    ((SSL_LIB, 1010), "tls alert unexpected message", "peer_refused"),
    ((SSL_LIB, 1050), "tlsv1 alert decode error", "peer_refused"),
    ((SSL_LIB, 1116), "tlsv13 alert certificate required", "peer_refused"),
    ((SSL_LIB, 205), "invalid alert", "peer_refused"),
    ((SSL_LIB, 246), "unknown alert type", "peer_refused"),
    ((SSL_LIB, 409), "too many warn alerts", "peer_refused"),
    ((SSL_LIB, 267), "wrong version number", "not_tls"),
    ((SSL_LIB, 198), "packet length too long", "not_tls"),
    ((SSL_LIB, 252), "unknown protocol", "not_tls"),
    ((SSL_LIB, 156), "http request", "not_tls"),
    ((SSL_LIB, 313), "record layer failure", "not_tls"),
    ((SSL_LIB, 443), "bad record type", "not_tls"),
    ((SSL_LIB, 244), "unexpected message", "not_tls"),
    ((SSL_LIB, 266), "wrong ssl version", "not_tls"),
    ((SSL_LIB, 213), "record length mismatch", "not_tls"),
    ((SSL_LIB, 159), "length mismatch", "not_tls"),
    ((SSL_LIB, 131), "ca dn length mismatch", "not_tls"),
    ((SSL_LIB, 135), "cert length mismatch", "not_tls"),
    ((SSL_LIB, 163), "ext length mismatch", "not_tls"),
    ((SSL_LIB, 115), "bad packet length", "not_tls"),
    ((SSL_LIB, 426), "ech decode error", "not_tls"),
    ((13, 110), "decode error", "not_tls"),
    ((13, 119), "explicit length mismatch", "not_tls"),
    ((13, 148), "sequence length mismatch", "not_tls"),
    ((5, 104), "decode error", "not_tls"),
    ((5, 109), "bn decode error", "not_tls"),
    ((6, 114), "decode error", "not_tls"),
    ((10, 104), "decode error", "not_tls"),
    ((10, 108), "bn decode error", "not_tls"),
    ((11, 125), "public key decode error", "not_tls"),
    ((16, 142), "decode error", "not_tls"),
    ((34, 126), "issuer decode error", "not_tls"),
]


def _failed(exc: Exception) -> HandshakeFailed:
    """What the transport raises for an OpenSSL failure with no certificate verdict."""
    return HandshakeFailed(*classify(exc))


@pytest.mark.parametrize(("code", "text", "reason"), MAPPED, ids=[t for _, t, _ in MAPPED])
def test_each_mapped_openssl_error_gives_its_reason(code, text, reason) -> None:
    assert osslshim.error_text(code)[1] == text  # the number is the code the table means, in this OpenSSL
    exc = _failed(OpensslError([code]))
    assert isinstance(exc, HandshakeFailed) and exc.reason == reason
    assert text in exc.detail  # the detail is pyOpenSSL's text of the queue, as before


def test_the_cases_above_are_every_named_code_of_the_table() -> None:
    named = {code for code, _, _ in MAPPED}
    assert named <= KNOWN
    assert KNOWN - named <= ALERTS  # the rest: alerts by number, each tested below


def test_every_alert_openssl_knows_is_the_peers_refusal() -> None:
    alerts = [(SSL_LIB, r) for r in range(1000, 1256) if "alert" in osslshim.error_text((SSL_LIB, r))[1]]
    assert len(alerts) > 25
    for code in alerts:
        assert refusal([code]) == Refusal.PEER_REFUSED
    for r in range(1110, 1115):  # the TLS 1.2 extension alerts, whose text names no alert: tls_error, as ever
        assert osslshim.error_text((SSL_LIB, r))[1].startswith("tlsv1 ")
        assert refusal([(SSL_LIB, r)]) == Refusal.TLS_ERROR


def _former_text_rule(text: str) -> str:
    """How refusals were told before the table: substrings of pyOpenSSL's error text (2026-12).
    Kept as the reference the table must agree with."""
    text = text.lower()
    if "peer did not return a certificate" in text:
        return "no_certificate"
    if "no suitable key share" in text or "no shared group" in text or "no suitable group" in text:
        return "no_shared_group"
    if "unsupported protocol" in text or ("protocol version" in text and "alert" not in text):
        return "protocol_version"
    if "alert" in text:
        return "peer_refused"
    if any(s in text for s in ("wrong version number", "packet length too long", "unknown protocol",
                               "http request", "record layer failure", "bad record type",
                               "unexpected message", "wrong ssl version", "record length mismatch",
                               "length mismatch", "bad packet length", "decode error")):
        return "not_tls"
    return "tls_error"


def test_the_table_decides_every_ssl_code_as_the_former_text_rules_did() -> None:
    seen = 0
    for r in range(1, 1300):
        code = (SSL_LIB, r)
        if not osslshim.error_text(code)[1]:
            continue
        seen += 1
        assert refusal([code]) == _former_text_rule(str(OpensslError([code]))), code
    assert seen > 300  # the installed OpenSSL's SSL reasons, all of them


# Codes the former text rules also matched that no peer handshake can raise: they come from
# reading PEM, PKCS#12, CMS or CT data, our own private key, or a socket BIO (the transport's BIOs
# are memory BIOs). The table leaves them out (tls_error).
NOT_IN_A_HANDSHAKE = {
    (11, 118),  # X509_R_BASE64_DECODE_ERROR
    (6, 145),  # EVP_R_PRIVATE_KEY_DECODE_ERROR
    (32, 131),  # BIO_R_UNSUPPORTED_PROTOCOL_FAMILY
    (35, 101),  # PKCS12_R_DECODE_ERROR
    (46, 169), (46, 187),  # CMS_R_RECEIPT_DECODE_ERROR, CMS_R_DECODE_ERROR
    (50, 108),  # CT_R_BASE64_DECODE_ERROR
}


def test_other_libraries_codes_as_the_former_text_rules_did_where_a_handshake_can_raise_them() -> None:
    for lib in range(1, 70):
        if lib == SSL_LIB:
            continue
        for r in range(1, 300):
            code = (lib, r)
            text = osslshim.error_text(code)[1]
            if not text or code in NOT_IN_A_HANDSHAKE:
                continue
            assert refusal([code]) == _former_text_rule(str(OpensslError([code]))), (code, text)
    assert all(refusal([code]) == Refusal.TLS_ERROR for code in NOT_IN_A_HANDSHAKE)


def test_a_code_outside_the_table_and_an_empty_queue_are_tls_errors() -> None:
    assert refusal([(SSL_LIB, 304)]) == Refusal.TLS_ERROR  # a code no rule names
    assert refusal([]) == Refusal.TLS_ERROR
    assert classify(SSL.SysCallError(-1, "Unexpected EOF"))[0] == Refusal.TLS_ERROR  # OpenSSL gave no code


def test_first_rule_wins_whatever_the_order_in_the_queue() -> None:
    # a received alert says more than the record error that follows it, in either order
    assert refusal([(SSL_LIB, 313), (SSL_LIB, 1040)]) == Refusal.PEER_REFUSED
    assert refusal([(SSL_LIB, 1040), (SSL_LIB, 313)]) == Refusal.PEER_REFUSED
    # a missing certificate is said as such even when an alert went with it
    assert refusal([(SSL_LIB, 1116), (SSL_LIB, 199)]) == "no_certificate"
    # "unsupported protocol" is ours even with an alert; a bad version number with an alert is the peer's
    assert refusal([(SSL_LIB, 1070), (SSL_LIB, 258)]) == Refusal.PROTOCOL_VERSION
    assert refusal([(SSL_LIB, 116)]) == Refusal.PROTOCOL_VERSION
    assert refusal([(SSL_LIB, 1070), (SSL_LIB, 116)]) == Refusal.PEER_REFUSED


def test_rules_are_in_the_order_their_reasons_take_precedence() -> None:
    reasons = [r.reason for r in TABLE]
    assert reasons.index("no_certificate") < reasons.index("no_shared_group") < reasons.index("protocol_version")
    assert reasons.index("protocol_version") < reasons.index("peer_refused") < reasons.index("not_tls")
    assert all(r.why for r in TABLE)


@pytest.mark.parametrize(("code", "text", "reason"), MAPPED[:8], ids=[t for _, t, _ in MAPPED[:8]])
def test_pyopenssls_own_error_is_read_back_to_its_codes(code, text, reason) -> None:
    """An SSL.Error pyOpenSSL raised itself keeps only OpenSSL's text of each code: the table's
    codes are found again by that exact text, and classify the same."""
    lib_text, reason_text = osslshim.error_text(code)
    plain = SSL.Error([(lib_text, "", reason_text)])
    assert osslshim.codes_of(plain, KNOWN) == (code,)
    assert classify(plain) == classify(OpensslError([code]))


def test_an_openssl_error_reads_as_pyopenssls() -> None:
    lib_text, reason_text = osslshim.error_text((SSL_LIB, 156))
    assert str(OpensslError([(SSL_LIB, 156)])) == str(SSL.Error([(lib_text, "", reason_text)]))


def test_error_codes_unpack_as_openssls_macros() -> None:
    assert osslshim.error_code((20 << 23) | 156) == (20, 156)
    assert osslshim.error_code((1 << 31) | 104) == (osslshim.ERR_LIB_SYS, 104)  # a system error: the errno


# -- real handshake steps over memory BIOs ---------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("mesh.test")


def _step(conn: SSL.Connection) -> bytes:
    try:
        osslshim.do_handshake(conn)
    except SSL.WantReadError:
        pass
    try:
        return conn.bio_read(65536)
    except SSL.WantReadError:
        return b""


def _conn(ca: TestCA, role: str, policy: TlsPolicy | None = None) -> SSL.Connection:
    creds = ca.credentials(ca.issue(path=f"/node/{role}"))
    contexts = Contexts(policy or TlsPolicy(), creds, time.time)
    conn = SSL.Connection(contexts.server if role == "server" else contexts.client, None)
    conn.set_app_data(Verification(creds, None))  # the verify callback's scratch, as the endpoint sets it
    if role == "server":
        conn.set_accept_state()
    else:
        conn.set_connect_state()
    return conn


def _server(ca: TestCA) -> SSL.Connection:
    return _conn(ca, "server")


def test_bytes_that_are_not_tls_fail_with_their_code(ca) -> None:
    server = _server(ca)
    server.bio_write(b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n")
    with pytest.raises(OpensslError) as info:
        osslshim.do_handshake(server)
    assert (SSL_LIB, 156) in info.value.codes
    assert _failed(info.value).reason == Refusal.NOT_TLS


def test_a_classical_only_client_fails_with_the_group_code(ca) -> None:
    server = _server(ca)
    client = _conn(ca, "client", TlsPolicy(groups=("X25519",)))
    server.bio_write(_step(client))
    with pytest.raises(OpensslError) as info:
        osslshim.do_handshake(server)
    assert set(info.value.codes) & {(SSL_LIB, 101), (SSL_LIB, 410), (SSL_LIB, 295)}, info.value.codes
    assert _failed(info.value).reason == Refusal.NO_SHARED_GROUP


def test_a_step_that_waits_for_input_is_pyopenssls_want_read(ca) -> None:
    server = _server(ca)
    with pytest.raises(SSL.WantReadError):
        osslshim.do_handshake(server)


def test_a_full_handshake_through_the_shim_and_what_it_reads_after(ca) -> None:
    server = _server(ca)
    client = _conn(ca, "client")
    for _ in range(10):  # the flights of a TLS 1.3 mutual handshake, both ends stepped by turns
        server.bio_write(_step(client) or b"")
        out = _step(server)
        if out:
            client.bio_write(out)
        if client.get_peer_certificate() is not None and server.get_peer_certificate() is not None:
            break
    assert server.get_peer_certificate() is not None
    assert client.get_group_name() == "X25519MLKEM768"  # the group list set_groups gave the contexts
    assert osslshim.session_reused(client) is False and osslshim.session_reused(server) is False
    assert server.get_app_data().verdict_reason is None and client.get_app_data().verdict_reason is None


def test_a_python_error_in_the_verify_callback_is_raised_not_lost(ca) -> None:
    """pyOpenSSL keeps what a callback raised and raises it from the failed call: the shim too."""
    server, client = _server(ca), _conn(ca, "client")
    client.set_app_data(None)  # the callback's scratch missing: it fails, and refuses
    server.bio_write(_step(client))
    client.bio_write(_step(server))
    with pytest.raises(AttributeError):
        osslshim.do_handshake(client)


def test_verify_error_string_is_openssls_text() -> None:
    assert osslshim.verify_error_string(10) == "certificate has expired"  # X509_V_ERR_CERT_HAS_EXPIRED
