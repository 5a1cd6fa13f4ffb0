"""MAC-to-SPIFFE-ID bindings, quarantine with TTL and share cap, and the mode auto: pure, then
through the guard subsystem with a manual clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.kit.clock import ManualClock
from x0tta.config.guard import GuardSettings
from x0tta.config.schema import AgentSettings
from x0tta.guard.core import parse_mac
from x0tta.guard.core.binding import Bindings, effective_mode
from x0tta.guard.enforce import KernelMaps
from x0tta.guard.service import GuardCommandError, GuardService, select_threats
from x0tta.guard.testing import DictMap
from x0tta.telemetry.testing import StandaloneContext

A, B, C, D = (parse_mac(f"02:00:00:00:00:0{x}") for x in "abcd")
ID_B = "spiffe://mesh/node/b"
MODE_KEY = b"\0\0\0\0"


def test_a_binding_outlives_its_last_session_by_the_grace_not_a_revocation():
    s, why = Bindings().up(B, ID_B, "eth0", 1.0)
    assert why == "" and s.bound[B].sessions == 1
    s, _ = s.up(B, ID_B, "eth0", 2.0)
    s, ended = s.down(B, 3.0)
    assert not ended and s.bound[B].sessions == 1 and s.bound[B].lost_at is None
    s, ended = s.down(B, 4.0)
    assert not ended and s.bound[B].lost_at == 4.0 and s.next_due(30.0) == 34.0
    s, ended = s.down(B, 5.0)  # a late duplicate changes nothing
    assert not ended and s.bound[B].lost_at == 4.0
    s2, _ = s.up(B, ID_B, "eth0", 20.0)  # back within the grace: bound again, one session
    assert s2.bound[B].lost_at is None and s2.bound[B].sessions == 1 and s2.bound[B].since == 1.0
    assert s.expire(33.9, 30.0)[1:] == ([], [])
    s3, lost, released = s.expire(34.0, 30.0)
    assert lost == [B] and released == [] and not s3.bound and s3.next_due(30.0) is None
    s4, ended = s2.down(B, 21.0, reason="revoked")
    assert ended and not s4.bound
    s5, _ = s2.up(B, "spiffe://mesh/node/other", "eth1", 22.0)  # another identity on that MAC: rebound
    assert s5.bound[B].spiffe_id == "spiffe://mesh/node/other" and s5.bound[B].since == 22.0


def test_a_revoked_identity_loses_its_bindings_at_once_sessions_up_or_gone():
    s, _ = Bindings().up(B, ID_B, "eth0", 1.0)
    s, _ = s.up(C, ID_B, "eth1", 1.0)
    s, _ = s.up(A, "spiffe://mesh/node/a", "eth0", 1.0)
    s, _ = s.down(C, 2.0)  # its session gone: the grace would keep it another 30 s
    s2, ended = s.revoke(ID_B)
    assert ended == [B, C] and list(s2.bound) == [A]
    assert s2.revoke(ID_B) == (s2, [])


def test_quarantine_refuses_the_mac_and_its_identity_until_the_ttl_or_a_release():
    s, _ = Bindings().up(B, ID_B, "eth0", 0.0)
    s, why = s.quarantine(B, 10.0, 600.0, "originator_flood", [A, B, C], share=0.5)
    assert why == "" and B not in s.bound and s.quarantined[B].spiffe_id == ID_B
    assert s.refusal(B) and s.refusal(D, ID_B) and s.up(D, ID_B, "eth1", 11.0)[1] == f"{ID_B} is quarantined"
    assert s.refusal(A, "spiffe://mesh/node/a") == ""
    assert s.next_due(60.0) == 610.0
    again, why = s.quarantine(B, 100.0, 600.0, "again", [B], share=0.0)  # extending needs no room
    assert why == "" and again.quarantined[B].until == 700.0 and again.quarantined[B].since == 10.0
    over, _lost, released = s.expire(610.0, 60.0)
    assert released == [B] and not over.quarantined and over.refusal(B) == ""
    by_id, macs = s.release(ID_B)
    assert macs == [B] and not by_id.quarantined
    by_mac, macs = s.release("02:00:00:00:00:0b")
    assert macs == [B] and not by_mac.quarantined
    assert s.release("02:00:00:00:00:0a")[1] == [] and s.release("spiffe://nobody")[1] == []
    assert s.quarantine(C, 0.0, 0.0, "", [A, C], 1.0)[1] == "the TTL must be positive"


@pytest.mark.parametrize(("heard", "already", "share", "ok"), [
    (4, 0, 0.5, True),   # 1 of 4
    (4, 1, 0.5, True),   # 2 of 4
    (4, 2, 0.5, False),  # 3 of 4
    (1, 0, 0.5, False),  # the only neighbour: 1 of 1 is more than half
    (1, 0, 1.0, True),
    (3, 0, 0.0, False),  # share 0: never
])
def test_never_more_than_the_share_of_the_neighbours(heard, already, share, ok):
    macs = [parse_mac(f"02:00:00:00:01:{i:02x}") for i in range(heard)]
    s = Bindings()
    for m in macs[1:1 + already]:
        s, why = s.quarantine(m, 0.0, 60.0, "", macs, 1.0)
        assert why == ""
    s, why = s.quarantine(macs[0], 0.0, 60.0, "", macs, share)
    assert (why == "") is ok and (macs[0] in s.quarantined) is ok


def test_effective_mode():
    assert effective_mode("observe", 0.0, 0.0, 60.0, 1e6) == "observe"
    assert effective_mode("enforce", None, 0.0, 60.0, 0.0) == "enforce"
    assert effective_mode("auto", None, 0.0, 60.0, 1e6) == "observe"  # no identity: never
    assert effective_mode("auto", 0.0, 0.0, 60.0, 59.9) == "observe"  # grace after start
    assert effective_mode("auto", 0.0, 0.0, 60.0, 60.0) == "enforce"
    assert effective_mode("auto", 500.0, 0.0, 60.0, 559.0) == "observe"  # grace after the identity came
    assert effective_mode("auto", 500.0, 0.0, 60.0, 560.0) == "enforce"


def service(settings: GuardSettings, ready: list[bool]) -> tuple[GuardService, StandaloneContext, ManualClock,
                                                                KernelMaps]:
    ctx = StandaloneContext(AgentSettings(guard=settings), name="guard")
    svc = GuardService(settings)
    clock = ManualClock(monotonic=100.0)
    svc._clock = clock.monotonic
    svc.identity_ready = lambda: ready[0]
    svc._started = clock.monotonic()
    svc._ctx = ctx
    maps = KernelMaps(DictMap(), DictMap())
    svc.kernel_maps(maps)
    return svc, ctx, clock, maps


def test_auto_enforces_once_the_identity_is_there_and_the_grace_is_over():
    ready = [False]
    svc, ctx, clock, maps = service(GuardSettings(enforce_grace=60.0), ready)
    now = clock.monotonic()
    assert svc.guard.mode == "observe" and svc.tick(ctx, now) == now + 1.0  # polls the identity
    clock.advance(30)
    ready[0] = True
    assert svc.tick(ctx, clock.monotonic()) == 190.0 and svc.guard.mode == "observe"  # 60 s from the identity
    clock.advance(190.0 - clock.monotonic())
    assert svc.tick(ctx, clock.monotonic()) == 191.0  # enforcing: looks whether the identity is still there
    assert svc.guard.mode == "enforce" and maps.config.data[MODE_KEY][:4] == (1).to_bytes(4, "little")
    ready[0] = False  # the identity went (an expired SVID): it cannot admit anyone, so it observes
    svc.tick(ctx, clock.monotonic())
    assert svc.guard.mode == "observe"
    # an explicit observe is the opt-out: never enforced, whatever the identity
    svc2, ctx2, clock2, _ = service(GuardSettings(mode="observe"), [True])
    clock2.advance(1e6)
    assert svc2.tick(ctx2, clock2.monotonic()) is None and svc2.guard.mode == "observe"


async def test_quarantine_and_release_through_the_service_and_admin():
    svc, ctx, clock, maps = service(GuardSettings(mode="enforce", quarantine_share=0.5), [True])
    svc._register(ctx)
    closed = []
    svc.on_quarantine.append(lambda mac, who: closed.append((mac, who)))
    assert svc.guard.session_up(B, ID_B, "eth0", clock.monotonic()) == "" and B in maps.admitted.data
    svc.guard.session_up(C, "spiffe://mesh/node/c", "eth0", clock.monotonic())
    assert svc.quarantine(B, 300.0, "test") == ""
    assert B not in maps.admitted.data and closed == [(B, ID_B)]
    assert svc.quarantine(C, 300.0, "test").startswith("2 of 2 neighbours")  # the share holds
    assert svc.guard.session_up(B, ID_B, "eth0", clock.monotonic()) == "02:00:00:00:00:0b is quarantined"
    assert B not in maps.admitted.data
    listing = await ctx.admin.handlers["guard.list"]({})
    assert [(q["mac"], q["spiffe_id"], q["expires_in"]) for q in listing["quarantined"]] == [
        ("02:00:00:00:00:0b", ID_B, 300.0)]
    assert [b["mac"] for b in listing["bindings"]] == ["02:00:00:00:00:0c"] and listing["configured_mode"] == "enforce"
    value = ctx.registry.get_sample_value
    assert value("x0tta_guard_quarantined") == 1 and value("x0tta_guard_quarantines_total") == 1
    assert value("x0tta_guard_bindings") == 1
    assert await ctx.admin.handlers["guard.release"]({"who": ID_B}) == {"who": ID_B, "released": ["02:00:00:00:00:0b"]}
    assert svc.guard.session_up(B, ID_B, "eth0", clock.monotonic()) == "" and B in maps.admitted.data
    assert svc.quarantine(B, 300.0, "again") == ""
    clock.advance(300.0)
    svc.tick(ctx, clock.monotonic())  # released by its TTL
    assert not svc.guard.bindings.quarantined and value("x0tta_guard_quarantined") == 0
    with pytest.raises(GuardCommandError):
        await ctx.admin.handlers["guard.release"]({})
    assert "admitted by the config" in GuardService.quarantine(
        service(GuardSettings(admitted_macs=("02:00:00:00:00:0a",)), [True])[0], A, 60.0, "")


def test_threat_selection():
    def rec(ts: str, sev: int) -> dict:
        return {"timestamp": ts, "alert": {"severity": sev}}

    records = [rec("2026-12-06T03:00:00.000000+0000", 3), rec("2026-12-06T04:00:00.000000+0000", 1),
               rec("2026-12-06T05:00:00.000000+0000", 2)]
    assert select_threats(records, {"since": "2026-12-06T04"}) == records[1:]
    assert select_threats(records, {"severity": 2}) == records[1:]
    assert select_threats(records, {"severity": 1, "since": "2026-12-06T03:30"}) == [records[1]]
    assert select_threats(records, {"limit": 1}) == records[2:] and select_threats(records, {"limit": 0}) == []
    for bad in ({"limit": -1}, {"since": 5}, {"severity": 9}, {"severity": True}):
        with pytest.raises(GuardCommandError):
            select_threats(records, bad)


MACS = [bytes([2, 0, 0, 0, 2, i]) for i in range(6)]


@given(st.lists(st.tuples(st.sampled_from(["up", "down", "revoked", "quarantine", "release", "expire"]),
                          st.integers(0, len(MACS) - 1), st.floats(0.0, 1.0)), max_size=40))
def test_bindings_keep_their_rules_whatever_happens(ops):
    """Whatever the sequence: a quarantined MAC is never bound, a new quarantine never takes the
    share of quarantined neighbours past the cap, and every binding has a session or a loss time."""
    s, now, share = Bindings(), 0.0, 0.5
    for op, i, x in ops:
        now += 1.0
        mac = MACS[i]
        if op == "up":
            s, _ = s.up(mac, f"spiffe://mesh/node/{i}", "eth0", now)
        elif op in ("down", "revoked"):
            s, _ = s.down(mac, now, "revoked" if op == "revoked" else "eof")
        elif op == "quarantine":
            heard = MACS[: 1 + int(x * (len(MACS) - 1))]
            fresh = mac not in s.quarantined
            s, why = s.quarantine(mac, now, 5.0, "test", heard, share)
            if fresh and not why:
                assert len(s.quarantined) <= share * len(set(heard) | {mac} | set(s.quarantined))
        elif op == "release":
            s, _ = s.release(f"spiffe://mesh/node/{i}")
        else:
            s, _, _ = s.expire(now, 3.0)
        assert not set(s.bound) & set(s.quarantined)
        assert all((b.sessions > 0) != (b.lost_at is not None) for b in s.bound.values())


def test_bound_macs_names_a_mac_itself_or_every_mac_bound_to_a_spiffe_id():
    from x0tta.guard.core.binding import Binding, Bindings

    b = Bindings(bound={bytes.fromhex("02ba00010002"): Binding("spiffe://m/node/a", "e1", 0.0),
                        bytes.fromhex("02ba00010001"): Binding("spiffe://m/node/a", "e0", 0.0),
                        bytes.fromhex("02ba00020001"): Binding("spiffe://m/node/b", "e0", 0.0)})
    assert b.bound_macs("spiffe://m/node/a") == [bytes.fromhex("02ba00010001"), bytes.fromhex("02ba00010002")]
    assert b.bound_macs("02:ba:00:09:00:09") == [bytes.fromhex("02ba00090009")]  # a MAC, bound or not
    assert b.bound_macs("spiffe://m/node/z") == []
