"""Fuzz the backup manifest decoder: what ``x0tta backup verify|restore`` reads from a bundle.

30,000 inputs, seeded (X0TTA_FUZZ_SEED explores others): mutations of a valid manifest as bytes
(bit flips, cuts, inserts, duplications) and as JSON (a field of the manifest or of a file entry
dropped or retyped), and random bytes. Each either decodes to a manifest that decodes again to
itself when re-encoded, or raises ManifestInvalid (a DecodeError); nothing else.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.fuzz.test_fleet_payloads_fuzz import ODD, mutate_bytes
from x0tta.backup.core import FileEntry, Manifest, ManifestInvalid, decode_manifest

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261206"))
VALID = Manifest(
    "n1", "spiffe://mesh.x0tta/node/n1", 1796538652.36, "ML-DSA-65",
    (FileEntry("store/heal.sqlite3", "/var/lib/x0tta/heal.sqlite3", 49152, "7f" * 32, 0o600),
     FileEntry("identity/svid.pem", "/var/lib/x0tta/identity/svid.pem", 7603, "c8" * 32, 0o644),
     FileEntry("identity/bundle.pem", "/var/lib/x0tta/identity/bundle.pem", 7607, "f2" * 32, 0o644)),
    {"store/heal.sqlite3": {"rows": {"events": 10}, "last_ids": {"events": 10}, "last_event_at": 1.0}},
).encode()


def mutate_json(rng: random.Random) -> bytes:
    doc = json.loads(VALID)
    target = doc if rng.random() < 0.5 else rng.choice(doc["files"])
    key = rng.choice(list(target))
    if rng.random() < 0.3:
        del target[key]
    else:
        target[key] = rng.choice(ODD)
    return json.dumps(doc).encode()


def test_every_input_decodes_or_raises_manifest_invalid() -> None:
    rng = random.Random(SEED)
    decoded = 0
    for i in range(30_000):
        kind = i % 3
        if kind == 0:
            data = mutate_bytes(rng, VALID)
        elif kind == 1:
            data = mutate_json(rng)
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            m = decode_manifest(data)
        except ManifestInvalid:
            continue
        assert decode_manifest(m.encode()) == m, data
        decoded += 1
    assert decoded > 0, "some mutations keep a valid manifest (a flipped hash digit, a size)"
