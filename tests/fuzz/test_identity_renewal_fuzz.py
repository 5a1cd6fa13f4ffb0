"""Fuzz the renewal codec: what a CA node reads from its peers (requests) and what a node reads
back from a CA node (answers).

100,000 inputs for each decoder, seeded (X0TTA_FUZZ_SEED explores others): byte mutations of valid
messages holding a real ML-DSA-65 CSR, certificate and CRL (bit flips, cuts, inserts,
duplications), JSON mutations (fields dropped, retyped, added; status and reason changed), and
random bytes. Each either decodes or raises RenewalDecodeError, nothing else; whatever decodes
encodes back to something that decodes to the same message.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.fuzz.test_fleet_payloads_fuzz import ODD, mutate_bytes
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core import certs
from x0tta.identity.core import renewal as core
from x0tta.identity.core.certs import KeyType

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261126"))
INPUTS = 100_000
FIELDS = ["v", "csr", "status", "chain", "crl", "reason", "detail", "extra"]


def mutate_json(rng: random.Random, obj: dict) -> dict:
    obj = dict(obj)
    keys = list(obj)
    op = rng.randrange(4)
    if op == 0 and keys:
        del obj[rng.choice(keys)]
    elif op == 1 and keys:
        obj[rng.choice(keys)] = rng.choice(ODD)
    elif op == 2:
        obj[rng.choice(FIELDS)] = rng.choice([*ODD, "granted", "refused", "revoked", "wrong_id", 1, 2])
    elif keys:
        k = rng.choice(keys)
        if isinstance(obj[k], str) and obj[k]:
            i = rng.randrange(len(obj[k]))
            obj[k] = obj[k][:i] + rng.choice(["", "\x00", "é", "-----", "\n"]) + obj[k][i + 1:]
    return obj


def run(rng: random.Random, valid: list[bytes], decode, encode) -> tuple[int, int]:
    decoded = refused = 0
    for n in range(INPUTS):
        base = rng.choice(valid)
        kind = n % 10
        if kind < 5:
            data = mutate_bytes(rng, base)
        elif kind < 9:
            data = json.dumps(mutate_json(rng, json.loads(base))).encode()
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            msg = decode(data)
        except core.RenewalDecodeError:
            refused += 1
        else:
            decoded += 1
            assert decode(encode(msg)) == msg
    return decoded, refused


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, bytes]:
    ca = CertificateAuthority.init(Path(tmp_path_factory.mktemp("ca")) / "ca", "mesh.test")
    sid = SpiffeId.parse("spiffe://mesh.test/node/n1")
    csr = certs.build_csr(certs.generate_key(KeyType.ML_DSA_65), sid).public_bytes(serialization.Encoding.PEM)
    leaf = ca.sign(csr, 60.0).public_bytes(serialization.Encoding.PEM)
    return csr, leaf, ca.crl_pem()


def test_the_request_decoder_raises_only_its_decode_error(material):
    csr, _leaf, _crl = material
    valid = [core.encode_request(core.RenewalRequest(csr))]
    decoded, refused = run(random.Random(SEED), valid, core.decode_request, core.encode_request)
    assert decoded and refused and decoded + refused == INPUTS


def test_the_answer_decoder_raises_only_its_decode_error(material):
    _csr, leaf, crl = material
    valid = [core.encode_answer(core.Granted(leaf, crl))] + [
        core.encode_answer(core.Refused(reason, f"because {reason.value}")) for reason in core.RefusalReason
    ]
    decoded, refused = run(random.Random(SEED + 1), valid, core.decode_answer, core.encode_answer)
    assert decoded and refused and decoded + refused == INPUTS
