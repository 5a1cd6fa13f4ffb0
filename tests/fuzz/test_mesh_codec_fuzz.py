"""Fuzz the batadv decoder: every input decodes or raises DecodeError, nothing else (h11's promise).

Inputs: 100,000+ messages from a seeded RNG, half purely random, half mutations of the captured
kernel replies in tests/unit/mesh/golden/ (bit flips, truncation, splices, length fields
rewritten, attributes duplicated, type numbers changed). Seeded, so a failure replays exactly;
set X0TTA_FUZZ_SEED to explore other seeds.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from tests.kit.batadv import GOLDEN
from x0tta.common.errors import DecodeError
from x0tta.mesh.core import batadv, netlink

pytestmark = pytest.mark.fuzz

FAMILY = 28
ROUNDS = 110_000


def corpus() -> list[bytes]:
    out = []
    for path in sorted(GOLDEN.glob("*.hex")):
        out.extend(bytes.fromhex(line) for line in path.read_text().split())
    return out


def mutate(rng: random.Random, seed: bytes, pool: list[bytes]) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 64)))
        if op == 0:  # flip bits
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 2:  # splice another message in
            other = rng.choice(pool)
            at = rng.randrange(len(data) + 1)
            data[at:at] = other[rng.randrange(len(other)) :][: rng.randint(1, 64)]
        elif op == 3 and len(data) >= 4:  # rewrite a 16-bit length/type field somewhere
            at = rng.randrange(0, len(data) - 1)
            struct.pack_into("=H", data, at, rng.choice([0, 1, 3, 4, 5, 0xFFFF, rng.randrange(65536)]))
        elif op == 4 and len(data) >= 4:  # rewrite nlmsg_len
            struct.pack_into("=I", data, 0, rng.choice([0, 15, 16, 17, len(data) + 4, rng.randrange(1 << 32)]))
        elif op == 5:  # append garbage / an unknown attribute
            data += netlink.attr(rng.randrange(1 << 14), rng.randbytes(rng.randint(0, 12)))
        else:  # duplicate a slice
            a = rng.randrange(len(data))
            data += data[a : a + rng.randint(1, 32)]
    return bytes(data)


def check(data: bytes) -> None:
    try:
        batadv.decode_message(data, FAMILY)
        reply = batadv.Reply(FAMILY, int.from_bytes(data[8:12], "little") if len(data) >= 12 else 0, dump=True)
        reply.feed(data)
        for msg in netlink.split_messages(data):
            if msg.type == netlink.GENL_ID_CTRL:
                netlink.decode_family(netlink.parse_genl(msg))
    except DecodeError:
        pass


def test_decoder_raises_only_decode_error() -> None:
    seed = int(os.environ.get("X0TTA_FUZZ_SEED", "20261126"))
    rng = random.Random(seed)
    pool = corpus()
    assert pool, "golden corpus missing"
    for i in range(ROUNDS):
        if i % 2:
            data = mutate(rng, rng.choice(pool), pool)
        else:
            body = netlink.genl_message(
                FAMILY,
                rng.randrange(20),
                b"".join(netlink.attr(rng.randrange(70), rng.randbytes(rng.choice([0, 1, 2, 4, 6, 8, 9])))
                         for _ in range(rng.randint(0, 6))),
                flags=rng.randrange(4),
                seq=rng.randrange(4),
            )
            data = body if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 96))
        try:
            check(data)
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"round {i} (seed {seed}): {type(exc).__name__}: {exc}; input {data.hex()}") from exc
