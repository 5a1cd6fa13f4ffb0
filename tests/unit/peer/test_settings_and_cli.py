"""[peer] settings refuse contradictions; addresses parse; x0tta peers renders what peers.list returns."""

from __future__ import annotations

import pytest

from x0tta.cli.peers import render
from x0tta.config.fields import ConfigError, build
from x0tta.config.peer import PeerSettings
from x0tta.peer.service import tls_policy
from x0tta.peer.tls import hosts_and_ports


def test_defaults_are_pq_only():
    s = PeerSettings()
    assert s.groups == ("X25519MLKEM768",) and s.require_pq
    p = tls_policy(s)
    # what the docs promise: ML-DSA-65 leaves, not the weaker ML-DSA-44
    assert p.groups == ("X25519MLKEM768",) and p.allowed_key_algorithms == {"ML-DSA-65"}


def test_spire_source_accepts_ecdsa_p256_by_default_with_the_same_groups():
    p = tls_policy(PeerSettings(), "workload_api")
    assert p.allowed_key_algorithms == {"ML-DSA-65", "ECDSA-P256"} and p.groups == ("X25519MLKEM768",)


def test_accepted_signatures_decide_whatever_the_source():
    s = build(PeerSettings, {"accepted_signatures": ["ML-DSA-87", "ML-DSA-65"]})
    assert tls_policy(s).allowed_key_algorithms == tls_policy(s, "workload_api").allowed_key_algorithms == {
        "ML-DSA-65", "ML-DSA-87"}
    with pytest.raises(ConfigError, match="one of"):
        build(PeerSettings, {"accepted_signatures": ["DSA-1024"]})


def test_classical_group_needs_require_pq_off():
    with pytest.raises(ConfigError, match="require_pq"):
        build(PeerSettings, {"groups": ["X25519MLKEM768", "X25519"]})
    s = build(PeerSettings, {"groups": ["X25519MLKEM768", "X25519"], "require_pq": False})
    # require_pq is the key exchange; the signatures stay what accepted_signatures says
    assert tls_policy(s).allowed_key_algorithms == {"ML-DSA-65"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"idle_timeout": 1.0, "heartbeat_interval": 5.0}, "idle_timeout"),
        ({"groups": []}, "at least one group"),
        ({"groups": ["P-256"]}, "one of"),
        ({"reconnect_min_delay": 10.0, "reconnect_max_delay": 1.0}, "reconnect_max_delay"),
    ],
)
def test_bad_settings(data, message):
    with pytest.raises(ConfigError, match=message):
        build(PeerSettings, data)


def test_addresses():
    assert hosts_and_ports(["10.0.0.2", "10.0.0.3:7000", "[fe80::1%bat0]:7443", "[fd00::2]", "fd00::3"], 7443) == [
        ("10.0.0.2", 7443),
        ("10.0.0.3", 7000),
        ("fe80::1%bat0", 7443),
        ("fd00::2", 7443),
        ("fd00::3", 7443),
    ]


def test_render():
    rows = [
        {"direction": "out", "address": "10.0.0.2:7443", "spiffe_id": "spiffe://mesh.x0tta/node/b",
         "group": "X25519MLKEM768", "signature_algorithm": "ML-DSA-65", "svid_expires_in": 3541.2,
         "rtt_ms": 0.412, "state": "open", "resumed": True, "authentication": "post_quantum"},
        {"direction": "in", "address": "10.0.0.4:40112", "spiffe_id": "spiffe://mesh.x0tta/node/c",
         "group": "X25519MLKEM768", "signature_algorithm": "ECDSA-P256", "svid_expires_in": 1800.0,
         "rtt_ms": None, "state": "open", "authentication": "classical"},
        {"direction": "out", "address": "10.0.0.3:7443", "spiffe_id": "", "state": "connecting",
         "error": "unreachable: connect: refused"},
    ]
    text = render(rows)
    assert "spiffe://mesh.x0tta/node/b" in text and "X25519MLKEM768" in text and "0.41 ms" in text
    assert "open (resumed)" in text and "connecting: unreachable" in text
    assert "ECDSA-P256 (classical)" in text and "ML-DSA-65 (classical)" not in text
    assert render([]) == "no peer sessions"


async def test_a_reload_that_changes_the_accepted_signatures_restarts_the_subsystem():
    from x0tta.config.schema import AgentSettings
    from x0tta.peer.service import PeerService

    svc = PeerService()

    def agent(**sections):
        return build(AgentSettings, sections)

    assert await svc.reload(None, agent(peer={"accepted_signatures": ["ML-DSA-87"]})) is False
    assert await svc.reload(None, agent(identity={"source": "workload_api"})) is False  # ECDSA-P256 joins
    assert await svc.reload(None, agent(peer={"accepted_signatures": ["ML-DSA-65"]})) is True  # the same list
    assert svc.settings.accepted_signatures == ("ML-DSA-65",)
    assert await svc.reload(None, agent(identity={"source": "workload_api"},
                                        peer={"accepted_signatures": ["ML-DSA-65"]})) is True
    assert svc.source_kind == "workload_api"
