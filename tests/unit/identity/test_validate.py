"""X509-SVID verification: one test per reason code, with real ML-DSA-65 certificates from the CA."""

from __future__ import annotations

import time
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import crypto

from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core import certs
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import (
    Reason,
    RevocationList,
    SvidError,
    SvidRejected,
    TrustBundle,
    X509Svid,
    key_algorithm,
    validate_x509_svid,
)

ID = "spiffe://mesh.x0tta/node/a"


def bundles(*cas: CertificateAuthority) -> dict[str, TrustBundle]:
    return {c.trust_domain: c.bundle() for c in cas}


def verdict(chain: list[x509.Certificate] | tuple[x509.Certificate, ...], ca: CertificateAuthority, **kw: object):
    return validate_x509_svid(chain, bundles(ca), time.time(), **kw)  # type: ignore[arg-type]


def test_valid_ml_dsa_svid_is_accepted_with_or_without_the_root(ca: CertificateAuthority) -> None:
    svid = ca.issue(ID, 3600)
    for chain in ([svid.leaf], [svid.leaf, ca.root]):
        v = verdict(chain, ca)
        assert v.ok and v.spiffe_id == SpiffeId.parse(ID) and v.key_algorithm == "ML-DSA-65"
        assert v.raise_for() == v.spiffe_id


def test_no_certificate(ca: CertificateAuthority) -> None:
    assert verdict([], ca).reason is Reason.NO_CERTIFICATE


def _bare_leaf(ca: CertificateAuthority, sans: list[x509.GeneralName]) -> x509.Certificate:
    """A leaf signed by ``ca`` whose subject alternative names are ``sans`` and nothing else."""
    key = certs.generate_key(KeyType.ML_DSA_65)
    now = time.time()
    return certs.build_leaf(ca._key, ca.root, key.public_key(), SpiffeId.parse(ID), now - 60, now + 3600, sans=sans)


def test_no_uri_san(ca: CertificateAuthority) -> None:
    assert verdict([_bare_leaf(ca, [])], ca).reason is Reason.NO_URI_SAN
    assert verdict([_bare_leaf(ca, [x509.DNSName("a.example")])], ca).reason is Reason.NO_URI_SAN


def test_multiple_uri_sans(ca: CertificateAuthority) -> None:
    svid = ca.issue(ID, 3600, extra_uris=("spiffe://mesh.x0tta/node/b",))
    assert verdict(svid.cert_chain, ca).reason is Reason.MULTIPLE_URI_SANS


@pytest.mark.parametrize("uri", ["https://mesh.x0tta/node/a", "spiffe://mesh.x0tta", "spiffe://mesh.x0tta/a//b"])
def test_bad_spiffe_id(ca: CertificateAuthority, uri: str) -> None:
    leaf = _bare_leaf(ca, [x509.UniformResourceIdentifier(uri)])
    assert verdict([leaf], ca).reason is Reason.BAD_SPIFFE_ID


def test_leaf_is_ca(ca: CertificateAuthority) -> None:
    assert verdict(ca.issue(ID, 3600, leaf_is_ca=True).cert_chain, ca).reason is Reason.LEAF_IS_CA


def test_root_presented_as_leaf_is_refused(ca: CertificateAuthority) -> None:
    # The root carries the trust domain's own ID (no path): refused before anything else.
    assert verdict([ca.root], ca).reason is Reason.BAD_SPIFFE_ID


def test_missing_digital_signature_usage(ca: CertificateAuthority) -> None:
    assert verdict(ca.issue(ID, 3600, key_usage=False).cert_chain, ca).reason is Reason.BAD_KEY_USAGE


def test_other_trust_domain(ca: CertificateAuthority, other_ca: CertificateAuthority) -> None:
    svid = other_ca.issue("spiffe://other.org/node/x", 3600)
    assert verdict(svid.cert_chain, ca).reason is Reason.UNTRUSTED_DOMAIN
    # ...accepted when that domain is federated, refused by a policy that does not name it
    both = bundles(ca, other_ca)
    assert validate_x509_svid(svid.cert_chain, both, time.time()).ok
    policy = AuthorizationPolicy.build("mesh.x0tta", allowed_patterns=("/node/*",))
    v = validate_x509_svid(svid.cert_chain, both, time.time(), policy=policy)
    assert v.reason is Reason.UNAUTHORIZED


def test_impostor_ca_with_the_same_name(ca: CertificateAuthority, impostor_ca: CertificateAuthority) -> None:
    svid = impostor_ca.issue(ID, 3600)
    v = verdict(svid.cert_chain, ca)
    assert v.reason is Reason.BAD_CHAIN
    # sending the impostor root along does not help
    assert verdict([svid.leaf, impostor_ca.root], ca).reason is Reason.BAD_CHAIN


def test_non_ca_intermediate_breaks_the_chain(ca: CertificateAuthority) -> None:
    a, b = ca.issue(ID, 3600), ca.issue("spiffe://mesh.x0tta/node/b", 3600)
    assert verdict([a.leaf, b.leaf], ca).reason is Reason.BAD_CHAIN


def test_not_yet_valid(ca: CertificateAuthority) -> None:
    now = time.time()
    svid = ca.issue(ID, 3600, not_before=now + 600)
    assert verdict(svid.cert_chain, ca).reason is Reason.NOT_YET_VALID


def test_expired(ca: CertificateAuthority) -> None:
    svid = ca.issue(ID, 600, now=time.time() - 3600)
    v = verdict(svid.cert_chain, ca)
    assert v.reason is Reason.EXPIRED and "leaf expired" in v.detail
    with pytest.raises(SvidRejected) as err:
        v.raise_for()
    assert err.value.reason is Reason.EXPIRED


def test_revoked(fresh_ca: CertificateAuthority) -> None:
    ca = fresh_ca
    svid, other = ca.issue(ID, 3600), ca.issue("spiffe://mesh.x0tta/node/b", 3600)
    ca.revoke(spiffe_id=ID)
    rl = ca.revocation_list()
    assert verdict(svid.cert_chain, ca, revocations=[rl]).reason is Reason.REVOKED
    assert verdict(other.cert_chain, ca, revocations=[rl]).ok


def test_key_algorithm_not_allowed(ca: CertificateAuthority) -> None:
    svid = ca.issue(ID, 3600, key_type=KeyType.ECDSA_P256)
    assert key_algorithm(svid.leaf) == "ECDSA-P256"
    assert verdict(svid.cert_chain, ca).ok
    v = verdict(svid.cert_chain, ca, allowed_key_algorithms=frozenset({"ML-DSA-65"}))
    assert v.reason is Reason.KEY_ALGORITHM_NOT_ALLOWED


def test_unauthorized(ca: CertificateAuthority) -> None:
    svid = ca.issue("spiffe://mesh.x0tta/workload/db", 3600)
    policy = AuthorizationPolicy.build("mesh.x0tta", allowed_patterns=("/node/*",))
    assert verdict(svid.cert_chain, ca, policy=policy).reason is Reason.UNAUTHORIZED
    assert verdict(ca.issue(ID, 3600).cert_chain, ca, policy=policy).ok


def test_reason_codes_are_the_documented_strings() -> None:
    assert {r.value for r in Reason} >= {
        "no_uri_san",
        "multiple_uri_sans",
        "leaf_is_ca",
        "expired",
        "not_yet_valid",
        "untrusted_domain",
        "bad_chain",
        "revoked",
        "unauthorized",
    }


# -- the types themselves --------------------------------------------------------------------------
def test_svid_pem_round_trip_and_pyopenssl_loads_the_ml_dsa_key(ca: CertificateAuthority) -> None:
    svid = ca.issue(ID, 3600)
    again = X509Svid.from_pem(svid.chain_pem(), svid.private_key_pem)
    assert again == svid
    assert "PRIVATE" not in repr(svid)
    crypto.load_privatekey(crypto.FILETYPE_PEM, svid.private_key_pem)  # the form the TLS layer needs
    crypto.X509.from_cryptography(svid.leaf)


def test_svid_with_the_wrong_key_is_refused(ca: CertificateAuthority) -> None:
    a, b = ca.issue(ID, 3600), ca.issue(ID, 3600)
    with pytest.raises(SvidError, match="does not match"):
        X509Svid.from_pem(a.chain_pem(), b.private_key_pem)
    with pytest.raises(SvidError):
        X509Svid.from_pem(b"junk", a.private_key_pem)
    with pytest.raises(SvidError):
        X509Svid.from_pem(a.chain_pem(), b"junk")


def test_renew_at_falls_after_issuance_even_for_short_lifetimes(ca: CertificateAuthority) -> None:
    now = time.time()
    svid = ca.issue(ID, 10, now=now)
    assert now < svid.renew_at(0.5) < svid.expires_at
    assert svid.lifetime == pytest.approx(11, abs=1)


def test_bundle_der_round_trip(ca: CertificateAuthority, other_ca: CertificateAuthority) -> None:
    der = b"".join(c.root.public_bytes(serialization.Encoding.DER) for c in (ca, other_ca))
    b = TrustBundle.from_der_concat("x", der)
    assert b.roots == (ca.root, other_ca.root)
    for bad in (b"", b"\x30\x82\xff\xff", b"\x31\x00", der[:-1]):
        with pytest.raises(SvidError):
            TrustBundle.from_der_concat("x", bad)


def test_crl_from_another_key_is_refused(fresh_ca: CertificateAuthority, impostor_ca: CertificateAuthority) -> None:
    forged = certs.build_crl(impostor_ca._key, impostor_ca.root, [], 99, time.time(), 60)
    with pytest.raises(SvidError, match="signature"):
        RevocationList.from_crl(forged.public_bytes(serialization.Encoding.PEM), fresh_ca.bundle())
    with pytest.raises(SvidError):
        RevocationList.from_crl(b"garbage", fresh_ca.bundle())
    assert RevocationList.from_crl(fresh_ca.crl_pem(), fresh_ca.bundle()).serials == frozenset()


def test_a_duplicated_extension_is_malformed_not_an_exception(ca: CertificateAuthority) -> None:
    # one flipped byte turns the SAN's OID (2.5.29.17) into key usage's (2.5.29.15): cryptography
    # parses the certificate and raises DuplicateExtension, not a ValueError, on its extensions
    der = ca.issue(ID, 3600).leaf.public_bytes(serialization.Encoding.DER)
    san, ku = bytes.fromhex("0603551d11"), bytes.fromhex("0603551d0f")
    assert der.count(san) == 1 and der.count(ku) == 1
    cert = x509.load_der_x509_certificate(der.replace(san, ku))
    v = validate_x509_svid([cert], bundles(ca), time.time())
    assert v.reason is Reason.MALFORMED and "2.5.29.15" in v.detail


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_property_mutated_certificates_get_a_verdict(ca: CertificateAuthority, data: st.DataObject) -> None:
    """Flip, cut or insert bytes anywhere in a valid leaf: whatever cryptography still parses gets a
    verdict, never an exception (hostile peers choose these bytes)."""
    der = bytearray(_LEAF_DER.get(ca) or ca.issue(ID, 3600).leaf.public_bytes(serialization.Encoding.DER))
    _LEAF_DER[ca] = bytes(der)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            der[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del der[i : i + data.draw(st.integers(1, 64))]
        else:
            der[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        if not der:
            return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "negative serial number": parsing is not what is tested
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
        except (ValueError, x509.InvalidVersion):  # not a certificate cryptography will hand out
            return
        v = validate_x509_svid([cert], bundles(ca), time.time())
    assert v.reason is None or isinstance(v.reason, Reason)


_LEAF_DER: dict[CertificateAuthority, bytes] = {}


def test_crl_checked_against_every_root_of_its_name(
    fresh_ca: CertificateAuthority, impostor_ca: CertificateAuthority
) -> None:
    """Two roots with one name (a root rollover) in the bundle: the CRL of either verifies."""
    both = TrustBundle("mesh.x0tta", (impostor_ca.root, fresh_ca.root))
    assert RevocationList.from_crl(fresh_ca.crl_pem(), both).number >= 1
    assert RevocationList.from_crl(impostor_ca.crl_pem(), both).number >= 1


def test_load_der_chain_turns_parse_failures_into_malformed(ca: CertificateAuthority) -> None:
    from x0tta.identity.core.types import load_der_chain

    der = ca.issue(ID, 3600).leaf.public_bytes(serialization.Encoding.DER)
    assert load_der_chain([der])[0].public_bytes(serialization.Encoding.DER) == der
    bad_version = bytearray(der)
    bad_version[bad_version.index(b"\xa0\x03\x02\x01\x02") + 4] = 3  # X.509 "v4"
    for junk in (b"", b"\x30\x00", der[:100], bytes(bad_version)):
        with pytest.raises(SvidRejected) as err:
            load_der_chain([der, junk])
        assert err.value.reason is Reason.MALFORMED
