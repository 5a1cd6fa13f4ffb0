"""Renewal through the mesh with real PQ mTLS sessions on loopback, no operator.

* Four in-process agents (one CA node) with SVIDs of 20 s run 45 s: every node renews several
  times through the CA node, no SVID ever expires, no echo over any link fails, and no session
  ends except by being replaced by its re-authenticated successor.
* Over a real session: a CSR for another node's ID is refused (``wrong_id``); a node revoked at the
  CA is refused (``revoked``), counted on both ends and reported as ``renewal_refused``.

The 10-minute, 5-node, TTL 60 s run of the acceptance line is ``tests/bench/bench_renewal.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives import serialization

from tests.kit.renewalmesh import TD, renewal_mesh
from tests.kit.wait import until
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.core import certs
from x0tta.identity.core import renewal as core
from x0tta.identity.core.certs import KeyType
from x0tta.peer.testing import sample

pytestmark = pytest.mark.integration

TTL = 20.0
RUN = 45.0


async def test_four_nodes_renew_through_the_ca_node_with_no_session_lost(tmp_path):
    async with renewal_mesh(tmp_path, 4, TTL) as mesh:
        await asyncio.sleep(RUN)
        renewed = {n.name: n.renewals() for n in mesh.nodes}
        lost = mesh.sessions_lost()
        assert all(r >= 3 for r in renewed.values()), renewed
        assert mesh.expired_seen == [] and mesh.min_left > 0
        assert mesh.echo_failed == [] and mesh.echo_ok > 100
        assert lost == [], [(name, c.spiffe_id, c.reason) for name, c in lost]
        assert len(mesh.downs) >= 3  # sessions were replaced by re-authenticated ones, each on purpose
        print("renewals", renewed, "replaced sessions", len(mesh.downs), "min validity", round(mesh.min_left, 1))
        ca_node = mesh.nodes[0]
        served = sample(ca_node.identity_ctx, "x0tta_identity_renewal_requests_served_total",
                        result="granted", reason="ok")
        assert served >= sum(renewed[n.name] for n in mesh.nodes[1:])
        for node in mesh.nodes[1:]:
            assert sample(node.identity_ctx, "x0tta_identity_mesh_renewals_total", result="ok", reason="ok") >= 3
            assert node.identity.source.svid().spiffe_id == SpiffeId.parse(f"spiffe://{TD}/node/{node.name}")


async def test_over_a_session_another_id_and_a_revoked_node_are_refused(tmp_path):
    async with renewal_mesh(tmp_path, 3, 3600.0) as mesh:  # no renewal falls due during the test
        n1, n2 = mesh.nodes[1], mesh.nodes[2]
        transport = n1.identity.renewal_transport
        assert transport is not None
        key = certs.generate_key(KeyType.ML_DSA_65)
        other = certs.build_csr(key, SpiffeId.parse(f"spiffe://{TD}/node/n2")).public_bytes(serialization.Encoding.PEM)
        ca_id, raw = await transport(core.encode_request(core.RenewalRequest(other)), 10.0)
        answer = core.decode_answer(raw)
        assert ca_id == f"spiffe://{TD}/node/n0"
        assert isinstance(answer, core.Refused) and answer.reason is core.RefusalReason.WRONG_ID

        mesh.ca.revoke(spiffe_id=f"spiffe://{TD}/node/n2")
        before = n2.identity.source.svid().leaf
        assert not await n2.identity.renewer.renew_once()
        assert n2.identity.source.svid().leaf == before
        assert n2.identity.renewer.problem.kind == "refused"
        await until(lambda: "renewal_refused" in n2.identity_ctx.health.codes, 5.0)
        assert sample(n2.identity_ctx, "x0tta_identity_mesh_renewals_total", result="refused", reason="revoked") == 1
        ca_ctx = mesh.nodes[0].identity_ctx
        assert sample(ca_ctx, "x0tta_identity_renewal_requests_served_total", result="refused", reason="revoked") == 1
        assert sample(ca_ctx, "x0tta_identity_renewal_requests_served_total", result="refused",
                      reason="wrong_id") == 1
        assert await n1.identity.renewer.renew_once()  # the others still renew
