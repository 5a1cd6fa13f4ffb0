"""Signed birth and death: a node's own status messages verify; unsigned, altered, another node's
or another CA's do not, each with the reason."""

from __future__ import annotations

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from x0tta.fleet.core import payloads
from x0tta.fleet.core.signing import StatusSignatureError, load_cas, sign_status, verify_status


def leaf(ca: trustme.CA, name: str):
    cert = ca.issue_cert(f"{name}.fleet.invalid", common_name=name)
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    return key, cert.cert_chain_pems[0].bytes()


@pytest.fixture(scope="module")
def fleet():
    ca = trustme.CA()
    return ca, load_cas(ca.cert_pem.bytes())


def test_a_signed_birth_and_will_verify_and_survive_the_wire(fleet):
    ca, cas = fleet
    key, pem = leaf(ca, "n1")
    for obj in (payloads.birth("k1", "n1", 1_800_000_000.0, 3, "0.1", 1.0),
                payloads.death("k2", "n1", 1_800_000_000.0, 3, "lost")):
        signed = payloads.decode(payloads.encode(sign_status(obj, key, pem)))
        assert verify_status(signed, cas, now=now_of(pem)) == "n1"


def now_of(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_before_utc.timestamp() + 60


@pytest.mark.parametrize(("forge", "why"), [
    (lambda o, k, p, k2, p2: o, "unsigned"),
    (lambda o, k, p, k2, p2: {**sign_status(o, k, p), "body": {**o["body"], "reason": "shutdown"}}, "does not verify"),
    (lambda o, k, p, k2, p2: sign_status(o, k2, p2), "certificate is"),  # n2 signs a death for n1
    (lambda o, k, p, k2, p2: {**sign_status(o, k, p), "sig": "x"}, "not {alg"),
    (lambda o, k, p, k2, p2: {**sign_status(o, k, p), "sig": {**sign_status(o, k, p)["sig"], "cert": p2.decode()}},
     "certificate is"),
])
def test_forged_deaths_are_recognised(fleet, forge, why):
    ca, cas = fleet
    k1, p1 = leaf(ca, "n1")
    k2, p2 = leaf(ca, "n2")
    death = payloads.death("k3", "n1", now_of(p1), 3, "lost")
    with pytest.raises(StatusSignatureError, match=why):
        verify_status(forge(death, k1, p1, k2, p2), cas)


def test_a_certificate_of_another_ca_is_refused(fleet):
    _, cas = fleet
    key, pem = leaf(trustme.CA(), "n1")
    with pytest.raises(StatusSignatureError, match=r"not a fleet CA|not signed by the fleet CA"):
        verify_status(sign_status(payloads.death("k4", "n1", now_of(pem), 3, "lost"), key, pem), cas)


def test_outside_the_certificate_validity_is_refused(fleet):
    ca, cas = fleet
    key, pem = leaf(ca, "n1")
    with pytest.raises(StatusSignatureError, match="not valid at"):
        verify_status(sign_status(payloads.death("k5", "n1", 1000.0, 3, "lost"), key, pem), cas)
