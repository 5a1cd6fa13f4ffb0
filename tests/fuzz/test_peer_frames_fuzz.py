"""Fuzz the peer frame decoder and session core: any bytes either decode or raise the protocol's
own error (FrameError from the decoder; RemoteProtocolError, its base, from the session). Nothing
else may escape: not struct.error, not IndexError, not UnicodeDecodeError.

Inputs are seeded and reproducible: half are valid frames mutated (bit flips, cut, spliced,
length fields rewritten), half random bytes behind plausible headers.
"""

from __future__ import annotations

import random
import struct

import pytest

from x0tta.peer.core import NEED_DATA, Hello, Limits, PeerConnection, RemoteProtocolError
from x0tta.peer.core.errors import FrameError
from x0tta.peer.core.frames import FrameDecoder, GoAway, Ping, Pong, Request, Response, encode

pytestmark = pytest.mark.fuzz

N_INPUTS = 100_000
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

SEEDS = [
    encode(Hello("node-a", 1, 3, 4096, 16, ("rpc", "heal.v1"))),
    encode(Ping(7)),
    encode(Pong(2**63)),
    encode(Request(1, "peers.list", b"{}", TP)),
    encode(Request(2, "echo", b"x" * 40)),
    encode(Response(1, 0, b"ok", TP)),
    encode(Response(3, 2, b"")),
    encode(GoAway("rotating")),
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif op == 2:
            buf[rng.randrange(len(buf) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and len(buf) >= 4:
            struct.pack_into("!I", buf, 0, rng.choice([0, 1, 2, len(buf) - 4, len(buf), 2**32 - 1]))
        elif op == 4:
            buf += rng.choice(SEEDS)
        elif op == 5 and len(buf) > 4:
            buf[4] = rng.randrange(256)
    return bytes(buf)


def generate(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return mutate(rng, b"".join(rng.choice(SEEDS) for _ in range(rng.randint(1, 3))))
    body = rng.randbytes(rng.randint(0, 40))
    return struct.pack("!IB", len(body) + 1, rng.randrange(8)) + body


def test_decoder_raises_only_frame_error():
    rng = random.Random(20261126)
    decoded = errors = 0
    for _ in range(N_INPUTS):
        data = generate(rng)
        dec = FrameDecoder(4096)
        cut = rng.randint(0, len(data))
        try:
            dec.feed(data[:cut])
            while dec.next_frame() is not None:
                decoded += 1
            dec.feed(data[cut:])
            while dec.next_frame() is not None:
                decoded += 1
        except FrameError:
            errors += 1
    # both outcomes must be well exercised, or the fuzzer is not fuzzing
    assert decoded > N_INPUTS // 10 and errors > N_INPUTS // 10


def test_session_raises_only_protocol_error():
    rng = random.Random(5)
    lim = Limits(max_frame=4096, max_in_flight=4)
    hello = encode(Hello("peer"))
    for i in range(N_INPUTS // 5):
        conn = PeerConnection(Hello("me"), 0.0, lim)
        data = (hello if i % 2 else b"") + generate(rng)
        try:
            conn.receive_data(data, 1.0)
            while conn.next_event(1.0) is not NEED_DATA:
                pass
            conn.tick(100.0)
        except RemoteProtocolError:
            pass
