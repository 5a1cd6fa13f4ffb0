"""Renewal through the mesh: the pure core (when, codec, the CA's decision) and the two adapters
(the asking node's MeshRenewer, the CA node's RenewalServer) joined by a direct transport on real
files: a renewal installs a new SVID with a fresh key; a revoked node, a CSR for another ID, an
answer that does not fit, an old CRL are each refused with their reason."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.builtin import BuiltinPaths, BuiltinSource
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.core import certs
from x0tta.identity.core import renewal as core
from x0tta.identity.core.certs import KeyType
from x0tta.identity.renewal import MeshRenewer, NoCaNode, RenewalServer

TD = "mesh.x0tta"
NODE = SpiffeId.parse(f"spiffe://{TD}/node/n1")
OTHER = SpiffeId.parse(f"spiffe://{TD}/node/n2")


def csr_for(sid: SpiffeId, key_type: KeyType = KeyType.ECDSA_P256) -> bytes:
    return certs.build_csr(certs.generate_key(key_type), sid).public_bytes(serialization.Encoding.PEM)


# -- when ------------------------------------------------------------------------------------------


def test_renewal_due_spreads_around_the_fraction_and_stays_inside_the_lifetime():
    assert core.renewal_due(100.0, 200.0, 0.5, 0.0, 0.3) == 150.0
    assert core.renewal_due(100.0, 200.0, 0.5, 0.1, 0.0) == pytest.approx(140.0)
    assert core.renewal_due(100.0, 200.0, 0.5, 0.1, 0.999999) == pytest.approx(160.0, abs=1e-3)
    assert core.renewal_due(100.0, 200.0, 0.85, 0.4, 1.0) == pytest.approx(190.0)  # never later than 9/10
    assert core.renewal_due(100.0, 200.0, 0.1, 0.4, 0.0) == pytest.approx(110.0)  # never sooner than 1/10


def test_retry_delay_doubles_to_the_cap_with_jitter():
    assert core.retry_delay(1, 1.0, 60.0, 1.0) == 1.0
    assert core.retry_delay(3, 1.0, 60.0, 1.0) == 4.0
    assert core.retry_delay(40, 1.0, 60.0, 1.0) == 60.0
    assert core.retry_delay(40, 1.0, 60.0, 0.0) == 30.0


def test_an_older_crl_is_not_taken():
    assert core.crl_acceptable(None, 1) and core.crl_acceptable(3, 3) and core.crl_acceptable(3, 4)
    assert not core.crl_acceptable(4, 3)


# -- the CA's decision -------------------------------------------------------------------------------


def test_decide_signs_only_the_sessions_own_unrevoked_id():
    facts = core.csr_facts(csr_for(NODE))
    assert facts.spiffe_id == NODE
    assert core.decide(NODE, 7, facts, TD, frozenset(), frozenset()) is None
    wrong = core.decide(OTHER, 7, facts, TD, frozenset(), frozenset())
    assert wrong is not None and wrong.reason is core.RefusalReason.WRONG_ID and str(OTHER) in wrong.detail
    by_id = core.decide(NODE, 7, facts, TD, frozenset({str(NODE)}), frozenset())
    assert by_id is not None and by_id.reason is core.RefusalReason.REVOKED
    by_serial = core.decide(NODE, 7, facts, TD, frozenset(), frozenset({7}))
    assert by_serial is not None and by_serial.reason is core.RefusalReason.REVOKED
    foreign = SpiffeId.parse("spiffe://other.org/node/n1")
    other_td = core.decide(foreign, 7, core.csr_facts(csr_for(foreign)), TD, frozenset(), frozenset())
    assert other_td is not None and other_td.reason is core.RefusalReason.WRONG_TRUST_DOMAIN


def test_csr_facts_refuse_garbage_and_a_broken_signature():
    assert core.csr_facts(b"not pem").error
    pem = csr_for(NODE)
    body = pem.split(b"\n")
    body[3] = body[3][:10] + (b"A" if body[3][10:11] != b"A" else b"B") + body[3][11:]
    broken = core.csr_facts(b"\n".join(body))
    assert broken.spiffe_id is None and broken.error
    refusal = core.decide(NODE, 1, broken, TD, frozenset(), frozenset())
    assert refusal is not None and refusal.reason is core.RefusalReason.BAD_CSR


# -- codec -----------------------------------------------------------------------------------------


def test_codec_round_trips():
    req = core.RenewalRequest(csr_for(NODE))
    assert core.decode_request(core.encode_request(req)) == req
    granted = core.Granted(b"-----BEGIN CERTIFICATE-----\nAA\n", b"-----BEGIN X509 CRL-----\nAA\n")
    assert core.decode_answer(core.encode_answer(granted)) == granted
    refused = core.Refused(core.RefusalReason.REVOKED, "gone")
    assert core.decode_answer(core.encode_answer(refused)) == refused


@pytest.mark.parametrize("body", [
    b"", b"\xff", b"[]", b"{}", b'{"v":1}', b'{"v":2,"csr":"-----BEGIN CERTIFICATE REQUEST-----"}',
    b'{"v":true,"csr":"-----BEGIN CERTIFICATE REQUEST-----"}', b'{"v":1,"csr":5}',
    b'{"v":1,"csr":"-----BEGIN CERTIFICATE-----"}',
    b'{"v":1,"csr":"-----BEGIN CERTIFICATE REQUEST-----","x":1}', b"[" * 100000,
    b"{" + b" " * core.MAX_BODY + b"}",
])
def test_bad_requests_raise_the_typed_decode_error(body):
    with pytest.raises(core.RenewalDecodeError):
        core.decode_request(body)


@pytest.mark.parametrize("obj", [
    {"v": 1, "status": "maybe"},
    {"v": 1, "status": "granted", "chain": "-----BEGIN CERTIFICATE-----"},
    {"v": 1, "status": "granted", "chain": "x", "crl": "-----BEGIN X509 CRL-----"},
    {"v": 1, "status": "refused", "reason": "because", "detail": ""},
    {"v": 1, "status": "refused", "reason": "revoked", "detail": "x" * 600},
    {"v": 1, "status": "refused", "reason": "revoked", "detail": "", "chain": "x"},
])
def test_bad_answers_raise_the_typed_decode_error(obj):
    with pytest.raises(core.RenewalDecodeError):
        core.decode_answer(json.dumps(obj).encode())


# -- the adapters on real files ----------------------------------------------------------------------


@pytest.fixture
def mesh(tmp_path: Path):
    ca = CertificateAuthority.init(tmp_path / "ca", TD, key_type=KeyType.ECDSA_P256)
    node_dir = tmp_path / "node"
    ca.issue_to(node_dir, NODE, 3600.0, key_type=KeyType.ECDSA_P256)
    return ca, node_dir


async def renewer_for(node_dir: Path, server: RenewalServer, session_id: SpiffeId = NODE):
    source = BuiltinSource(BuiltinPaths.in_dir(node_dir), TD, poll_interval=60.0, request_renewal=False)
    await source.start()
    counts: list[tuple[str, str]] = []

    async def transport(body: bytes, timeout: float) -> tuple[str, bytes]:
        serial = source.svid().leaf.serial_number
        return "spiffe://mesh.x0tta/node/ca", await server.handle(session_id, serial, body)

    renewer = MeshRenewer(source, transport, fraction=0.5, jitter=0.1, timeout=5.0,
                          count=lambda r, why: counts.append((r, why)))
    return source, renewer, counts


async def test_a_renewal_installs_a_new_svid_with_a_fresh_key(mesh):
    ca, node_dir = mesh
    served: list[tuple[str, str]] = []
    source, renewer, counts = await renewer_for(node_dir, RenewalServer(ca.directory, 120.0,
                                                                        count=lambda r, w: served.append((r, w))))
    try:
        old = source.svid()
        old_key = (node_dir / "svid.key").read_bytes()
        assert await renewer.renew_once()
        new = source.svid()
        assert new.leaf != old.leaf and new.spiffe_id == NODE and 100 < new.lifetime < 200
        assert (node_dir / "svid.key").read_bytes() != old_key  # a fresh key, now in svid.key
        assert not (node_dir / "svid.key.new").exists() and not (node_dir / "svid.csr").exists()
        assert (node_dir / "svid.key").stat().st_mode & 0o777 == 0o600
        assert counts == [("ok", "ok")] and served == [("granted", "ok")] and renewer.problem is None
        assert source.rotations == 1
    finally:
        await source.close()


async def test_a_revoked_nodes_renewal_is_refused(mesh):
    ca, node_dir = mesh
    ca.revoke(spiffe_id=NODE)
    served: list[tuple[str, str]] = []
    source, renewer, counts = await renewer_for(node_dir, RenewalServer(ca.directory, 120.0,
                                                                        count=lambda r, w: served.append((r, w))))
    try:
        old = source.svid()
        assert not await renewer.renew_once()
        assert source.svid().leaf == old.leaf
        assert counts == [("refused", "revoked")] and served == [("refused", "revoked")]
        assert renewer.problem is not None and renewer.problem.kind == "refused"
        assert len(ca.issued()) == 1  # nothing signed
    finally:
        await source.close()


async def test_a_request_for_another_id_is_refused(mesh):
    ca, node_dir = mesh
    source, renewer, counts = await renewer_for(node_dir, RenewalServer(ca.directory, 120.0), session_id=OTHER)
    try:
        assert not await renewer.renew_once()
        assert counts == [("refused", "wrong_id")] and "asks for" in renewer.problem.message
    finally:
        await source.close()
    answer = core.decode_answer(await RenewalServer(ca.directory, 120.0).handle(NODE, 1, b"junk"))
    assert isinstance(answer, core.Refused) and answer.reason is core.RefusalReason.BAD_REQUEST


async def test_an_answer_that_does_not_fit_the_pending_key_is_not_installed(mesh, tmp_path):
    ca, node_dir = mesh
    stranger = ca.issue(NODE, 120.0, key_type=KeyType.ECDSA_P256)  # valid, right ID, someone else's key

    async def transport(body: bytes, timeout: float) -> tuple[str, bytes]:
        return "ca", core.encode_answer(core.Granted(stranger.chain_pem(), ca.crl_pem()))

    source = BuiltinSource(BuiltinPaths.in_dir(node_dir), TD, poll_interval=60.0, request_renewal=False)
    await source.start()
    try:
        svid_pem = (node_dir / "svid.pem").read_bytes()
        counts: list[tuple[str, str]] = []
        renewer = MeshRenewer(source, transport, fraction=0.5, jitter=0.0, timeout=1.0,
                              count=lambda r, w: counts.append((r, w)))
        assert not await renewer.renew_once()
        assert counts == [("failed", "bad_answer")] and (node_dir / "svid.pem").read_bytes() == svid_pem

        async def nobody(body: bytes, timeout: float) -> tuple[str, bytes]:
            raise NoCaNode("no session to a peer that serves identity.renew")

        renewer.transport = nobody
        assert not await renewer.renew_once()
        assert counts[-1] == ("failed", "no_ca_node") and renewer.problem.kind == "unreachable"
    finally:
        await source.close()


async def test_a_node_without_the_ca_key_says_so(tmp_path):
    from x0tta.identity.service import IdentityService

    answer = core.decode_answer(await IdentityService().serve_renewal(NODE, 1, b"{}"))
    assert isinstance(answer, core.Refused) and answer.reason is core.RefusalReason.NOT_A_CA


async def test_due_is_drawn_once_per_svid_and_health_names_the_refusal(mesh):
    from x0tta.config.identity import IdentitySettings
    from x0tta.identity.service import assess

    ca, node_dir = mesh
    ca.revoke(spiffe_id=NODE)
    source, renewer, _counts = await renewer_for(node_dir, RenewalServer(ca.directory, 120.0))
    try:
        draws = iter([0.0, 0.9])
        renewer.rand = lambda: next(draws)
        svid = source.svid()
        nb = svid.leaf.not_valid_before_utc.timestamp()
        first = renewer.due()
        assert first == pytest.approx(nb + 0.4 * svid.lifetime) and renewer.due() == first  # one draw
        settings = IdentitySettings(trust_domain=TD)
        assert [c.code for c in assess(source, settings, nb + 0.6 * svid.lifetime, renewer=renewer)] == []
        assert not await renewer.renew_once()
        codes = [c.code for c in assess(source, settings, nb + 0.6 * svid.lifetime, renewer=renewer)]
        assert codes == ["renewal_refused"]
    finally:
        await source.close()


async def test_one_grant_per_id_per_tenth_of_the_lifetime(mesh):
    ca, _node_dir = mesh
    now = [time.time()]
    server = RenewalServer(ca.directory, 120.0, clock=lambda: now[0])
    body = core.encode_request(core.RenewalRequest(csr_for(NODE)))
    assert isinstance(core.decode_answer(await server.handle(NODE, 1, body)), core.Granted)
    again = core.decode_answer(await server.handle(NODE, 1, body))
    assert isinstance(again, core.Refused) and again.reason is core.RefusalReason.TOO_SOON
    refused = core.decode_answer(await server.handle(OTHER, 1, body))  # wrong ID: no grant remembered
    assert isinstance(refused, core.Refused) and str(OTHER) not in server.granted
    now[0] += 12.0
    assert isinstance(core.decode_answer(await server.handle(NODE, 1, body)), core.Granted)
    assert core.too_soon(None, 5.0, 10.0) is None and core.too_soon(0.0, 10.0, 10.0) is None
