"""The backup manifest and the checks a bundle must pass. Pure: bytes and times in, verdicts out.

A bundle is a tar file holding ``manifest.json``, ``manifest.sig`` and the backed-up files under
their names in the manifest (``store/heal.sqlite3``, ``identity/svid.key``, ``ca/ca.key`` ...).
The manifest says what the bundle is (format version, node, SPIFFE ID, ``created_at``), every
file's original path, size, SHA-256 and mode, and for each SQLite store its row counts and the last
record id and time it holds (the point a restore brings the node back to).

``manifest.sig`` is the node's signature, with its SVID's private key (ML-DSA-65 or ECDSA P-256),
over :data:`SIGNED_PREFIX` followed by the exact bytes of ``manifest.json`` (the prefix keeps a
signature over a manifest from being usable as anything else the node signs). :func:`verify`
checks, in order, and raises the first failure as a typed error:

1. the manifest's schema (:class:`ManifestInvalid`);
2. every file: none missing, none extra, each size and SHA-256 as listed (:class:`FileMismatch`);
3. the signer: ``identity/svid.pem`` of the bundle is an X509-SVID for the manifest's SPIFFE ID
   that chains to the bundle's own ``identity/bundle.pem`` - and to the caller's trust anchors when
   given (the local node's bundle: a self-made CA proves nothing) - checked at ``created_at``,
   the time the node signed (an SVID lives a day, a backup much longer) (:class:`SignerRejected`);
4. the signature with that certificate's key (:class:`SignatureInvalid`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa

from x0tta.common.errors import DecodeError, PermanentError
from x0tta.identity.core.certs import load_signing_key
from x0tta.identity.core.types import (
    SvidError,
    TrustBundle,
    load_pem_chain,
    validate_x509_svid,
)

KIND = "x0tta-backup"
FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNED_PREFIX = b"x0tta backup manifest v1\n"
GROUPS = ("store", "identity", "ca")
SVID_NAME, BUNDLE_NAME = "identity/svid.pem", "identity/bundle.pem"
_NAME = re.compile(r"(store|identity|ca)/[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"kind", "format", "node_id", "spiffe_id", "created_at", "key_algorithm", "files", "stores"}
_FILE_KEYS = {"name", "path", "size", "sha256", "mode"}


class BackupError(PermanentError):
    """A backup that cannot be made, read or restored as asked."""


class ManifestInvalid(DecodeError):
    """``manifest.json`` is not a manifest of a format this version reads."""


class FileMismatch(BackupError):
    """A file of the bundle is missing, extra, or not the one the manifest lists (size, hash)."""


class SignerRejected(BackupError):
    """The bundle's certificate is not an SVID of the manifest's node under the trust anchors."""


class SignatureInvalid(BackupError):
    """The manifest's signature does not verify with the bundle's certificate: it was changed, or
    signed by another key."""


class OtherNode(BackupError):
    """The bundle belongs to another node than the local one."""


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    size: int
    sha256: str
    mode: int

    @property
    def group(self) -> str:
        return self.name.split("/", 1)[0]


def entry_for(name: str, path: str, data: bytes, mode: int) -> FileEntry:
    return FileEntry(name, path, len(data), hashlib.sha256(data).hexdigest(), mode & 0o777)


@dataclass(frozen=True)
class Manifest:
    node_id: str
    spiffe_id: str
    created_at: float
    key_algorithm: str
    files: tuple[FileEntry, ...]
    stores: Mapping[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format": self.format,
            "node_id": self.node_id,
            "spiffe_id": self.spiffe_id,
            "created_at": self.created_at,
            "key_algorithm": self.key_algorithm,
            "files": [
                {"name": f.name, "path": f.path, "size": f.size, "sha256": f.sha256, "mode": f.mode}
                for f in self.files
            ],
            "stores": dict(self.stores),
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, indent=1).encode() + b"\n"

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)


def signed_bytes(manifest_bytes: bytes) -> bytes:
    return SIGNED_PREFIX + manifest_bytes


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise ManifestInvalid(f"manifest: {what}")


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def decode_manifest(data: bytes) -> Manifest:
    """Parse and check ``manifest.json``; :class:`ManifestInvalid` says what is wrong."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestInvalid(f"manifest: not JSON ({type(exc).__name__})") from None
    _want(isinstance(doc, dict), "not a JSON object")
    _want(doc.get("kind") == KIND, f"kind is {doc.get('kind')!r}, not {KIND!r}")
    _want(doc.get("format") == FORMAT, f"format {doc.get('format')!r}; this version reads format {FORMAT}")
    _want(set(doc) == _KEYS, f"keys {sorted(set(doc) ^ _KEYS)} missing or unknown")
    for key in ("node_id", "spiffe_id", "key_algorithm"):
        _want(isinstance(doc[key], str) and bool(doc[key]), f"{key} is not a non-empty string")
    _want(_number(doc["created_at"]) and 0 < doc["created_at"] < math.inf, "created_at is not a positive number")
    _want(isinstance(doc["stores"], dict), "stores is not an object")
    _want(isinstance(doc["files"], list) and bool(doc["files"]), "files is not a non-empty list")
    files = []
    for i, f in enumerate(doc["files"]):
        _want(isinstance(f, dict) and set(f) == _FILE_KEYS, f"files[{i}] does not have exactly {sorted(_FILE_KEYS)}")
        _want(isinstance(f["name"], str) and _NAME.fullmatch(f["name"]) is not None,
              f"files[{i}].name {f['name']!r} is not <store|identity|ca>/<file name>")
        _want(isinstance(f["path"], str) and f["path"].startswith("/"), f"files[{i}].path is not absolute")
        _want(isinstance(f["size"], int) and not isinstance(f["size"], bool) and f["size"] >= 0,
              f"files[{i}].size is not a byte count")
        _want(isinstance(f["sha256"], str) and _SHA256.fullmatch(f["sha256"]) is not None,
              f"files[{i}].sha256 is not 64 lowercase hex digits")
        _want(isinstance(f["mode"], int) and not isinstance(f["mode"], bool) and 0 <= f["mode"] <= 0o777,
              f"files[{i}].mode is not a permission mode")
        files.append(FileEntry(f["name"], f["path"], f["size"], f["sha256"], f["mode"]))
    names = [f.name for f in files]
    _want(len(set(names)) == len(names), "a file name is listed twice")
    _want(SVID_NAME in names and BUNDLE_NAME in names, f"{SVID_NAME} and {BUNDLE_NAME} must be in the bundle")
    return Manifest(doc["node_id"], doc["spiffe_id"], float(doc["created_at"]), doc["key_algorithm"],
                    tuple(files), doc["stores"])


def check_files(manifest: Manifest, files: Mapping[str, bytes]) -> None:
    listed = {f.name for f in manifest.files}
    missing, extra = sorted(listed - set(files)), sorted(set(files) - listed)
    if missing:
        raise FileMismatch(f"missing from the bundle: {', '.join(missing)}")
    if extra:
        raise FileMismatch(f"in the bundle but not in the manifest: {', '.join(extra)}")
    for f in manifest.files:
        data = files[f.name]
        if len(data) != f.size:
            raise FileMismatch(f"{f.name}: {len(data)} bytes, the manifest says {f.size}")
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise FileMismatch(f"{f.name}: SHA-256 differs from the manifest's (changed after signing)")


def sign(key_pem: bytes, manifest_bytes: bytes) -> bytes:
    """The node's signature over ``manifest_bytes`` with its SVID key (PKCS#8 PEM)."""
    try:
        key = load_signing_key(key_pem)
    except (TypeError, ValueError) as exc:
        raise BackupError(f"the node's key cannot sign the manifest: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(signed_bytes(manifest_bytes), ec.ECDSA(hashes.SHA256()))
    return key.sign(signed_bytes(manifest_bytes))


def verify_signature(public_key: object, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public_key, (mldsa.MLDSA65PublicKey, mldsa.MLDSA87PublicKey)):
            public_key.verify(signature, data)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise SignerRejected(f"the signer's key {type(public_key).__name__} is not ML-DSA-65 or ECDSA P-256")
    except InvalidSignature:
        raise SignatureInvalid(
            "manifest signature does not verify with the bundle's certificate: the manifest was "
            "changed after signing, or another key signed it"
        ) from None


def verify(
    manifest_bytes: bytes,
    signature: bytes,
    files: Mapping[str, bytes],
    anchors: TrustBundle | None = None,
) -> Manifest:
    """Check a bundle's parts (see the module's docstring); the manifest when all pass."""
    manifest = decode_manifest(manifest_bytes)
    check_files(manifest, files)
    trust_domain = manifest.spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
    try:
        chain = load_pem_chain(files[SVID_NAME])
        own = TrustBundle.from_pem(trust_domain, files[BUNDLE_NAME])
    except SvidError as exc:
        raise SignerRejected(f"the bundle's SVID or trust bundle cannot be read: {exc}") from None
    for label, bundle in (("the bundle's own trust bundle", own), ("the local trust bundle", anchors)):
        if bundle is None:
            continue
        verdict = validate_x509_svid(chain, {trust_domain: bundle}, manifest.created_at)
        if not verdict.ok:
            raise SignerRejected(f"the bundle's SVID does not verify against {label}: {verdict.reason}: "
                                 f"{verdict.detail}")
        if str(verdict.spiffe_id) != manifest.spiffe_id:
            raise SignerRejected(f"the bundle's SVID is {verdict.spiffe_id}, the manifest says {manifest.spiffe_id}")
    verify_signature(chain[0].public_key(), signature, signed_bytes(manifest_bytes))
    return manifest
