"""Fuzz the attack suite's OGM frame decoder (x0tta/lab/core/attacks.py, which the lab's attacker
uses on the frames it hears): any bytes either decode or raise AttackDecodeError, nothing else;
what decodes has its TVLVs and gateway read without another error.

Inputs are seeded and reproducible (``X0TTA_FUZZ_SEED``): half are valid frames mutated (bit
flips, cut, grown, bytes rewritten), half random bytes of any length.
"""

from __future__ import annotations

import os
import random

import pytest

from x0tta.lab.core import attacks as a

pytestmark = pytest.mark.fuzz

N_INPUTS = 100_000
SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261206"))


def valid(rng: random.Random) -> bytes:
    src = a.random_mac(rng)
    tvlvs = a.gateway_tvlv(rng.randrange(1 << 30), rng.randrange(1 << 30)) if rng.random() < 0.5 else b""
    if rng.random() < 0.2:
        tvlvs += a.tvlv(rng.randrange(256), rng.randrange(256), rng.randbytes(rng.randrange(12)))
    if rng.random() < 0.7:
        ogms = b"".join(a.ogm_iv(a.random_mac(rng), rng.randrange(1 << 32), tq=rng.randrange(256), tvlvs=tvlvs)
                        for _ in range(rng.randint(1, 3)))
    else:
        ogms = a.ogm2(src, rng.randrange(1 << 32), throughput=rng.randrange(1 << 32), tvlvs=tvlvs)
    return a.ethernet(src, ogms)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choices(range(4), weights=(6, 1, 1, 2))[0]
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)):]
        elif op == 2:
            buf += rng.randbytes(rng.randrange(1, 40))
        elif buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


def test_frames_decode_or_raise_the_decode_error():
    rng = random.Random(SEED)
    decoded = 0
    for i in range(N_INPUTS):
        data = mutate(rng, valid(rng)) if i % 2 == 0 else rng.randbytes(rng.randrange(80))
        try:
            _, _, ogms = a.decode_frame(data)
            for ogm in ogms:
                a.gateway_of(ogm)
            decoded += 1
        except a.AttackDecodeError:
            pass
    assert decoded > N_INPUTS // 20  # the mutations keep many frames whole: the valid paths ran
