"""Fuzz what identity reads from peers: SPIFFE IDs and certificate chains.

* 120,000 strings, seeded: mutations of valid IDs (characters inserted, replaced, deleted,
  duplicated slashes, case flips, percent signs) and random text. Every one parses to an ID that
  prints back to the same string, or raises SpiffeIdError; nothing else.
* 20,000 mutated DER leaf certificates (bit flips, cuts, inserts) go through ``load_der_chain``
  and ``validate_x509_svid``: a parse failure is ``SvidRejected(MALFORMED)``, anything parsed gets
  a verdict; no other exception, and no mutant is ever accepted as valid.

Seeded, so a failure replays; X0TTA_FUZZ_SEED explores other seeds.
"""

from __future__ import annotations

import os
import random
import string
import time
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from x0tta.common.spiffe_id import SpiffeId, SpiffeIdError
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core.types import Reason, SvidRejected, load_der_chain, validate_x509_svid

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261126"))
SEEDS = [
    "spiffe://mesh.x0tta/node/r1",
    "spiffe://a-b_c.d/x/y/z",
    "spiffe://mesh.x0tta",
    "spiffe://td/A.b-C_d/0/...",
]
ALPHABET = string.ascii_letters + string.digits + "._-/:%?#@ \x00é\u2028"


def mutate_text(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(chars) + 1)
        if op == 0:
            chars.insert(i, rng.choice(ALPHABET))
        elif op == 1 and chars:
            chars[min(i, len(chars) - 1)] = rng.choice(ALPHABET)
        elif op == 2 and chars:
            del chars[min(i, len(chars) - 1)]
        elif op == 3:
            chars.insert(i, "/")
        elif op == 4 and chars:
            j = min(i, len(chars) - 1)
            chars[j] = chars[j].swapcase()
        else:
            chars.insert(i, rng.choice(["%2e", "%41", "..", ".", "//"]))
    return "".join(chars)


def test_spiffe_id_parser_holds_the_decoder_promise() -> None:
    rng = random.Random(SEED)
    parsed = 0
    for n in range(120_000):
        if n % 2:
            text = mutate_text(rng, rng.choice(SEEDS))
        else:
            text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
            if n % 4 == 0:
                text = "spiffe://" + text
        try:
            sid = SpiffeId.parse(text)
        except SpiffeIdError:
            continue
        parsed += 1
        assert str(sid) == text, text
    assert parsed > 1000  # the mutations also reach the accepting paths


def test_certificate_chains_get_a_verdict_never_an_exception(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", "mesh.x0tta")
    der = ca.issue("spiffe://mesh.x0tta/node/r1", 3600).leaf.public_bytes(serialization.Encoding.DER)
    bundles = {"mesh.x0tta": ca.bundle()}
    rng = random.Random(SEED)
    now = time.time()
    outcomes: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about some mutants (negative serials)
        for _ in range(20_000):
            d = bytearray(der)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(d))
                r = rng.random()
                if r < 0.6:
                    d[i] ^= rng.randint(1, 255)
                elif r < 0.8:
                    del d[i : i + rng.randint(1, 8)]
                else:
                    d[i:i] = rng.randbytes(rng.randint(1, 8))
            try:
                chain = load_der_chain([bytes(d)])
            except SvidRejected as exc:
                assert exc.reason is Reason.MALFORMED
                outcomes["unparsed"] = outcomes.get("unparsed", 0) + 1
                continue
            verdict = validate_x509_svid(chain, bundles, now)
            key = str(verdict.reason)
            outcomes[key] = outcomes.get(key, 0) + 1
            if verdict.ok:  # only a mutation outside the signed part may keep a valid certificate
                assert chain[0].tbs_certificate_bytes == ca_tbs(der)
    assert outcomes.get("bad_chain", 0) > 1000, outcomes


def ca_tbs(der: bytes) -> bytes:
    from cryptography import x509

    return x509.load_der_x509_certificate(der).tbs_certificate_bytes
