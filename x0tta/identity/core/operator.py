"""Operator keys: hybrid Ed25519 + ML-DSA-65 signatures over what an operator tells the fleet.

An operator key pair is two key pairs used together: Ed25519 (RFC 8032), proven and small, and
ML-DSA-65 (FIPS 204), which a quantum computer does not break. Every signature is the pair of both
signatures over the same bytes, and :func:`verify` accepts it only if **both** verify: a forger has
to break both schemes. The fleet's command envelopes (:mod:`x0tta.fleet.core.command`) and the etcd
rollouts are signed with it.

What is signed is ``DOMAIN + data``: the domain tag keeps a signature made for this purpose from
being replayed as a signature of anything else the same key might sign. ML-DSA-65 gets the tag as
its FIPS 204 context string as well.

Serialised forms (the CLI writes the private half with mode 0600):

* PEM: the Ed25519 key, then the ML-DSA-65 key, each a standard block (PKCS#8 ``PRIVATE KEY`` or
  SubjectPublicKeyInfo ``PUBLIC KEY``), concatenated - readable by ``openssl pkey`` one at a time;
* JSON: ``{"schema": "x0tta.operator-key/1", "kind": "public"|"private", "id": ...,
  "ed25519": <base64 raw key>, "mldsa65": <base64 raw key or seed>}``.

The **key id** is stable and names the pair: the first 32 hex digits of SHA-256 over a label and
both raw public keys; a command names its operator by it and a node looks the public key up by it.

Pure: keys and bytes in, keys, bytes or a typed error out; no file is read here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from x0tta.common.errors import DecodeError, PermanentError

DOMAIN = b"x0tta-operator-signature/1\x00"
KEY_SCHEMA = "x0tta.operator-key/1"
ED25519 = "ed25519"
MLDSA = "ml-dsa-65"
ED25519_PUBLIC_LEN = 32
ED25519_SIG_LEN = 64
MLDSA_PUBLIC_LEN = 1952
MLDSA_SEED_LEN = 32
MLDSA_SIG_LEN = 3309
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_ID_LABEL = b"x0tta-operator-key-id/1\x00"


class OperatorKeyError(DecodeError):
    """An operator key file (PEM or JSON) that is not a valid Ed25519 + ML-DSA-65 pair."""


class SignatureInvalid(PermanentError):
    """A hybrid signature that does not verify. ``halves`` names which failed: ``("ed25519",)``,
    ``("ml-dsa-65",)`` or both, in that order."""

    def __init__(self, halves: tuple[str, ...], key_id: str) -> None:
        self.halves = halves
        self.key_id = key_id
        verb = "do not verify" if len(halves) > 1 else "does not verify"
        super().__init__(f"the {' and '.join(halves)} signature of operator {key_id} {verb}")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any, what: str, length: int) -> bytes:
    if not isinstance(value, str):
        raise OperatorKeyError(f"{what}: base64 text expected")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise OperatorKeyError(f"{what}: not base64") from None
    if len(raw) != length:
        raise OperatorKeyError(f"{what}: {len(raw)} bytes, {length} expected")
    return raw


@dataclass(frozen=True)
class HybridSignature:
    """Both signatures over the same bytes."""

    ed25519: bytes
    mldsa: bytes

    def to_json(self) -> dict[str, str]:
        return {"ed25519": _b64(self.ed25519), "mldsa65": _b64(self.mldsa)}

    @classmethod
    def from_json(cls, obj: Any) -> HybridSignature:
        """Raises :class:`OperatorKeyError` (a DecodeError) on anything but two base64 signatures of the
        right lengths."""
        if not isinstance(obj, dict) or set(obj) != {"ed25519", "mldsa65"}:
            raise OperatorKeyError("a signature is an object with exactly ed25519 and mldsa65")
        return cls(_unb64(obj["ed25519"], "ed25519 signature", ED25519_SIG_LEN),
                   _unb64(obj["mldsa65"], "mldsa65 signature", MLDSA_SIG_LEN))


def key_id(ed_public: bytes, mldsa_public: bytes) -> str:
    return hashlib.sha256(_ID_LABEL + ed_public + mldsa_public).hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class OperatorPublicKey:
    """The public half: what a node is configured with to accept an operator's commands."""

    ed25519: ed25519.Ed25519PublicKey
    mldsa: mldsa.MLDSA65PublicKey

    @property
    def raw(self) -> tuple[bytes, bytes]:
        return self.ed25519.public_bytes_raw(), self.mldsa.public_bytes_raw()

    @property
    def key_id(self) -> str:
        return key_id(*self.raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OperatorPublicKey) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def to_pem(self) -> bytes:
        enc, fmt = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        return self.ed25519.public_bytes(enc, fmt) + self.mldsa.public_bytes(enc, fmt)

    def to_json(self) -> bytes:
        ed, ml = self.raw
        return _dump({"schema": KEY_SCHEMA, "kind": "public", "id": self.key_id, "ed25519": _b64(ed),
                      "mldsa65": _b64(ml)})

    @classmethod
    def from_raw(cls, ed: bytes, ml: bytes) -> OperatorPublicKey:
        try:
            return cls(ed25519.Ed25519PublicKey.from_public_bytes(ed), mldsa.MLDSA65PublicKey.from_public_bytes(ml))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise OperatorKeyError(f"not an Ed25519 + ML-DSA-65 public key: {exc}") from None


@dataclass(frozen=True, eq=False)
class OperatorKey:
    """The private half; :attr:`public` is what nodes are given."""

    ed25519: ed25519.Ed25519PrivateKey
    mldsa: mldsa.MLDSA65PrivateKey

    @classmethod
    def generate(cls) -> OperatorKey:
        return cls(ed25519.Ed25519PrivateKey.generate(), mldsa.MLDSA65PrivateKey.generate())

    @property
    def public(self) -> OperatorPublicKey:
        return OperatorPublicKey(self.ed25519.public_key(), self.mldsa.public_key())

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, data: bytes) -> HybridSignature:
        msg = DOMAIN + data
        return HybridSignature(self.ed25519.sign(msg), self.mldsa.sign(msg, DOMAIN))

    def to_pem(self) -> bytes:
        enc, fmt, none = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        return self.ed25519.private_bytes(enc, fmt, none) + self.mldsa.private_bytes(enc, fmt, none)

    def to_json(self) -> bytes:
        return _dump({"schema": KEY_SCHEMA, "kind": "private", "id": self.key_id,
                      "ed25519": _b64(self.ed25519.private_bytes_raw()),
                      "mldsa65": _b64(self.mldsa.private_bytes_raw())})


def verify(public: OperatorPublicKey, data: bytes, sig: HybridSignature) -> None:
    """Return if both signatures verify over ``data``; raise :class:`SignatureInvalid` naming the
    half (or halves) that did not. Both are always checked, so the error is complete."""
    msg = DOMAIN + data
    failed: list[str] = []
    try:
        public.ed25519.verify(sig.ed25519, msg)
    except InvalidSignature:
        failed.append(ED25519)
    try:
        public.mldsa.verify(sig.mldsa, msg, DOMAIN)
    except InvalidSignature:
        failed.append(MLDSA)
    if failed:
        raise SignatureInvalid(tuple(failed), public.key_id)


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.S)


def _pem_blocks(data: bytes) -> list[bytes]:
    return [m.group(0) for m in _PEM_BLOCK.finditer(data)]


def _json(data: bytes, kind: str) -> tuple[bytes, bytes]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise OperatorKeyError("neither PEM nor JSON") from None
    if not isinstance(obj, dict) or obj.get("schema") != KEY_SCHEMA or obj.get("kind") != kind:
        raise OperatorKeyError(f"not an {KEY_SCHEMA} {kind} key")
    ml_len = MLDSA_PUBLIC_LEN if kind == "public" else MLDSA_SEED_LEN
    return _unb64(obj.get("ed25519"), "ed25519", 32), _unb64(obj.get("mldsa65"), "mldsa65", ml_len)


def _pem_pair(data: bytes, kind: str, ed_type: type, ml_type: type) -> tuple[Any, Any]:
    """The Ed25519 and the ML-DSA-65 key of two PEM blocks (``kind`` is PUBLIC or PRIVATE)."""
    try:
        keys = [serialization.load_pem_public_key(b) if kind == "PUBLIC"
                else serialization.load_pem_private_key(b, None) for b in _pem_blocks(data)]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise OperatorKeyError(f"bad PEM {kind.lower()} key: {exc}") from None
    eds = [k for k in keys if isinstance(k, ed_type)]
    mls = [k for k in keys if isinstance(k, ml_type)]
    if len(keys) != 2 or len(eds) != 1 or len(mls) != 1:
        raise OperatorKeyError(f"an operator {kind.lower()} key is one Ed25519 and one ML-DSA-65 {kind} KEY block")
    return eds[0], mls[0]


def load_public(data: bytes) -> OperatorPublicKey:
    """An operator's public key from its PEM (two blocks) or JSON form; :class:`OperatorKeyError` otherwise."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return OperatorPublicKey(*_pem_pair(data, "PUBLIC", ed25519.Ed25519PublicKey, mldsa.MLDSA65PublicKey))
    return OperatorPublicKey.from_raw(*_json(data, "public"))


def load_private(data: bytes) -> OperatorKey:
    """An operator's private key from its PEM (two blocks) or JSON form; :class:`OperatorKeyError` otherwise."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return OperatorKey(*_pem_pair(data, "PRIVATE", ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey))
    ed, seed = _json(data, "private")
    try:
        return OperatorKey(ed25519.Ed25519PrivateKey.from_private_bytes(ed),
                           mldsa.MLDSA65PrivateKey.from_seed_bytes(seed))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise OperatorKeyError(f"not an Ed25519 + ML-DSA-65 private key: {exc}") from None
