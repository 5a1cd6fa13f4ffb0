"""Fuzz the operator command decoder: what every node reads from the fleet's command topic.

100,000 inputs, seeded (X0TTA_FUZZ_SEED explores others): byte mutations of signed envelopes of
every action (bit flips, cuts, inserts, duplications), JSON mutations of the command inside them
(fields dropped, retyped, renamed, arguments changed) re-spelled canonically, envelope fields
changed, and random bytes. Each either decodes or raises CommandError, nothing else; and
``check`` on every tenth input returns a decision without raising, refusing all but untouched ones.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.fuzz.test_fleet_payloads_fuzz import ODD, mutate_bytes
from x0tta.fleet.core import command as c
from x0tta.fleet.core.command import Accepted, Command, CommandError, Target
from x0tta.identity.core.operator import OperatorKey

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("X0TTA_FUZZ_SEED", "20261126"))
NODE = "spiffe://mesh.test/node/n1"
NOW = 1_800_000_000.0
ARGS = {
    "drain": {"interface": "eth1"}, "undrain": {"interface": "wlan0"},
    "set_mesh": {"setting": "orig_interval", "value": 1000}, "heal": {"action": "reselect_gateway"},
    "diagnostics": {"incidents": 5}, "quarantine": {"node": "spiffe://mesh.test/node/n2"},
    "release": {"node": "spiffe://mesh.test/node/n2"}, "release_mesh": {"setting": "hop_penalty"},
}


def commands(key: OperatorKey) -> list[Command]:
    out = []
    for n, (action, args) in enumerate(ARGS.items()):
        target = Target(pattern="spiffe://mesh.test/node/*") if n % 2 else Target(ids=frozenset({NODE}))
        out.append(Command(f"{n:016d}", key.key_id, n + 1, NOW - 5, NOW + 60, target, action, args))
    return out


def mutate_command(rng: random.Random, env: dict) -> dict:
    env = dict(env)
    obj = json.loads(env["command"])
    target = obj if rng.random() < 0.6 else (obj["args"] if rng.random() < 0.7 else obj["target"])
    keys = list(target)
    op = rng.randrange(3)
    if op == 0 and keys:
        del target[rng.choice(keys)]
    elif op == 1 and keys:
        target[rng.choice(keys)] = rng.choice(ODD)
    else:
        target[rng.choice(["extra", "id", "counter", "action", "interface", "ids", "pattern"])] = rng.choice(ODD)
    env["command"] = json.dumps(obj, sort_keys=True, separators=(",", ":")) if rng.random() < 0.9 else json.dumps(obj)
    return env


def mutate_envelope(rng: random.Random, env: dict) -> dict:
    env = dict(env)
    field = rng.choice(["schema", "command", "signature", "extra"])
    if field == "signature" and rng.random() < 0.5:
        env["signature"] = {"ed25519": rng.choice(ODD), "mldsa65": env["signature"]["mldsa65"]}
    else:
        env[field] = rng.choice(ODD)
    return env


def test_the_decoder_raises_only_command_error():
    rng = random.Random(SEED)
    key = OperatorKey.generate()
    valid = [json.loads(c.sign(key, cmd)) for cmd in commands(key)]
    ops = {key.key_id: key.public}
    texts = {env["command"].encode() for env in valid}
    decoded = refused = accepted = 0  # accepted: mutations of the envelope around an intact command
    for n in range(100_000):
        base = rng.choice(valid)
        kind = n % 10
        if kind < 4:
            data = mutate_bytes(rng, c.canonical(base))
        elif kind < 8:
            data = json.dumps(mutate_command(rng, base)).encode()
        elif kind < 9:
            data = json.dumps(mutate_envelope(rng, base)).encode()
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        try:
            env = c.decode(data)
        except CommandError:
            refused += 1
        else:
            decoded += 1
            assert c.decode(data) == env
        if n % 10 == 0:
            decision = c.check(data, NOW, NODE, ops, {})
            if isinstance(decision, Accepted):  # only a mutation that left the signed command as it was
                accepted += 1
                assert c.decode(data).signed in texts
    assert decoded and refused
    for env in valid:  # the untouched envelopes still pass
        assert isinstance(c.check(c.canonical(env), NOW, NODE, ops, {}), Accepted)
