"""The built-in CA on disk and its CLI: key modes, refusal to overwrite, issue/renew/revoke/crl."""

from __future__ import annotations

import argparse
import json
import os
import stat
import time
from pathlib import Path

import pytest

from x0tta.cli import ca as ca_cli
from x0tta.cli import common
from x0tta.common.errors import PermanentError
from x0tta.identity.ca import CaError, CertificateAuthority
from x0tta.identity.core.types import RevocationList, TrustBundle, X509Svid, validate_x509_svid


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_init_writes_keys_0600_in_a_0700_directory_and_refuses_to_overwrite(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", "mesh.x0tta")
    assert mode(tmp_path / "ca") == 0o700
    assert mode(tmp_path / "ca" / "ca.key") == 0o600
    assert mode(tmp_path / "ca" / "state.json") == 0o600
    assert ca.key_type.value == "ml-dsa-65"
    assert ca.root.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18"  # id-ml-dsa-65
    key_before = (tmp_path / "ca" / "ca.key").read_bytes()
    with pytest.raises(CaError, match="refusing"):
        CertificateAuthority.init(tmp_path / "ca", "mesh.x0tta")
    assert (tmp_path / "ca" / "ca.key").read_bytes() == key_before


def test_issue_refuses_foreign_ids_and_bad_ttls(fresh_ca: CertificateAuthority) -> None:
    with pytest.raises(CaError, match="trust domain"):
        fresh_ca.issue("spiffe://other.org/node/a", 60)
    with pytest.raises(CaError, match="path"):
        fresh_ca.issue("spiffe://mesh.x0tta", 60)
    with pytest.raises(CaError, match="ttl"):
        fresh_ca.issue("spiffe://mesh.x0tta/node/a", 0)


def test_node_directory_is_what_the_builtin_source_reads(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "node"
    svid = fresh_ca.issue_to(out, "spiffe://mesh.x0tta/node/a", 600)
    assert mode(out / "svid.key") == 0o600
    again = X509Svid.from_pem((out / "svid.pem").read_bytes(), (out / "svid.key").read_bytes())
    assert again.leaf == svid.leaf
    bundle = TrustBundle.from_pem("mesh.x0tta", (out / "bundle.pem").read_bytes())
    assert validate_x509_svid(again.cert_chain, {"mesh.x0tta": bundle}, time.time()).ok
    assert RevocationList.from_crl((out / "crl.pem").read_bytes(), bundle).serials == frozenset()


def test_crl_numbers_increase_and_expired_entries_leave(fresh_ca: CertificateAuthority) -> None:
    now = time.time()
    short = fresh_ca.issue("spiffe://mesh.x0tta/node/a", 60, now=now)
    long = fresh_ca.issue("spiffe://mesh.x0tta/node/b", 3600, now=now)
    n0 = fresh_ca.revocation_list().number
    assert fresh_ca.revoke([short.leaf.serial_number, long.leaf.serial_number], now=now) == sorted(
        [short.leaf.serial_number, long.leaf.serial_number]
    )
    assert fresh_ca.revoke([short.leaf.serial_number], now=now) == []  # already revoked
    rl = fresh_ca.revocation_list()
    assert rl.number > n0 and rl.serials == {short.leaf.serial_number, long.leaf.serial_number}
    later = fresh_ca.publish_crl(now=now + 120)
    assert later.serials == {long.leaf.serial_number}
    assert later.next_update is not None and later.next_update > now + 120


def run_cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    ca_cli.register(sub)
    args = p.parse_args(list(argv))
    return int(args.func(args))


def test_cli_end_to_end_never_prints_key_material(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d, out = str(tmp_path / "ca"), tmp_path / "n1"
    printed: list[str] = []

    def cli(*argv: str) -> str:
        assert run_cli("ca", "--dir", d, *argv) == 0
        cap = capsys.readouterr()
        printed.append(cap.out + cap.err)
        return cap.out

    cli("init", "--trust-domain", "mesh.x0tta")
    issued = json.loads(cli("issue", "--node", "n1", "--ttl", "2h", "--out", str(out), "--json"))
    assert issued["spiffe_id"] == "spiffe://mesh.x0tta/node/n1" and issued["key"] == "ML-DSA-65"
    assert json.loads(cli("renew", "--out", str(out), "--json"))["renewed"] is False
    renewed = json.loads(cli("renew", "--out", str(out), "--fraction", "0", "--json"))
    assert renewed["renewed"] is True and renewed["serial"] != issued["serial"]
    assert "revoked" in cli("revoke", "--spiffe-id", "spiffe://mesh.x0tta/node/n1")
    cli("crl", "--validity", "1d")
    rows = json.loads(cli("list", "--json"))["issued"]
    assert len(rows) == 2 and all(r["revoked"] for r in rows)
    for secret in ((tmp_path / "ca" / "ca.key").read_bytes(), (out / "svid.key").read_bytes()):
        body = b"".join(secret.splitlines()[1:-1]).decode()
        assert not any(body in text for text in printed)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("24h", 86400), ("2d", 172800)])
def test_durations(text: str, seconds: float) -> None:
    assert common.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-5s", "0", "1x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        common.parse_duration(text)


def test_cli_constants_match_the_library() -> None:
    """The CLI spells these out so that `x0tta` starts without importing cryptography."""
    from cryptography import x509

    from x0tta.identity import ca as ca_mod
    from x0tta.identity.core.certs import ISSUED_KEY_TYPES

    assert ca_cli.KEY_TYPES == tuple(k.value for k in ISSUED_KEY_TYPES)
    assert (ca_cli.ROOT_VALIDITY, ca_cli.CRL_VALIDITY) == (ca_mod.ROOT_VALIDITY, ca_mod.CRL_VALIDITY)
    assert set(ca_cli.REASONS) == {r.name for r in x509.ReasonFlags if r is not x509.ReasonFlags.unspecified}


def test_csr_enrollment_keeps_the_key_on_the_node(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    from x0tta.common.spiffe_id import SpiffeId
    from x0tta.identity.builtin import write_request
    from x0tta.identity.core.certs import KeyType

    node = tmp_path / "node"
    csr = write_request(node, SpiffeId.parse("spiffe://mesh.x0tta/node/n9"))
    pending = (node / "svid.key.new").read_bytes()
    assert mode(node / "svid.key.new") == 0o600
    assert write_request(node, SpiffeId.parse("spiffe://mesh.x0tta/node/n9")) == csr  # same key reused
    assert (node / "svid.key.new").read_bytes() == pending
    # the CA refuses a request for another name than the operator expects, or from another domain
    with pytest.raises(CaError, match="asks for"):
        fresh_ca.sign(csr.read_bytes(), 600, spiffe_id="spiffe://mesh.x0tta/node/other")
    with pytest.raises(CaError, match="not a usable"):
        fresh_ca.sign(b"junk", 600)
    leaf = fresh_ca.sign_to(node, csr.read_bytes(), 600, spiffe_id="spiffe://mesh.x0tta/node/n9")
    assert not (node / "svid.key").exists()  # the CA wrote no key
    svid = X509Svid.from_pem((node / "svid.pem").read_bytes(), pending)
    assert svid.leaf == leaf and svid.key_algorithm == "ML-DSA-65"
    assert validate_x509_svid(svid.cert_chain, {"mesh.x0tta": fresh_ca.bundle()}, time.time()).ok
    ec_csr = write_request(tmp_path / "ec", SpiffeId.parse("spiffe://mesh.x0tta/node/e"), KeyType.ECDSA_P256)
    assert fresh_ca.sign(ec_csr.read_bytes(), 600).public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    other = write_request(tmp_path / "o", SpiffeId.parse("spiffe://other.org/node/x"))
    with pytest.raises(CaError, match="trust domain"):
        fresh_ca.sign(other.read_bytes(), 600)


def test_cli_request_and_sign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from x0tta.cli import identity as identity_cli

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    ca_cli.register(sub)
    identity_cli.register(sub)

    def cli(*argv: str) -> str:
        args = p.parse_args(list(argv))
        assert args.func(args) == 0
        return capsys.readouterr().out

    d, node = str(tmp_path / "ca"), tmp_path / "node"
    cli("ca", "--dir", d, "init", "--trust-domain", "mesh.x0tta")
    cli("identity", "request", "--dir", str(node), "--spiffe-id", "spiffe://mesh.x0tta/node/n1")
    with pytest.raises(PermanentError, match="first request"):  # the CA needs the name from the operator
        cli("ca", "--dir", d, "sign", "--out", str(node))
    first = json.loads(cli("ca", "--dir", d, "sign", "--node", "n1", "--out", str(node), "--json"))
    assert first["spiffe_id"] == "spiffe://mesh.x0tta/node/n1" and first["key"] == "ML-DSA-65"
    # renewal: the ID comes from the SVID already in the directory
    (node / "svid.key").write_bytes((node / "svid.key.new").read_bytes())
    (node / "svid.key.new").unlink()
    cli("identity", "request", "--dir", str(node))
    again = json.loads(cli("ca", "--dir", d, "sign", "--out", str(node), "--ttl", "1h", "--json"))
    assert again["spiffe_id"] == first["spiffe_id"] and again["serial"] != first["serial"]


def test_root_rollover_without_a_flag_day(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    ca, td = fresh_ca, "mesh.x0tta"
    t0 = time.time()
    old_svid = ca.issue("spiffe://mesh.x0tta/node/a", 600, now=t0)
    old_root = ca.root
    key_before = (ca.directory / "ca.key").read_bytes()

    next_root = ca.rollover_prepare(now=t0)
    both = {td: ca.bundle()}
    assert both[td].roots == (old_root, next_root) and next_root.subject == old_root.subject
    assert mode(ca.directory / "next.key") == 0o600
    with pytest.raises(CaError, match="already prepared"):
        ca.rollover_prepare()
    assert ca.issue("spiffe://mesh.x0tta/node/b", 600).leaf.issuer == old_root.subject  # still the old key

    ca.rollover_activate(now=t0 + 1)
    assert ca.root == next_root and (ca.directory / "ca.key").read_bytes() != key_before
    new_svid = ca.issue("spiffe://mesh.x0tta/node/a", 600, now=t0 + 2)
    # nodes holding the two-root bundle accept SVIDs from either root, and the new CRL
    for s in (old_svid, new_svid):
        assert validate_x509_svid(s.cert_chain, both, t0 + 3).ok
    ca.revoke([old_svid.leaf.serial_number], now=t0 + 3)
    rl = RevocationList.from_crl(ca.crl_pem(), ca.bundle())
    assert validate_x509_svid(old_svid.cert_chain, both, t0 + 4, revocations=[rl]).reason.value == "revoked"
    # a node that kept only the old bundle refuses the new root's SVIDs: why prepare comes first
    only_old = {td: TrustBundle(td, (old_root,))}
    assert validate_x509_svid(new_svid.cert_chain, only_old, t0 + 3).reason.value == "bad_chain"

    with pytest.raises(CaError, match="old root are valid until"):
        ca.rollover_retire(now=t0 + 5)
    ca.rollover_retire(now=t0 + 700)  # every old-root SVID has expired
    assert ca.bundle().roots == (next_root,)
    assert validate_x509_svid(new_svid.cert_chain, {td: ca.bundle()}, t0 + 5).ok
    assert CertificateAuthority(ca.directory).root == next_root  # a fresh load sees the new root


def test_ca_key_encrypted_at_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    d = str(tmp_path / "ca")
    assert run_cli("ca", "--dir", d, "--passphrase-file", str(pw), "init", "--trust-domain", "mesh.x0tta") == 0
    key = (tmp_path / "ca" / "ca.key").read_bytes()
    assert key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") and mode(tmp_path / "ca" / "ca.key") == 0o600
    with pytest.raises(CaError, match="encrypted"):
        CertificateAuthority(tmp_path / "ca")
    with pytest.raises(CaError, match="wrong passphrase"):
        CertificateAuthority(tmp_path / "ca", b"guess")
    out = tmp_path / "n1"
    assert run_cli("ca", "--dir", d, "--passphrase-file", str(pw), "issue", "--node", "n1", "--out", str(out)) == 0
    assert not (out / "svid.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")  # node keys: for pyOpenSSL
    ca = CertificateAuthority(tmp_path / "ca", b"correct horse battery staple")
    ca.rollover_prepare()
    assert (tmp_path / "ca" / "next.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    ca.rollover_activate()
    assert CertificateAuthority(tmp_path / "ca", b"correct horse battery staple").root == ca.root
    capsys.readouterr()
