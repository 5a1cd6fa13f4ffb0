"""Admission state: static seeds, dynamic admit/revoke, adoption after restart, idempotent sync."""

from __future__ import annotations

import pytest

from x0tta.common.errors import DecodeError, PermanentError
from x0tta.guard.core import DYNAMIC, STATIC, AdmissionState, BadMac, StaticMacRevoke, parse_mac, plan_sync
from x0tta.guard.enforce import Guard
from x0tta.guard.testing import DictMap

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


def raw(mac):
    return parse_mac(mac)


@pytest.mark.parametrize("text", ["02:00:00:00:00:0A", "02-00-00-00-00-0a", "02000000000a", b"\x02\0\0\0\0\x0a"])
def test_parse_mac_forms(text):
    assert parse_mac(text) == b"\x02\0\0\0\0\x0a"


@pytest.mark.parametrize("text", ["", "02:00:00:00:00", "02:00-00:00:00:0a", "zz:00:00:00:00:0a", b"\0" * 5, 7])
def test_bad_mac_is_a_decode_error(text):
    with pytest.raises(BadMac) as info:
        parse_mac(text)
    assert isinstance(info.value, DecodeError)


def test_admit_revoke_and_static_entries():
    s = AdmissionState.seeded("enforce", [A], now=1.0)
    s, changed = s.admit(B, 2.0, "handshake")
    assert changed and s.is_admitted(B)
    assert s.admit(B, 3.0)[1] is False
    s, changed = s.revoke(B)
    assert changed and not s.is_admitted(B)
    assert s.revoke(C)[1] is False
    with pytest.raises(StaticMacRevoke):
        s.revoke(A)
    assert s.desired() == {raw(A): STATIC}


def test_reseed_keeps_dynamic_and_adopt_takes_pinned_dynamic_only():
    s = AdmissionState.seeded("observe", [A], 1.0).admit(B, 2.0)[0]
    s = s.reseed([C], 3.0)
    assert s.desired() == {raw(B): DYNAMIC, raw(C): STATIC}
    fresh = AdmissionState.seeded("observe", [C], 4.0).adopt({raw(B): DYNAMIC, raw(A): STATIC}, 5.0)
    assert fresh.desired() == {raw(B): DYNAMIC, raw(C): STATIC}  # a static MAC the config dropped stays out


def test_bad_mode():
    with pytest.raises(PermanentError):
        AdmissionState("block")


def test_plan_sync_is_idempotent():
    desired = {raw(A): STATIC, raw(B): DYNAMIC}
    current = {raw(B): STATIC, raw(C): DYNAMIC}
    puts, deletes = plan_sync(desired, current)
    assert puts == desired and deletes == [raw(C)]
    assert plan_sync(desired, desired) == ({}, [])


def test_guard_writes_maps_once_bound():
    g = Guard("observe", [A], clock=lambda: 1.0)
    g.admit(B)
    pinned = DictMap({raw(C): (2).to_bytes(4, "little"), raw("02:00:00:00:00:ff"): (1).to_bytes(4, "little")})
    config = DictMap()
    g.bind(pinned, config)
    assert set(pinned.data) == {raw(A), raw(B), raw(C)}
    assert config.data[b"\0\0\0\0"][:4] == (0).to_bytes(4, "little")
    g.set_mode("enforce")
    assert config.data[b"\0\0\0\0"][:4] == (1).to_bytes(4, "little")
    assert g.revoke(C) and raw(C) not in pinned.data
    g.unbind()
    g.admit(C)
    assert raw(C) not in pinned.data and g.is_admitted(C)
    assert g.to_json()["enforced_in_kernel"] is False


def test_mac_from_link_local():
    from x0tta.guard.core import mac_from_link_local

    assert mac_from_link_local("fe80::ff:fe00:102") == parse_mac("02:00:00:00:01:02")
    assert mac_from_link_local("[fe80::a8bb:ccff:fedd:eeff%eth0]") == parse_mac("aa:bb:cc:dd:ee:ff")
    for host in ("10.0.0.1", "2001:db8::ff:fe00:102", "fe80::1", "not an address", ""):
        assert mac_from_link_local(host) is None


def test_peer_admission_follows_sessions():
    from dataclasses import dataclass

    from x0tta.guard.enforce import PeerAdmission

    @dataclass
    class Change:
        up: bool
        host: str
        spiffe_id: str = "spiffe://mesh/node/b"
        reason: str = ""

    g = Guard("enforce", [A])
    unresolved = []
    now = [10.0]
    adm = PeerAdmission(g, on_unresolved=unresolved.append, clock=lambda: now[0])
    b_ll = "fe80::ff:fe00:b%eth0"  # MAC 02:00:00:00:00:0b
    adm(Change(True, b_ll))
    adm(Change(True, b_ll))  # a second session (the other direction)
    assert g.is_admitted(B) and g.state.entries[raw(B)].reason == "spiffe://mesh/node/b"
    bound = g.to_json(now[0])["bindings"]
    assert [(x["mac"], x["spiffe_id"], x["interface"], x["sessions"]) for x in bound] == [
        (B, "spiffe://mesh/node/b", "eth0", 2)]
    adm(Change(False, b_ll))
    assert g.is_admitted(B)  # one session still up
    adm(Change(False, b_ll))
    assert g.is_admitted(B)  # the last one went: admitted for the grace, then not
    now[0] = 69.0
    assert g.expire(now[0], 60.0) == ([], []) and g.is_admitted(B)
    now[0] = 70.0
    assert g.expire(now[0], 60.0) == ([raw(B)], []) and not g.is_admitted(B) and not g.bindings.bound
    adm(Change(True, b_ll))  # back, then revoked by the CRL: out at once
    adm(Change(False, b_ll, reason="revoked"))
    assert not g.is_admitted(B) and not g.bindings.bound
    adm(Change(True, "10.0.0.7"))
    assert unresolved == ["10.0.0.7"] and len(g.state.entries) == 1
    adm(Change(True, "fe80::ff:fe00:a"))  # a statically admitted MAC stays when its session ends
    adm(Change(False, "fe80::ff:fe00:a"))
    assert g.is_admitted(A)
