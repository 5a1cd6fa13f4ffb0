"""Fuzz the replicated state's sync decoder: what a node reads from every peer session.

100,000 messages, seeded (X0TTA_FUZZ_SEED explores others): byte mutations (bit flips, cuts,
inserts, duplications) of real sync messages - step 1 with two epochs' state vectors, and updates
signed by ECDSA P-256 and ML-DSA-65 SVIDs - with bits flipped inside their framing, random bytes
behind a valid header and random bytes alone; 20,000 values of every section mutated as JSON. Each
either decodes or raises StateError, nothing else; and every twentieth decoded message, when it
carries updates, goes through a replica's ``receive``, which must refuse every update that is not
one of the originals.
"""

from __future__ import annotations

import json
import os
import random
import warnings

import pytest

from tests.fuzz.test_fleet_payloads_fuzz import ODD, mutate_bytes
from tests.kit.pki import TestCA
from x0tta.fleet.core import state as st
from x0tta.fleet.replica import Replica

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261126"))
TD = "mesh.test"


def replica(ca: TestCA, name: str) -> Replica:
    leaf = ca.issue(path=f"/node/{name}")
    return Replica(f"spiffe://{TD}/node/{name}", leaf.key, st.chain_der([leaf.cert]), st.Policy(TD),
                   {TD: ca.bundle()})


def messages() -> tuple[list[bytes], set[st.Update], float, TestCA]:
    ca = TestCA(TD, kind="p256")
    now = ca.cert.not_valid_before_utc.timestamp() + 3720
    a, b = replica(ca, "a"), replica(ca, "b")
    mldsa = TestCA(TD)  # a second root of the same domain: its updates are not members' to a replica of `ca`
    q = replica(mldsa, "q")
    ups = [a.write(now, {"registry": {a.author: {"macs": ["02:00:00:00:00:01"], "role": "node", "version": "1",
                                                 "at": now}}}),
           a.add_incident(now, "i1", "link_down", "n1-n2"),
           b.write(now, {"quarantine": {f"{b.author} {a.author}": {"target": a.author, "macs": [], "reason": "r",
                                                                                "until": now + 60, "at": now}}}),
           q.add_incident(now, "i2", "loss", "x")]
    a.compact(now)
    out = [st.encode(st.Updates(tuple(ups[:3]))), st.encode(st.Updates((ups[3],))), a.step1(),
           st.encode(st.SyncStep1(((0, {1: 5, 2**40: 7}), (9, {})))), st.encode(st.Updates())]
    return out, set(ups[:3]), now, ca


VALUES = {
    "registry": {"macs": ["02:00:00:00:00:01"], "role": "gateway", "version": "1.2", "at": 1.0},
    "heads": {"seq": 3, "at": 1.0},
    "quarantine": {"target": "spiffe://mesh.test/node/b", "macs": ["02:00:00:00:00:0b"], "reason": "replay",
                   "until": 9.0, "at": 2.0},
    "incidents": {"kind": "link_down", "target": "hardif:eth1", "severity": "critical", "opened": 1.0, "closed": None,
                  "summary": "open", "at": 3.0},
    "revocations": {"by": "spiffe://mesh.test/node/ca", "reason": "stolen", "at": 4.0, "serials": ["1f"]},
}


def test_the_sync_decoder_raises_only_state_error():
    rng = random.Random(SEED)
    valid, originals, now, ca = messages()
    target = replica(ca, "t")
    decoded = refused = received = 0
    for n in range(100_000):
        kind = n % 10
        if kind < 4:
            data = mutate_bytes(rng, rng.choice(valid))
        elif kind < 8:  # bits flipped, the framing kept: most land in a certificate, update or signature
            b = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif kind < 9:
            data = st.MAGIC + bytes((st.VERSION, rng.randint(1, 2))) + bytes(
                rng.randrange(256) for _ in range(rng.randint(0, 64)))
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            msg = st.decode(data)
        except st.StateError:
            refused += 1
            continue
        decoded += 1
        assert st.decode(st.encode(msg)) == msg
        if isinstance(msg, st.Updates) and decoded % 20 == 0:
            received += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # cryptography warns about some mutants (negative serials)
                _, outcomes = target.receive(data, now)
            assert all(not o.applied or o.update in originals for o in outcomes)
    print(f"decoded {decoded}, refused {refused}, through receive {received}, "
          f"refused there {sum(target.refused.values())}")
    assert decoded and refused and received
    assert target.applied <= len(originals)


def test_the_value_decoder_raises_only_state_error():
    rng = random.Random(SEED + 1)
    decoded = refused = 0
    for _ in range(20_000):
        section = rng.choice(st.SECTIONS)
        obj = json.loads(json.dumps(VALUES[section]))
        keys = list(obj)
        op = rng.randrange(4)
        if op == 0:
            del obj[rng.choice(keys)]
        elif op == 1:
            obj[rng.choice(keys)] = rng.choice(ODD)
        elif op == 2:
            obj[rng.choice(["extra", *keys])] = rng.choice(ODD)
        text = json.dumps(obj)
        if op == 3:
            text = mutate_bytes(rng, text.encode()).decode("utf-8", "replace")
        try:
            st.decode_value(rng.choice([section, "nope"]) if rng.random() < 0.05 else section, text)
            decoded += 1
        except st.StateError:
            refused += 1
    assert decoded and refused
