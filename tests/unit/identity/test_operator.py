"""Operator keys: both halves must verify, the error names the half that failed, the forms round-trip."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from x0tta.identity.core import operator as op
from x0tta.identity.core.operator import HybridSignature, OperatorKey, OperatorKeyError, SignatureInvalid


@pytest.fixture(scope="module")
def key() -> OperatorKey:
    return OperatorKey.generate()


@pytest.fixture(scope="module")
def other() -> OperatorKey:
    return OperatorKey.generate()


def test_a_signature_verifies_with_both_halves(key):
    sig = key.sign(b"drain eth1")
    op.verify(key.public, b"drain eth1", sig)
    assert len(sig.ed25519) == op.ED25519_SIG_LEN and len(sig.mldsa) == op.MLDSA_SIG_LEN


def test_the_error_names_the_half_that_failed(key, other):
    data = b"drain eth1"
    sig = key.sign(data)
    forged = other.sign(data)
    with pytest.raises(SignatureInvalid) as e:
        op.verify(key.public, data, replace(sig, ed25519=forged.ed25519))
    assert e.value.halves == (op.ED25519,) and "ed25519" in str(e.value)
    with pytest.raises(SignatureInvalid) as e:
        op.verify(key.public, data, replace(sig, mldsa=forged.mldsa))
    assert e.value.halves == (op.MLDSA,)
    with pytest.raises(SignatureInvalid) as e:
        op.verify(key.public, b"drain eth2", sig)
    assert e.value.halves == (op.ED25519, op.MLDSA) and e.value.key_id == key.key_id


def test_a_signature_is_bound_to_the_operator_domain(key):
    # A bare Ed25519 signature of the same bytes (no domain tag) is not an operator signature.
    data = b"x"
    bare = key.ed25519.sign(data)
    with pytest.raises(SignatureInvalid) as e:
        op.verify(key.public, data, replace(key.sign(data), ed25519=bare))
    assert e.value.halves == (op.ED25519,)


def test_the_key_id_is_stable_and_names_both_halves(key, other):
    assert key.key_id == key.public.key_id == op.load_public(key.public.to_pem()).key_id
    assert op.KEY_ID_PATTERN.fullmatch(key.key_id)
    mixed = op.OperatorPublicKey(key.public.ed25519, other.public.mldsa)
    assert mixed.key_id not in (key.key_id, other.key_id)


@pytest.mark.parametrize("form", ["to_pem", "to_json"])
def test_both_forms_round_trip(key, form):
    priv = op.load_private(getattr(key, form)())
    assert priv.public == key.public
    pub = op.load_public(getattr(key.public, form)())
    assert pub == key.public
    op.verify(pub, b"d", priv.sign(b"d"))


def test_a_signature_round_trips_as_json(key):
    sig = key.sign(b"d")
    assert HybridSignature.from_json(json.loads(json.dumps(sig.to_json()))) == sig


@pytest.mark.parametrize("data", [
    b"", b"{}", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    json.dumps({"schema": op.KEY_SCHEMA, "kind": "public", "ed25519": "AAAA", "mldsa65": "AAAA"}).encode(),
    json.dumps({"schema": op.KEY_SCHEMA, "kind": "private", "ed25519": "!!", "mldsa65": "AAAA"}).encode(),
])
def test_bad_key_files_raise_the_typed_error(data):
    with pytest.raises(OperatorKeyError):
        op.load_public(data)
    with pytest.raises(OperatorKeyError):
        op.load_private(data)


def test_one_half_alone_is_not_a_key(key):
    pem = key.public.to_pem()
    with pytest.raises(OperatorKeyError, match="one Ed25519 and one ML-DSA-65"):
        op.load_public(op._pem_blocks(pem)[0])
    with pytest.raises(OperatorKeyError):
        op.load_private(key.public.to_json())  # a public key where a private one is expected


@pytest.mark.parametrize("obj", [None, {}, {"ed25519": "AA==", "mldsa65": "AA=="}, {"ed25519": 1, "mldsa65": 2}])
def test_bad_signatures_raise_the_typed_error(obj):
    with pytest.raises(OperatorKeyError):
        HybridSignature.from_json(obj)
