"""The backup manifest and its checks, without a disk: schema, hashes, signer, signature."""

from __future__ import annotations

import json

import pytest

from tests.kit.pki import TestCA
from x0tta.backup.core import (
    BUNDLE_NAME,
    SVID_NAME,
    FileMismatch,
    Manifest,
    ManifestInvalid,
    SignatureInvalid,
    SignerRejected,
    decode_manifest,
    entry_for,
    sign,
    verify,
)
from x0tta.common.errors import DecodeError

SID = "spiffe://mesh.test/node/a"


def make(ca: TestCA, leaf=None, files: dict[str, bytes] | None = None, created: float | None = None):
    leaf = leaf or ca.issue(path="/node/a")
    files = {SVID_NAME: leaf.cert_pem, BUNDLE_NAME: ca.cert_pem, "identity/svid.key": leaf.key_pem,
             "store/heal.sqlite3": b"SQLite format 3\x00" + bytes(100), **(files or {})}
    entries = tuple(entry_for(n, f"/var/lib/x0tta/{n}", d, 0o600) for n, d in files.items())
    m = Manifest("a", SID, created or ca.clock.time(), "ML-DSA-65", entries,
                 {"store/heal.sqlite3": {"rows": {"events": 7}, "last_ids": {"events": 7}}})
    body = m.encode()
    return body, sign(leaf.key_pem, body), files


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def test_a_signed_bundle_verifies_and_round_trips(ca: TestCA) -> None:
    body, sig, files = make(ca)
    m = verify(body, sig, files, anchors=ca.bundle())
    assert m.spiffe_id == SID and m.stores["store/heal.sqlite3"]["last_ids"] == {"events": 7}
    assert decode_manifest(m.encode()) == m


def test_ecdsa_svids_sign_too(ca: TestCA) -> None:
    p256 = TestCA(kind="p256")
    body, sig, files = make(p256)
    assert verify(body, sig, files).node_id == "a"


def test_a_changed_byte_in_a_file_is_refused(ca: TestCA) -> None:
    body, sig, files = make(ca)
    data = bytearray(files["store/heal.sqlite3"])
    data[50] ^= 1
    with pytest.raises(FileMismatch, match=r"store/heal\.sqlite3: SHA-256 differs"):
        verify(body, sig, {**files, "store/heal.sqlite3": bytes(data)})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.pop("store/heal.sqlite3"), "missing from the bundle: store/heal.sqlite3"),
        (lambda f: f.update({"store/extra.sqlite3": b"x"}), "not in the manifest: store/extra.sqlite3"),
        (lambda f: f.update({"store/heal.sqlite3": b"short"}), "5 bytes, the manifest says 116"),
    ],
    ids=["missing", "extra", "size"],
)
def test_files_must_be_exactly_the_listed_ones(ca: TestCA, change, match) -> None:
    body, sig, files = make(ca)
    change(files)
    with pytest.raises(FileMismatch, match=match):
        verify(body, sig, files)


def test_a_changed_manifest_fails_its_signature(ca: TestCA) -> None:
    body, sig, files = make(ca)
    doc = json.loads(body)
    doc["stores"]["store/heal.sqlite3"]["last_ids"]["events"] = 9
    with pytest.raises(SignatureInvalid, match="changed after signing, or another key"):
        verify(json.dumps(doc).encode(), sig, files)


def test_a_manifest_signed_by_another_nodes_key_is_refused(ca: TestCA) -> None:
    body, _, files = make(ca)
    other = ca.issue(path="/node/b")
    with pytest.raises(SignatureInvalid):
        verify(body, sign(other.key_pem, body), files)


def test_a_self_made_ca_is_refused_against_the_local_anchors(ca: TestCA) -> None:
    """An attacker's own CA with an SVID of our node's ID: consistent in itself, not ours."""
    forger = TestCA("mesh.test")
    body, sig, files = make(forger)
    assert verify(body, sig, files).spiffe_id == SID  # alone it is consistent
    with pytest.raises(SignerRejected, match="the local trust bundle: bad_chain"):
        verify(body, sig, files, anchors=ca.bundle())


def test_the_svid_must_name_the_manifests_node(ca: TestCA) -> None:
    body, sig, files = make(ca, leaf=ca.issue(path="/node/b"))
    with pytest.raises(SignerRejected, match=r"SVID is spiffe://mesh\.test/node/b, the manifest says"):
        verify(body, sig, files)


def test_the_svid_is_checked_at_the_time_of_the_backup(ca: TestCA) -> None:
    leaf = ca.issue(path="/node/a", ttl=60)
    body, sig, files = make(ca, leaf=leaf)  # verified much later: still good, it was valid when signed
    assert verify(body, sig, files)
    body, sig, files = make(ca, leaf=leaf, created=ca.clock.time() + 7200)
    with pytest.raises(SignerRejected, match="expired"):
        verify(body, sig, files)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format=2), "this version reads format 1"),
        (lambda d: d.update(kind="tar"), "kind is 'tar'"),
        (lambda d: d.pop("stores"), "missing or unknown"),
        (lambda d: d.update(created_at="now"), "created_at"),
        (lambda d: d.update(created_at=float("inf")), "created_at"),
        (lambda d: d.update(created_at=float("nan")), "created_at"),
        (lambda d: d["files"][0].update(name="../etc/passwd"), "is not <store|identity|ca>/<file name>"),
        (lambda d: d["files"][0].update(name="store/.."), "is not <store|identity|ca>/<file name>"),
        (lambda d: d["files"][0].update(sha256="XX"), "64 lowercase hex"),
        (lambda d: d["files"][0].update(size=-1), "byte count"),
        (lambda d: d["files"][0].update(mode=0o4755), "permission mode"),
        (lambda d: d["files"][0].update(path="relative"), "not absolute"),
        (lambda d: d["files"].append(dict(d["files"][0])), "listed twice"),
        (lambda d: d.update(files=[f for f in d["files"] if f["name"] != SVID_NAME]), "must be in the bundle"),
    ],
)
def test_schema_errors_say_what_is_wrong(ca: TestCA, edit, match) -> None:
    body, _, _ = make(ca)
    doc = json.loads(body)
    edit(doc)
    with pytest.raises(ManifestInvalid, match=match):
        decode_manifest(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data", [b"", b"\xff", b"[]", b"null", b'{"kind": "x0tta-backup"}', b"{" * 5000, b"[" * 100_000]
)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_manifest(data)
