"""Fuzz the fleet payload decoder: what a collector reads from the broker.

100,000 inputs, seeded (X0TTA_FUZZ_SEED explores others): mutations of valid payloads of every
kind, as bytes (bit flips, cuts, inserts, duplications) and as JSON (fields dropped, retyped,
nested, renamed), and random bytes. Each either decodes to a payload that is valid again when
re-encoded, or raises PayloadError; nothing else.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from x0tta.fleet.core import payloads
from x0tta.fleet.core.payloads import PayloadError

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261126"))
HEALTH = [{"subsystem": "mesh", "state": "degraded", "conditions": [{"code": "batman_adv_missing"}]},
          {"subsystem": "heal", "state": "ok", "conditions": []}]
VALID = [
    payloads.birth("k1", "n1", 1.5, 3, "0.1.0", 1.0),
    payloads.death("k2", "n-2", 2.5, 3, "lost"),
    payloads.state("k3", "n.3", 3.5, "0.1.0", HEALTH),
    payloads.event("k4", "n1", 4.5, "heal", "incident_opened", "i1", {"kind": "link_down", "nested": {"a": [1]}}),
    payloads.event("k5", "n1", 5.5, "heal", "symptom_cleared", None, {}),
]
ODD = [None, True, 0, -1, 2**70, 1e308, float("nan"), "", "x" * 300, [], {}, [1, "a"], {"a": {}}]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[i:i + rng.randint(1, 8)]
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        else:
            b[i:i] = b[max(0, i - 8):i]
    return bytes(b)


def mutate_json(rng: random.Random, obj: dict) -> dict:
    obj = json.loads(json.dumps(obj))
    target = obj if rng.random() < 0.4 else obj["body"]
    if isinstance(target.get("subsystems"), list) and target["subsystems"] and rng.random() < 0.3:
        target = target["subsystems"][0]
    keys = list(target)
    op = rng.randrange(3)
    if op == 0 and keys:
        del target[rng.choice(keys)]
    elif op == 1 and keys:
        target[rng.choice(keys)] = rng.choice(ODD)
    else:
        target[rng.choice(["extra", "schema", "id", "node", "at", "body", "state"])] = rng.choice(ODD)
    return obj


def test_the_decoder_raises_only_payload_error():
    rng = random.Random(SEED)
    decoded = refused = 0
    for n in range(100_000):
        base = rng.choice(VALID)
        kind = n % 10
        if kind < 5:
            data = mutate_bytes(rng, payloads.encode(base))
        elif kind < 9:
            data = json.dumps(mutate_json(rng, base)).encode()
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            obj = payloads.decode(data)
        except PayloadError:
            refused += 1
            continue
        decoded += 1
        assert payloads.decode(payloads.encode(obj)) == obj
    assert decoded and refused  # both sides were reached
