"""Fuzz the guard's OGM map decoder: any key and value either decode or raise OgmDecodeError,
nothing else; what decodes turns into records without error.

Inputs are seeded and reproducible (``X0TTA_FUZZ_SEED``): half are valid entries mutated (bit
flips, cut, grown, the packet type and the slots rewritten), half random bytes of any length.
"""

from __future__ import annotations

import os
import random

import pytest

from x0tta.guard.core.ogm import (
    OGM_STREAM,
    OGM_VALUE_SIZE,
    OGM_VALUE_TAIL,
    OgmDecodeError,
    decode_ogm_key,
    decode_ogm_value,
    ogm_records,
)

pytestmark = pytest.mark.fuzz

N_INPUTS = 100_000
SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261206"))


def valid(rng: random.Random) -> tuple[bytes, bytes]:
    def slot() -> bytes:
        if rng.random() < 0.3:
            return bytes(OGM_STREAM.size)
        first = rng.randrange(1 << 40)
        return OGM_STREAM.pack(first, first + rng.randrange(1 << 32), rng.randrange(1, 1 << 20),
                               rng.randrange(1 << 32), rng.randrange(1 << 32), rng.randrange(64), rng.randbytes(6))

    key = rng.randbytes(6) + b"\0\0"
    claim = (rng.randrange(1, 1 << 40), rng.randrange(64), rng.randbytes(6), rng.randrange(248, 256),
             rng.randrange(256)) if rng.random() < 0.5 else (0, 0, bytes(6), 0, 0)
    return key, slot() + slot() + OGM_VALUE_TAIL.pack(rng.randrange(1 << 16), rng.choice([0, 4]), *claim)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choices(range(5), weights=(6, 1, 1, 2, 2))[0]  # mostly keeping the length
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif op == 2:
            buf[rng.randrange(len(buf) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and len(buf) == OGM_VALUE_SIZE:  # the packet type, or the claim's TQ
            buf[2 * OGM_STREAM.size + rng.choice([8, 34])] = rng.randrange(256)
        elif op == 4 and len(buf) >= OGM_STREAM.size:
            at = rng.choice([0, OGM_STREAM.size]) if len(buf) >= 2 * OGM_STREAM.size else 0
            buf[at : at + OGM_STREAM.size] = rng.choice([bytes(OGM_STREAM.size), rng.randbytes(OGM_STREAM.size)])
    return bytes(buf)


def test_the_ogm_decoder_raises_only_its_decode_error() -> None:
    rng = random.Random(SEED)
    decoded = refused = 0
    for _ in range(N_INPUTS):
        if rng.random() < 0.5:
            key, value = valid(rng)
            key, value = (mutate(rng, key) if rng.random() < 0.2 else key), mutate(rng, value)
        else:
            key, value = rng.randbytes(rng.choice([8, rng.randrange(12)])), rng.randbytes(
                rng.choice([OGM_VALUE_SIZE, rng.randrange(160)]))
        try:
            entry = decode_ogm_value(decode_ogm_key(key), value)
        except OgmDecodeError:
            refused += 1
            continue
        decoded += 1
        for record in ogm_records([entry], {}, since=rng.choice([0.0, 1e3, 1e9])):
            assert 0 <= record.seqno < 1 << 32 and record.at >= 0
    assert decoded > N_INPUTS // 10 and refused > N_INPUTS // 10  # both sides of the decoder were exercised
