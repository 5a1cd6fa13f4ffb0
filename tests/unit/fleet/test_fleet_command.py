"""The command envelope: canonical and signed, decoded strictly, and each refusal with its reason."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from x0tta.fleet.core import command as c
from x0tta.fleet.core.command import Accepted, Command, CommandError, Reason, Refused, Target
from x0tta.identity.core.operator import HybridSignature, OperatorKey

NODE = "spiffe://mesh.test/node/n1"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def key() -> OperatorKey:
    return OperatorKey.generate()


@pytest.fixture(scope="module")
def intruder() -> OperatorKey:
    return OperatorKey.generate()


def cmd(key: OperatorKey, **kw) -> Command:
    base = Command("c" * 16, key.key_id, 5, NOW - 1, NOW + 60, Target(ids=frozenset({NODE})), "drain",
                   {"interface": "eth1"})
    return replace(base, **kw)


def decide(data: bytes, key: OperatorKey, last: int = 0, now: float = NOW, node: str = NODE):
    return c.check(data, now, node, {key.key_id: key.public}, {key.key_id: last})


def test_a_valid_command_is_accepted(key):
    d = decide(c.sign(key, cmd(key)), key, last=4)
    assert isinstance(d, Accepted) and d.command.args == {"interface": "eth1"}


def test_the_envelope_round_trips(key):
    env = c.decode(c.sign(key, cmd(key)))
    assert env.command == cmd(key) and env.signature is not None


def resign(data: bytes, key: OperatorKey, half: str) -> bytes:
    env = json.loads(data)
    other = key.sign(env["command"].encode()).to_json()
    env["signature"][half] = other[half]
    return json.dumps(env).encode()


@pytest.mark.parametrize(("make", "reason"), [
    (lambda k, i: b"{", Reason.MALFORMED),
    (lambda k, i: c.unsigned(cmd(k)), Reason.UNSIGNED),
    (lambda k, i: c.sign(i, cmd(i)), Reason.UNKNOWN_OPERATOR),
    (lambda k, i: resign(c.sign(k, cmd(k)), i, "ed25519"), Reason.BAD_ED25519),
    (lambda k, i: resign(c.sign(k, cmd(k)), i, "mldsa65"), Reason.BAD_MLDSA),
    (lambda k, i: resign(resign(c.sign(k, cmd(k)), i, "mldsa65"), i, "ed25519"), Reason.BAD_ED25519),
    (lambda k, i: c.sign(k, cmd(k, expires_at=NOW)), Reason.EXPIRED),
    (lambda k, i: c.sign(k, cmd(k, issued_at=NOW + 1000, expires_at=NOW + 2000)), Reason.EXPIRED),
    (lambda k, i: c.sign(k, cmd(k, counter=4)), Reason.REPLAYED),
    (lambda k, i: c.sign(k, cmd(k, target=Target(ids=frozenset({"spiffe://mesh.test/node/n2"})))),
     Reason.WRONG_TARGET),
    (lambda k, i: c.sign(k, cmd(k, target=Target(pattern="spiffe://mesh.test/node/gw-*"))), Reason.WRONG_TARGET),
])
def test_each_refusal_has_its_reason(key, intruder, make, reason):
    d = decide(make(key, intruder), key, last=4)
    assert isinstance(d, Refused) and d.reason == reason, d


def test_a_tampered_command_fails_both_halves(key):
    env = json.loads(c.sign(key, cmd(key)))
    env["command"] = env["command"].replace("eth1", "eth2")
    d = decide(json.dumps(env).encode(), key)
    assert isinstance(d, Refused) and d.reason == Reason.BAD_ED25519 and "ed25519 and ml-dsa-65" in d.message


def test_a_glob_target_matches(key):
    d = decide(c.sign(key, cmd(key, target=Target(pattern="spiffe://mesh.test/node/*"))), key)
    assert isinstance(d, Accepted)


def test_the_signed_text_must_be_canonical(key):
    env = json.loads(c.sign(key, cmd(key)))
    spaced = json.dumps(json.loads(env["command"]), sort_keys=True)  # same content, other spelling
    env["command"] = spaced
    with pytest.raises(CommandError, match="canonical"):
        c.decode(json.dumps(env).encode())


@pytest.mark.parametrize(("field", "value"), [
    ("id", "short"), ("operator", "zz"), ("counter", 0), ("counter", True), ("issued_at", "x"),
    ("expires_at", 1.0), ("target", {"ids": []}), ("target", {"pattern": "node/*"}),
    ("target", {"ids": ["not-spiffe"]}), ("action", "reboot"), ("args", {"interface": "x" * 20}),
    ("args", {"interface": "eth1", "force": True}), ("args", {}), ("extra", 1),
])
def test_the_decoder_refuses_off_schema_commands(key, field, value):
    obj = cmd(key).to_json()
    obj[field] = value
    env = {"schema": c.SCHEMA, "command": c.canonical(obj).decode()}
    with pytest.raises(CommandError):
        c.decode(c.canonical(env))


@pytest.mark.parametrize(("action", "args"), [
    ("undrain", {"interface": "eth1"}), ("set_mesh", {"setting": "orig_interval", "value": 1000}),
    ("release_mesh", {"setting": "orig_interval"}),
    ("heal", {"action": "reselect_gateway"}), ("heal", {"action": "steer_off", "target": "hardif:eth1"}),
    ("diagnostics", {}), ("diagnostics", {"incidents": 10}),
    ("quarantine", {"node": "spiffe://mesh.test/node/n9"}), ("release", {"node": "spiffe://mesh.test/node/n9"}),
])
def test_every_action_takes_its_arguments(key, action, args):
    assert isinstance(decide(c.sign(key, cmd(key, action=action, args=args)), key), Accepted)


def test_a_bad_signature_shape_is_malformed(key):
    env = json.loads(c.sign(key, cmd(key)))
    env["signature"] = {"ed25519": "AA==", "mldsa65": "AA=="}
    assert decide(json.dumps(env).encode(), key).reason == Reason.MALFORMED


def test_sign_refuses_a_command_of_another_operator(key, intruder):
    with pytest.raises(ValueError):
        c.sign(key, cmd(intruder))


def test_signature_json_is_the_operator_form(key):
    env = json.loads(c.sign(key, cmd(key)))
    assert HybridSignature.from_json(env["signature"])
