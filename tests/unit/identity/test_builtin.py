"""The built-in source: files loaded, reloaded on change, half-written or forged ones refused, self-renewal."""

from __future__ import annotations

import contextlib
import itertools
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kit.wait import until
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.builtin import BuiltinPaths, BuiltinSource, SelfRenewer, write_request
from x0tta.identity.ca import KEY_FILE, PENDING_KEY_FILE, SVID_FILE, CertificateAuthority, write_atomic
from x0tta.identity.core.types import SourceUpdate, SvidUnavailable, X509Svid

ID = "spiffe://mesh.x0tta/node/a"
POLL = 0.05


def source(node: Path, **kw: object) -> BuiltinSource:
    return BuiltinSource(BuiltinPaths.in_dir(node), "mesh.x0tta", poll_interval=POLL, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def enrolled(ca: CertificateAuthority, node: Path) -> AsyncIterator[tuple[BuiltinSource, X509Svid]]:
    """A node directory issued by ``ca`` and a started source reading it."""
    first = ca.issue_to(node, ID, 600)
    src = source(node)
    await src.start()
    try:
        yield src, first
    finally:
        await src.close()


async def test_no_files_means_unavailable(tmp_path: Path) -> None:
    src = source(tmp_path / "node")
    with pytest.raises(SvidUnavailable, match="does not exist"):
        await src.start()
    with pytest.raises(SvidUnavailable):
        src.svid()
    await src.close()


async def test_files_are_loaded_and_replacements_picked_up(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    node = tmp_path / "node"
    async with enrolled(fresh_ca, node) as (src, first):
        updates: list[SourceUpdate] = []
        src.subscribe(updates.append)
        assert src.svid().leaf == first.leaf and list(src.bundles()) == ["mesh.x0tta"]
        second = fresh_ca.issue_to(node, ID, 600)
        await until(lambda: src.svid().leaf == second.leaf)
        assert updates[-1].rotated and src.rotations == 1
        # refresh() (SIGHUP) takes a change at once, without waiting for the poll
        third = fresh_ca.issue_to(node, ID, 600)
        await src.refresh()
        assert src.svid().leaf == third.leaf


async def test_half_copied_files_keep_the_old_svid(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    node = tmp_path / "node"
    async with enrolled(fresh_ca, node) as (src, first):
        nxt = fresh_ca.issue(ID, 600)
        write_atomic(node / KEY_FILE, nxt.private_key_pem, 0o600)  # key arrived, certificate not yet
        await src.refresh()
        assert src.svid().leaf == first.leaf and "does not match" in (src.last_error or "")
        write_atomic(node / SVID_FILE, nxt.chain_pem())
        await until(lambda: src.svid().leaf == nxt.leaf)
        assert src.last_error is None


async def test_svid_from_another_ca_does_not_replace_a_valid_one(
    fresh_ca: CertificateAuthority, impostor_ca: CertificateAuthority, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    async with enrolled(fresh_ca, node) as (src, first):
        forged = impostor_ca.issue(ID, 600)
        write_atomic(node / KEY_FILE, forged.private_key_pem, 0o600)
        write_atomic(node / SVID_FILE, forged.chain_pem())
        await src.refresh()
        assert src.svid().leaf == first.leaf and "bad_chain" in (src.last_error or "")


async def test_revocation_list_reloads_and_a_bad_one_keeps_the_last(
    fresh_ca: CertificateAuthority, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    fresh_ca.issue_to(node, ID, 600)
    victim = fresh_ca.issue("spiffe://mesh.x0tta/node/b", 600)
    src = source(node)
    await src.start()
    try:
        assert src.revocations()[0].serials == frozenset()
        fresh_ca.revoke([victim.leaf.serial_number])
        write_atomic(node / "crl.pem", fresh_ca.crl_pem())
        await until(lambda: victim.leaf.serial_number in src.revocations()[0].serials)
        write_atomic(node / "crl.pem", b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
        await src.refresh()
        assert src.crl_error and victim.leaf.serial_number in src.revocations()[0].serials
    finally:
        await src.close()


async def test_self_renewal_before_expiry(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    node = tmp_path / "node"
    renewer = SelfRenewer(fresh_ca.directory, SpiffeId.parse(ID), ttl=2.0)
    src = source(node, renewer=renewer, renew_fraction=0.5)
    await src.start()  # no files yet: the source issues its first SVID itself
    updates: list[SourceUpdate] = []
    src.subscribe(updates.append)
    try:
        first = src.svid()
        await until(lambda: src.rotations >= 2, timeout=10)
        rotated = [u for u in updates if u.rotated]
        assert len(rotated) == src.rotations and src.renew_failures == 0
        # each SVID was replaced at about half its life, never after it expired
        chain = [first] + [u.svid for u in rotated]
        for old, new in itertools.pairwise(chain):
            assert new.not_before < old.not_after
            assert new.leaf.serial_number != old.leaf.serial_number
    finally:
        await src.close()


async def test_renewal_by_request_keeps_the_key_on_the_node(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    node = tmp_path / "node"
    first = fresh_ca.issue_to(node, ID, 2.0)
    src = source(node, renew_fraction=0.5)
    await src.start()
    try:
        csr = node / "svid.csr"
        await until(lambda: csr.exists() and src.requests == 1)  # half-life: key + request written
        pending = (node / "svid.key.new").read_bytes()
        assert src.svid().leaf == first.leaf  # nothing changes until the signed certificate arrives
        leaf = fresh_ca.sign_to(node, csr.read_bytes(), 600, spiffe_id=ID)  # the CA host's job
        await until(lambda: src.svid().leaf == leaf)
        assert src.svid().private_key_pem == pending and src.rotations == 1
        # the promotion renames the key, syncs the directory, then removes the request: wait for
        # the last step (the fresh-clone CI read the request still there between the two)
        await until(lambda: not (node / "svid.key.new").exists() and not csr.exists())
        assert (node / "svid.key").read_bytes() == pending
        assert src.last_error is None
    finally:
        await src.close()


async def test_first_enrolment_by_request_pairs_the_pending_key(
    fresh_ca: CertificateAuthority, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    csr = write_request(node, SpiffeId.parse(ID))  # `x0tta identity request`: no svid.key on this node yet
    pending = (node / PENDING_KEY_FILE).read_bytes()
    src = source(node)
    with pytest.raises(SvidUnavailable, match=r"svid\.pem does not exist"):
        await src.start()
    leaf = fresh_ca.sign_to(node, csr.read_bytes(), 600, spiffe_id=ID)  # `x0tta ca sign`, files copied back
    await src.start()
    try:
        assert src.svid().leaf == leaf and src.svid().private_key_pem == pending and src.last_error is None
        assert (node / KEY_FILE).read_bytes() == pending and stat.S_IMODE((node / KEY_FILE).stat().st_mode) == 0o600
        assert not (node / PENDING_KEY_FILE).exists() and not csr.exists()
    finally:
        await src.close()
    again = source(node)  # a restart reads the promoted key
    await again.start()
    assert again.svid().leaf == leaf
    await again.close()


async def test_a_certificate_matching_no_key_on_the_node_is_refused(
    fresh_ca: CertificateAuthority, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    write_request(node, SpiffeId.parse(ID))
    other = write_request(tmp_path / "elsewhere", SpiffeId.parse(ID))  # signed for another node's key
    fresh_ca.sign_to(node, other.read_bytes(), 600, spiffe_id=ID)
    src = source(node)
    with pytest.raises(SvidUnavailable, match=r"svid\.key\.new: private key does not match"):
        await src.start()
    assert (node / PENDING_KEY_FILE).exists() and not (node / KEY_FILE).exists()
    await src.close()
