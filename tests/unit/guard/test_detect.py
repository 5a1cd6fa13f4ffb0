"""The guard's detectors: each flags its attack with evidence and leaves honest churn alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.guard.strategies import observations, times
from x0tta.config.guard import DetectSettings
from x0tta.guard.core import link_local_from_mac
from x0tta.guard.core.detect import (
    DETECTORS,
    SIGNATURES,
    Claim,
    Flow,
    GatewayAd,
    Handshake,
    Heard,
    LinkMeasure,
    Observation,
    Ogm,
    Route,
    detect,
    flow_flood,
    flow_scan,
    fresh,
    gateway_bandwidth,
    handshake_burst,
    inflated_link_metric,
    mac_on_two_links,
    mac_two_identities,
    ogm_full_claim,
    originator_flood,
    seqno_takeover,
    unadmitted_frames,
)

S = DetectSettings()
A, B, C, R = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:66"


def mac(n: int) -> str:
    return f"02:00:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


def test_signature_ids_are_unique_and_in_the_local_range() -> None:
    sids = [s.sid for s in SIGNATURES.values()]
    assert len(set(sids)) == len(sids)
    assert all(1_000_000 <= sid <= 1_999_999 for sid in sids)
    assert set(DETECTORS) == set(SIGNATURES)
    assert all(1 <= s.severity <= 4 for s in SIGNATURES.values())


# -- unadmitted frames ----------------------------------------------------------------------------


def heard(mac_: str, rx: int, first: float = 0.0, iface: str = "wlan0", last: float | None = None) -> Heard:
    return Heard(iface, mac_, rx, first, last)


def test_frames_from_an_unadmitted_mac_past_its_grace_are_flagged() -> None:
    obs = [Observation(0.0, heard=(heard(R, 0),)), Observation(60.0, heard=(heard(R, 400),))]
    [f] = unadmitted_frames(obs, S, 60.0)
    assert f.signature.name == "unadmitted_frames" and f.macs == (R,) and f.interface == "wlan0"
    assert f.evidence["frames"] == 400 and f.level == 2


def test_unadmitted_frames_are_low_severity_while_enforcing_they_are_dropped() -> None:
    obs = [Observation(0.0, heard=(heard(R, 0),)), Observation(60.0, heard=(heard(R, 400),), enforcing=True)]
    [f] = unadmitted_frames(obs, S, 60.0)
    assert f.level == 3 and f.evidence["enforcing"] is True


def test_unadmitted_frames_are_informational_where_this_node_can_admit_nobody() -> None:
    obs = [Observation(0.0, heard=(heard(R, 0),)), Observation(60.0, heard=(heard(R, 400),), admitting=False)]
    [f] = unadmitted_frames(obs, S, 60.0)
    assert f.level == 4 and f.evidence["admitting"] is False


def test_honest_joiner_within_its_grace_and_admitted_neighbours_are_not_flagged() -> None:
    obs = [
        Observation(0.0, heard=(heard(A, 0),)),
        Observation(50.0, heard=(heard(A, 900), heard(B, 40, first=40.0)), admitted=frozenset({A})),
    ]
    assert unadmitted_frames(obs, S, 50.0) == []


def test_a_neighbour_whose_session_just_ended_is_within_its_grace() -> None:
    # its agent restarts: the admission goes with the session, its batman-adv frames go on
    obs = [
        Observation(0.0, heard=(heard(A, 0),), admitted=frozenset({A})),
        Observation(50.0, heard=(heard(A, 0),), admitted=frozenset({A})),
        Observation(60.0, heard=(heard(A, 200),)),
    ]
    assert unadmitted_frames(obs, S, 60.0) == []
    # ... and flagged once it stayed out for longer than the grace
    obs.append(Observation(90.0, heard=(heard(A, 500),)))
    assert [f.macs for f in unadmitted_frames(obs, S, 90.0)] == [(A,)]


def test_a_stray_frame_and_broadcast_macs_are_not_flagged() -> None:
    obs = [
        Observation(0.0, heard=(heard(R, 10), heard("ff:ff:ff:ff:ff:ff", 0))),
        Observation(60.0, heard=(heard(R, 12), heard("ff:ff:ff:ff:ff:ff", 10_000))),
    ]
    assert unadmitted_frames(obs, S, 60.0) == []


def test_the_guard_s_count_of_denied_frames_is_preferred_to_all_frames() -> None:
    # the handshake itself (IPv6 link-local, which the guard passes) is no unadmitted batman-adv frame
    obs = [Observation(0.0, heard=(Heard("wlan0", R, 0, 0.0, None, 0),)),
           Observation(60.0, heard=(Heard("wlan0", R, 300, 0.0, 59.0, 2),))]
    assert unadmitted_frames(obs, S, 60.0) == []
    obs.append(Observation(61.0, heard=(Heard("wlan0", R, 400, 0.0, 61.0, 90),)))
    assert [f.evidence["frames"] for f in unadmitted_frames(obs, S, 61.0)] == [90]


def test_a_counter_that_restarted_counts_from_zero() -> None:
    obs = [Observation(0.0, heard=(heard(R, 1000),)), Observation(60.0, heard=(heard(R, 7),))]
    [f] = unadmitted_frames(obs, S, 60.0)
    assert f.evidence["frames"] == 7


# -- one MAC, two links or two identities ---------------------------------------------------------


def test_one_mac_heard_on_two_links_at_once_is_flagged() -> None:
    obs = [Observation(100.0, heard=(heard(A, 5, last=99.0), heard(A, 5, iface="wlan1", last=98.0)))]
    [f] = mac_on_two_links(obs, S, 100.0)
    assert f.macs == (A,) and f.evidence["interfaces"] == ["wlan0", "wlan1"]


def test_a_neighbour_moving_between_links_is_not_flagged() -> None:
    # heard on wlan0 until 40 s, on wlan1 since: the old entry ages but is not recent with the new one
    obs = [Observation(100.0, heard=(heard(A, 5, last=40.0), heard(A, 5, iface="wlan1", last=99.5)))]
    assert mac_on_two_links(obs, S, 100.0) == []


def test_one_mac_with_two_spiffe_ids_is_flagged_and_a_rotation_is_not() -> None:
    addr = f"[{link_local_from_mac(A, 'wlan0')}]:7443"
    rotation = [Observation(20.0, handshakes=(
        Handshake(10.0, addr, True, spiffe_id="spiffe://m/node/a"),
        Handshake(12.0, addr, True, spiffe_id="spiffe://m/node/a"),
    ))]
    assert mac_two_identities(rotation, S, 20.0) == []
    clash = [Observation(20.0, handshakes=(
        Handshake(10.0, addr, True, spiffe_id="spiffe://m/node/a"),
        Handshake(12.0, addr, True, spiffe_id="spiffe://m/node/evil"),
    ))]
    [f] = mac_two_identities(clash, S, 20.0)
    assert f.macs == (A,) and f.spiffe_id == "spiffe://m/node/evil"
    assert f.evidence["spiffe_ids"] == ["spiffe://m/node/a", "spiffe://m/node/evil"]


def test_a_node_re_enrolled_under_a_new_id_long_after_is_not_a_clash() -> None:
    addr = link_local_from_mac(A, "wlan0")
    obs = [Observation(50.0, handshakes=(
        Handshake(1.0, addr, True, spiffe_id="spiffe://m/node/old"),
        Handshake(45.0, addr, True, spiffe_id="spiffe://m/node/new"),
    ))]
    assert mac_two_identities(obs, S, 50.0) == []


# -- originator flood -----------------------------------------------------------------------------


def routes(n: int, start: int = 0, neigh: str = A) -> tuple[Route, ...]:
    return tuple(Route(mac(start + i), neigh, "wlan0", tq=200) for i in range(n))


def test_a_flood_of_new_originators_is_flagged_with_the_neighbour_that_brought_them() -> None:
    obs = [Observation(0.0, routes=routes(10)), Observation(70.0, routes=routes(10) + routes(200, 1000, R))]
    [f] = originator_flood(obs, S, 70.0)
    assert f.macs == (R,) and f.evidence["new_originators"] == 200 and f.evidence["limit"] == 32
    assert f.evidence["carried_by_top_neighbour"] == 200


def test_nodes_joining_and_a_restarted_agent_are_not_a_flood() -> None:
    growing = [Observation(0.0, routes=routes(40)), Observation(60.0, routes=routes(60))]
    assert originator_flood(growing, S, 60.0) == []
    # a node that was alone learns the whole mesh at once when it joins
    joined = [Observation(0.0), Observation(60.0, routes=routes(300))]
    assert originator_flood(joined, S, 60.0) == []
    # an agent with no view from before the window has no baseline: it judges nothing
    fresh_start = [Observation(55.0, routes=routes(10)), Observation(60.0, routes=routes(500))]
    assert originator_flood(fresh_start, S, 60.0) == []


def test_a_node_rejoining_after_a_long_partition_re_learns_familiar_originators() -> None:
    # isolated for 10 minutes with its two neighbours, then back in a mesh of 200 it knew before
    obs = [Observation(600.0, routes=routes(2)),
           Observation(670.0, routes=routes(202), familiar=frozenset(r.orig for r in routes(202)))]
    assert originator_flood(obs, S, 670.0) == []
    # without that memory, the same view is a flood
    assert len(originator_flood([obs[0], replace(obs[1], familiar=frozenset())], S, 670.0)) == 1


def test_originators_that_come_back_after_a_flap_are_not_new() -> None:
    obs = [Observation(0.0, routes=routes(100)), Observation(40.0, routes=()), Observation(80.0, routes=routes(100))]
    assert originator_flood(obs, S, 80.0) == []


# -- sequence number takeover ---------------------------------------------------------------------


def stream(orig: str, start: int, t0: float, n: int, src: str, step: float = 1.0) -> tuple[Ogm, ...]:
    return tuple(Ogm(t0 + i * step, orig, (start + i) % (1 << 32), src) for i in range(n))


def test_a_jumped_stream_beside_the_old_one_is_a_takeover() -> None:
    honest = stream(C, 1000, 0.0, 50, A)
    attack = stream(C, 900_000, 20.0, 20, R)
    [f] = seqno_takeover([Observation(50.0, ogms=honest + attack)], S, 50.0)
    assert f.originator == C and f.macs == (R,)
    assert f.evidence["jump"] > 800_000 and f.evidence["new_from"] == [R]


def test_a_takeover_across_the_u32_wrap_is_seen() -> None:
    honest = stream(C, (1 << 32) - 10, 0.0, 40, A)
    attack = stream(C, 5000, 10.0, 10, R)
    assert [f.originator for f in seqno_takeover([Observation(40.0, ogms=honest + attack)], S, 40.0)] == [C]


def test_a_restarted_originator_jumps_but_is_not_flagged() -> None:
    before = stream(C, 1000, 0.0, 20, A)
    after = stream(C, 3_000_000_000, 25.0, 20, A)  # batman-adv starts at a random seqno
    assert seqno_takeover([Observation(50.0, ogms=before + after)], S, 50.0) == []


def test_rebroadcasts_reordering_and_an_outage_are_one_stream() -> None:
    direct = stream(C, 1000, 0.0, 30, A)
    via_b = tuple(replace(o, at=o.at + 0.3, seqno=o.seqno - 2, mac=B) for o in direct)
    after_gap = stream(C, 1000 + 30 + 40 * 1, 70.0, 10, A)  # 40 s unheard: 40 more seqnos
    obs = [Observation(50.0, ogms=direct + via_b), Observation(80.0, ogms=after_gap)]
    assert seqno_takeover(obs, replace(S, window=120.0), 80.0) == []


def test_a_jump_just_inside_the_window_is_one_stream_and_just_beyond_it_a_second() -> None:
    # 10 s after the last OGM a stream may be up to margin + rate x 10 s ahead (64 + 40 = 104 at a
    # rate of 4 a second)
    slow = replace(S, seqno_rate=4.0)
    honest = stream(C, 1000, 0.0, 21, A)  # 1000..1020 at 0..20 s
    inside = stream(C, 1020 + 104, 30.0, 3, R, step=0.1) + stream(C, 1021, 30.5, 3, A)
    assert seqno_takeover([Observation(40.0, ogms=honest + inside)], slow, 40.0) == []
    beyond = stream(C, 1020 + 105, 30.0, 3, R, step=0.1) + stream(C, 1021, 30.5, 3, A)
    [f] = seqno_takeover([Observation(40.0, ogms=honest + beyond)], slow, 40.0)
    assert f.macs == (R,) and f.evidence["new_seqno"] == 1020 + 105 + 2  # its third OGM


def test_an_honest_originator_on_faster_ogms_after_a_cut_is_one_stream() -> None:
    """Seen in the chaos lab: a neighbour unheard for 6 s (a cut) comes back on heal's 50 ms OGMs,
    then slows to 1 s again - one stream, never a takeover; at 4 a second the window split it, and
    the old stream's growing window later took its OGMs back, which read as two streams at once."""
    before = stream(C, 1000, 0.0, 10, A)  # 1000..1009 at 0..9 s
    fast = stream(C, 1009 + 120, 15.0, 60, A, step=0.05)  # 6 s unheard at 20 a second, then 3 s heard
    after = stream(C, 1009 + 180, 18.0, 30, A)  # back to one a second
    ogms = before + fast + after
    assert seqno_takeover([Observation(48.0, ogms=ogms)], S, 48.0) == []
    # the attacker of the same moment, beside the honest stream, is still one
    rogue = stream(C, 1009 + 100_000, 15.0, 10, R, step=0.1)
    [f] = seqno_takeover([Observation(48.0, ogms=ogms + rogue)], S, 48.0)
    assert f.macs == (R,)


def test_an_attacker_stream_that_wraps_past_zero_is_still_a_takeover() -> None:
    honest = stream(C, 70_000, 0.0, 40, A)
    attack = stream(C, (1 << 32) - 3, 10.0, 10, R)  # ahead of the honest stream by the u32 wrap: older
    crossing = stream(C, 2_000_000_000, 10.0, 10, R)  # 2**31 - 70,000 ahead: newer, and it wraps later
    assert [f.originator for f in seqno_takeover([Observation(40.0, ogms=honest + crossing)], S, 40.0)] == [C]
    assert [f.originator for f in seqno_takeover([Observation(40.0, ogms=honest + attack)], S, 40.0)] == [C]


def test_a_single_stray_ogm_is_no_second_stream_and_two_originators_are_judged_apart() -> None:
    honest = stream(C, 1000, 0.0, 30, A)
    stray = (Ogm(10.0, C, 900_000, R),)
    other = stream(B, 900_000, 0.0, 30, B)  # another originator, far away in seqno space: its own streams
    assert seqno_takeover([Observation(30.0, ogms=honest + stray + other)], S, 30.0) == []


def test_the_finding_names_the_interface_the_jumped_stream_came_in_on() -> None:
    honest = tuple(replace(o, interface="wlan0") for o in stream(C, 1000, 0.0, 30, A))
    attack = tuple(replace(o, interface="wlan1") for o in stream(C, 500_000, 10.0, 10, R))
    [f] = seqno_takeover([Observation(30.0, ogms=honest + attack)], S, 30.0)
    assert f.interface == "wlan1"


# -- inflated link metric -------------------------------------------------------------------------


def test_routes_better_than_their_first_hop_are_flagged_per_neighbour() -> None:
    obs = [Observation(10.0,
                       routes=(Route(C, R, "wlan0", tq=255), Route(mac(9), R, "wlan0", tq=250),
                               Route(B, A, "wlan0", tq=180)),
                       links=(LinkMeasure("wlan0", R, delivery=0.4), LinkMeasure("wlan0", A, delivery=0.9)))]
    [f] = inflated_link_metric(obs, S, 10.0)
    assert f.macs == (R,) and f.evidence["routes"] == 2 and f.evidence["worst"][0]["tq"] == 255


def test_batman_v_throughput_above_the_link_estimate_is_flagged() -> None:
    obs = [Observation(10.0,
                       routes=(Route(C, R, "wlan0", throughput=1_000_000), Route(B, A, "wlan0", throughput=50_000)),
                       links=(LinkMeasure("wlan0", R, throughput=20_000), LinkMeasure("wlan0", A, throughput=54_000)))]
    [f] = inflated_link_metric(obs, S, 10.0)
    assert f.macs == (R,) and f.evidence["worst"][0]["measured_throughput"] == 20_000


def test_noisy_honest_links_and_unmeasured_ones_are_not_flagged() -> None:
    obs = [Observation(10.0,
                       routes=(Route(C, A, "wlan0", tq=230), Route(B, B, "wlan0", tq=255),
                               Route(mac(7), A, "wlan0", throughput=60_000)),
                       links=(LinkMeasure("wlan0", A, delivery=0.7, throughput=40_000),))]
    assert inflated_link_metric(obs, S, 10.0) == []


P2, P4, P5, N1 = mac(0x200), mac(0x400), mac(0x500), mac(0x100)


def ring_routes(*extra: Route) -> tuple[Route, ...]:
    """n3's originator table in a BATMAN_IV ring at hop penalty 30: through n2 (interface MAC R,
    primary P2) and n4 (A, primary P4), each neighbour's own entries at the link's TQ and what it
    forwards at most (255 - 30) / 255 of it."""
    return (Route(R, R, "to-n2", tq=250), Route(P2, R, "to-n2", tq=249), Route(N1, R, "to-n2", tq=220),
            Route(P5, R, "to-n2", tq=194), Route(A, A, "to-n4", tq=252), Route(P4, A, "to-n4", tq=251),
            Route(P5, A, "to-n4", tq=222), *extra)


def looks(routes: tuple[Route, ...], penalty: int | None = 30,
          at: tuple[float, ...] = (8.0, 10.0)) -> list[Observation]:
    return [Observation(t, routes=routes, hop_penalty=penalty) for t in at]


def test_an_originator_through_a_neighbour_at_the_links_own_tq_is_an_inflated_claim() -> None:
    assert inflated_link_metric(looks(ring_routes()), S, 10.0) == []
    # n2 sends n5's OGMs with TQ 255, as if it were one hop from n5: n3 takes them at n2's link TQ
    lied = (*ring_routes()[:3], Route(P5, R, "to-n2", tq=250), *ring_routes()[4:])
    assert inflated_link_metric(looks(lied, at=(10.0,)), S, 10.0) == []  # one look is not yet a claim
    [f] = inflated_link_metric(looks(lied), S, 10.0)
    assert f.macs == (R,) and f.interface == "to-n2" and f.originator == P5
    assert {c["orig"] for c in f.evidence["worst"]} == {P5, P2}  # the neighbour's own primary beside it
    assert f.evidence["worst"][0] == {"orig": P5, "tq": 250, "link_tq": 250, "hop_penalty": 30}


@pytest.mark.parametrize("case", ["penalty_unknown", "penalty_too_small", "poor_link", "forward_at_the_bound"])
def test_the_unforwarded_check_keeps_quiet_where_it_cannot_tell(case: str) -> None:
    routes = ring_routes(Route(mac(0x600), R, "to-n2", tq=249))  # a second claim at the link's TQ
    penalty: int | None = {"penalty_unknown": None, "penalty_too_small": S.forward_penalty_min - 1}.get(case, 30)
    if case == "poor_link":
        routes = tuple(Route(r.orig, r.neigh, r.interface, tq=r.tq // 5) for r in routes)
    if case == "forward_at_the_bound":  # every honest forward, rounded up, stays below the threshold
        routes = tuple(r for r in ring_routes() if r.neigh == R) + tuple(
            Route(mac(0x700 + t), R, "to-n2", tq=-(-t * 225 // 255)) for t in range(64, 256))
    assert inflated_link_metric(looks(routes, penalty), S, 10.0) == [], case


def test_two_dumps_in_a_row_are_needed_however_far_apart_the_looks_are() -> None:
    lied = (*ring_routes()[:3], Route(P5, R, "to-n2", tq=250), *ring_routes()[4:])
    # looks further apart than forward_hold (a guard interval above it) still compare two dumps
    assert inflated_link_metric(looks(lied, at=(0.0, 12.0)), S, 12.0)
    # two looks that read one batman-adv dump are one dump
    same = [Observation(t, routes=lied, hop_penalty=30, routes_at=7.5) for t in (8.0, 10.0)]
    assert inflated_link_metric(same, S, 10.0) == []
    assert inflated_link_metric(looks(lied, at=(10.0, 10.0)), S, 10.0) == []
    both = [Observation(6.0, routes=lied, hop_penalty=30, routes_at=5.5), *same]
    assert inflated_link_metric(both, S, 10.0)


def test_a_link_whose_quality_is_moving_has_a_wider_bound() -> None:
    """A link coming back after a fault: its own entry rises as its TQ window fills again, and
    batman-adv's averaged entries through it lag by different amounts (the chaos lab: honest routes
    a few TQ above the bound seven and ten seconds after a restore). While it moves, the bound is
    a quarter of a penalty off the link's TQ: those pass, a claim at the link's own TQ does not.
    (A claim at half a penalty off, as the lab's attack showed, passes too while the link moves.)"""
    honest = (*ring_routes()[:3], Route(P5, R, "to-n2", tq=236), *ring_routes()[4:])  # 0.944 of 250
    rising = tuple(replace(r, tq=200) if r.orig == R else r for r in honest)
    assert inflated_link_metric([Observation(4.0, routes=rising, hop_penalty=30), *looks(honest)], S, 10.0) == []
    # the same routes on a link that held steady: above three quarters of a penalty off, a claim
    assert inflated_link_metric([Observation(4.0, routes=honest, hop_penalty=30), *looks(honest)], S, 10.0)
    # the attack, a claim at the link's own TQ, on the moving link: still one
    lied = (*ring_routes()[:3], Route(P5, R, "to-n2", tq=250), *ring_routes()[4:])
    rising_lied = tuple(replace(r, tq=200) if r.orig == R else r for r in lied)
    [f] = inflated_link_metric([Observation(4.0, routes=rising_lied, hop_penalty=30), *looks(lied)], S, 10.0)
    assert f.originator == P5


def test_entries_no_ogm_refreshes_are_not_read_as_claims() -> None:
    """A flood's made-up originators, forwarded by an honest neighbour at 225, stay in the table
    with that TQ after their source was shut out upstream, while the link to that neighbour may
    have become worse: stale entries are no claim."""
    stale = tuple(Route(mac(0x900 + i), R, "to-n2", tq=225, last_seen_ms=40_000) for i in range(5))
    routes = (Route(R, R, "to-n2", tq=206, last_seen_ms=300), Route(P2, R, "to-n2", tq=206, last_seen_ms=300),
              *stale)
    assert inflated_link_metric(looks(routes), S, 10.0) == []
    fresh = tuple(replace(r, last_seen_ms=500) for r in stale)
    assert inflated_link_metric(looks(routes[:2] + fresh), S, 10.0)


def test_the_lab_tables_of_an_inflated_tq_attack_are_a_claim_and_the_honest_ones_are_not() -> None:
    """n3's originator table in the lab's ring (tests/bench/bench_attacks.py, 2026-12-06): before
    the attack and right after n2 sent n5's OGMs with TQ 255 - which showed at 240, not 255."""
    def n3(n5_via_n2: int) -> tuple[Route, ...]:
        n2, n4 = "02:ba:00:02:00:02", "02:ba:00:04:00:03"
        return (Route(n2, n2, "to-n2", tq=255, last_seen_ms=180), Route(mac(0x202), n2, "to-n2", tq=255),
                Route(mac(0x201), n2, "to-n2", tq=225), Route(mac(0x205), n2, "to-n2", tq=n5_via_n2),
                Route(n4, n4, "to-n4", tq=255), Route(mac(0x204), n4, "to-n4", tq=255),
                Route(mac(0x201), n4, "to-n4", tq=198), Route(mac(0x205), n4, "to-n4", tq=225))
    assert inflated_link_metric(looks(n3(197)), S, 10.0) == []
    [f] = inflated_link_metric(looks(n3(240)), S, 10.0)
    assert f.macs == ("02:ba:00:02:00:02",) and mac(0x205) in {c["orig"] for c in f.evidence["worst"]}


def test_a_link_losing_quality_is_not_read_as_inflated_claims() -> None:
    """The neighbour's own entry refreshes at its OGM interval (heal may have made it 50 ms) and
    falls before the forwarded entries, which still average older, better OGMs."""
    def at(link: int) -> tuple[Route, ...]:
        return (Route(R, R, "to-n2", tq=link), Route(P2, R, "to-n2", tq=link), Route(N1, R, "to-n2", tq=220),
                Route(P5, R, "to-n2", tq=215))
    obs = [Observation(t, routes=at(link), hop_penalty=30) for t, link in ((6.0, 250), (8.0, 235), (10.0, 215))]
    assert inflated_link_metric(obs, S, 10.0) == []


# -- gateway bandwidth ----------------------------------------------------------------------------


def test_a_gateway_announcing_implausible_bandwidth_is_flagged() -> None:
    gws = (GatewayAd(A, A, 100_000, 20_000), GatewayAd(R, R, 4_294_967_200, 4_294_967_200))
    [f] = gateway_bandwidth([Observation(1.0, gateways=gws)], S, 1.0)
    assert f.originator == R and f.macs == (R,) and f.evidence["max_kbit"] == 10_000_000


def test_a_gateway_far_above_the_others_is_flagged() -> None:
    gws = (GatewayAd(A, A, 50_000), GatewayAd(B, B, 100_000), GatewayAd(C, C, 80_000), GatewayAd(R, R, 5_000_000))
    assert [f.originator for f in gateway_bandwidth([Observation(1.0, gateways=gws)], S, 1.0)] == [R]


def test_honest_gateways_of_different_sizes_are_not_flagged() -> None:
    gws = (GatewayAd(A, A, 10_000, 2_000), GatewayAd(B, B, 100_000, 20_000), GatewayAd(C, C, 1_000_000, 100_000))
    assert gateway_bandwidth([Observation(1.0, gateways=gws)], S, 1.0) == []
    # two gateways: no median to compare with, only the absolute ceiling applies
    assert gateway_bandwidth([Observation(1.0, gateways=(*gws[:1], GatewayAd(R, R, 9_000_000)))], S, 1.0) == []


# -- flows ----------------------------------------------------------------------------------------


def flow(src: str, dst: str, dport: int, packets: int, first: float, direction: str = "ingress") -> Flow:
    return Flow(direction, src, dst, 6, dport, packets, first)


def test_a_port_scan_is_flagged() -> None:
    scan = tuple(flow("fd00::66", "fd00::1", port, 1, 20.0) for port in range(1, 300))
    obs = [Observation(0.0), Observation(30.0, flows=scan)]
    [f] = flow_scan(obs, S, 30.0)
    assert f.subject == "fd00::66" and f.evidence["destinations"] == 299 and f.evidence["hosts"] == 1


def test_a_host_sweep_is_flagged_and_egress_is_not_counted() -> None:
    sweep = tuple(flow("10.0.0.66", f"10.0.{i >> 8}.{i & 255}", 22, 1, 10.0) for i in range(300))
    mine = tuple(flow("10.0.0.1", f"10.0.1.{i}", 80, 1, 10.0, "egress") for i in range(200))
    obs = [Observation(0.0), Observation(30.0, flows=sweep + mine)]
    assert [f.subject for f in flow_scan(obs, S, 30.0)] == ["10.0.0.66"]


def test_honest_traffic_and_long_lived_flows_are_not_a_scan() -> None:
    old = tuple(flow("fd00::2", "fd00::1", 7443 + i, 10, -500.0) for i in range(200))  # older than the window
    busy = tuple(flow("fd00::3", "fd00::1", p, 1000, 10.0) for p in (53, 123, 7443, 9100))
    browsing = tuple(flow("10.0.0.7", f"192.0.2.{i}", 443, 40, 10.0) for i in range(120))  # via a gateway
    obs = [Observation(0.0), Observation(30.0, flows=old + busy + browsing)]
    assert flow_scan(obs, S, 30.0) == []


def test_a_flood_is_flagged_and_a_big_download_is_not() -> None:
    base = Observation(0.0, flows=(flow("fd00::66", "fd00::1", 80, 0, -1.0), flow("fd00::2", "fd00::1", 443, 0, -1.0)))
    # fd00::2 sends 80,000 full-size packets a second (a gigabit link, full): not a flood
    cur = Observation(10.0, flows=(flow("fd00::66", "fd00::1", 80, 2_000_000, -1.0),
                                   flow("fd00::2", "fd00::1", 443, 800_000, -1.0)))
    [f] = flow_flood([base, cur], S, 10.0)
    assert f.subject == "fd00::66" and f.evidence["pps"] == 200_000.0


# -- OGMs at full quality -------------------------------------------------------------------------

P2, S2 = "02:00:00:00:02:01", "02:00:00:00:02:02"  # a neighbour's primary and secondary interfaces


def claims(now: float, *cs: tuple[str, str, int, int], hp: int | None = 15, ago: float = 0.5) -> Observation:
    """An observation at ``now`` of (orig, neighbour, tq, ttl) claims made ``ago`` seconds before."""
    return Observation(now, claims=tuple(Claim(now - ago, o, m, "wlan0", tq, ttl) for o, m, tq, ttl in cs),
                       hop_penalty=hp)


def test_a_neighbours_own_ogms_at_full_quality_are_no_claim() -> None:
    """A primary interface's frames carry its own OGMs (TTL 50); a secondary's its own (TTL 2) and
    its primary's; forwarded ones come below 255 less the penalty."""
    honest = claims(10.0, (P2, P2, 255, 50), (S2, S2, 255, 2), (P2, S2, 255, 50), (C, P2, 240, 49))
    assert ogm_full_claim([honest], S, 10.0) == []


@pytest.mark.parametrize(("cs", "allowed"), [
    (((P2, P2, 255, 50), (C, P2, 255, 49)), 0),  # from its primary interface: one other is too many
    (((S2, S2, 255, 2), (P2, S2, 255, 50), (C, S2, 255, 49)), 1),  # from a secondary: two others
    (((P2, S2, 255, 50), (C, S2, 250, 49)), 1),  # its own OGMs not seen: still at most one other
])
def test_a_far_originator_at_full_quality_from_a_neighbour_is_a_claim_about_it(cs, allowed) -> None:
    sender = cs[0][1]
    [f] = ogm_full_claim([claims(10.0, *cs)], S, 10.0)
    assert (f.subject, f.macs, f.interface, f.signature.severity) == (sender, (sender,), "wlan0", 1)
    assert f.evidence["allowed"] == allowed and C in [c["orig"] for c in f.evidence["claims"]]
    assert f.originator == (C if allowed == 0 else None)


def test_full_quality_claims_are_judged_only_fresh_above_the_penalty_and_with_one_known() -> None:
    attack = ((P2, P2, 255, 50), (C, P2, 255, 49))
    assert ogm_full_claim([claims(10.0, *attack, ago=S.forward_fresh + 0.5)], S, 10.0) == []  # old
    assert ogm_full_claim([claims(10.0, *attack, hp=None)], S, 10.0) == []  # penalty unknown: off
    assert ogm_full_claim([claims(10.0, *attack, hp=S.forward_penalty_min - 1)], S, 10.0) == []
    # at 248 the claim is above 255 less a penalty of 15, not above 255 less 7
    low = ((P2, P2, 255, 50), (C, P2, 248, 49))
    assert len(ogm_full_claim([claims(10.0, *low)], S, 10.0)) == 1
    assert ogm_full_claim([claims(10.0, *low, hp=7)], replace(S, forward_penalty_min=4), 10.0) == []


def look(at: float, *cs: tuple[str, str, float, int]) -> Observation:
    """A look at ``at`` holding (orig, neighbour, last claim time, ttl) claims at TQ 255."""
    return Observation(at, claims=tuple(Claim(t, o, m, "wlan0", 255, ttl) for o, m, t, ttl in cs), hop_penalty=15)


def test_a_neighbour_whose_primary_changed_is_not_claiming_its_old_primary() -> None:
    """The heal loop detached a neighbour's primary interface: its secondary became the primary
    (its own OGMs now with TTL 50) while the old primary's last claim is still fresh; or a
    secondary's primary moved to a third interface. Replaced, not joined: no finding."""
    before = [look(10.0, (S2, S2, 9.8, 2), (P2, S2, 9.9, 50)), look(12.0, (S2, S2, 11.8, 2), (P2, S2, 11.9, 50))]
    became = look(14.0, (S2, S2, 13.9, 50), (P2, S2, 13.5, 50))
    assert ogm_full_claim([*before, became], S, 14.0) == []
    assert ogm_full_claim([*before, became, look(16.0, (S2, S2, 15.9, 50), (P2, S2, 13.5, 50))], S, 16.0) == []
    moved = look(14.0, (S2, S2, 13.8, 2), (P2, S2, 13.0, 50), (C, S2, 13.9, 50))
    assert ogm_full_claim([*before, moved], S, 14.0) == []
    # an OGM of the old primary still on its way as the new one began: replaced too
    assert ogm_full_claim([*before, look(14.0, (S2, S2, 13.8, 2), (P2, S2, 13.6, 50), (C, S2, 13.9, 50))],
                          S, 14.0) == []
    # but an originator claimed beside the primary, which goes on past it, is a claim: as soon as
    # the primary's OGMs came a quarter of a second after it began
    attack = look(14.0, (S2, S2, 13.8, 2), (P2, S2, 13.9, 50), (C, S2, 13.2, 49))
    [f] = ogm_full_claim([*before, attack], S, 14.0)
    assert f.subject == S2 and f.evidence["originators"] == 2
    young = replace(attack, claims=(*attack.claims[:2], replace(attack.claims[2], at=13.7)))
    assert ogm_full_claim([*before, young], S, 14.0) == []  # not yet: at the next look


def test_a_claim_beside_a_primary_neighbours_own_ogms_is_seen_at_the_look_it_began() -> None:
    quiet = [look(10.0, (P2, P2, 9.9, 50)), look(12.0, (P2, P2, 11.9, 50))]
    [f] = ogm_full_claim([*quiet, look(14.0, (P2, P2, 13.9, 50), (C, P2, 13.5, 49))], S, 14.0)
    assert (f.subject, f.originator) == (P2, C)


# -- failed handshakes ----------------------------------------------------------------------------


def test_a_burst_of_failed_handshakes_is_flagged() -> None:
    addr = link_local_from_mac(R, "wlan0")
    hs = tuple(Handshake(float(i), f"[{addr}]:{40000 + i}", False, "bad_certificate") for i in range(30))
    [f] = handshake_burst([Observation(30.0, handshakes=hs)], S, 30.0)
    assert f.macs == (R,) and f.evidence["failures"] == 30 and f.evidence["reasons"] == {"bad_certificate": 30}


def test_an_expired_neighbour_retrying_and_unreachable_dials_are_not_a_burst() -> None:
    retry = tuple(Handshake(float(i * 5), "fd00::2", False, "certificate_expired") for i in range(12))
    dials = tuple(Handshake(float(i), "fd00::3", False, "unreachable", role="client") for i in range(60))
    assert handshake_burst([Observation(60.0, handshakes=retry + dials)], S, 60.0) == []


def test_a_fast_burst_on_this_node_is_flagged_before_the_windows_count() -> None:
    """Six refused handshakes made on this node within 5 s (a dial every 0.3 s) are a burst long
    before twenty; the evidence says which limit it passed."""
    addr = link_local_from_mac(R, "wlan0")
    hs = tuple(Handshake(10.0 + 0.3 * i, f"[{addr}]:{40000 + i}", False, "no_client_certificate") for i in range(6))
    [f] = handshake_burst([Observation(13.0, handshakes=hs)], S, 13.0)
    assert f.macs == (R,) and f.evidence["failures"] == 6 and f.evidence["densest"] == 6
    assert handshake_burst([Observation(13.0, handshakes=hs[:5])], S, 13.0) == []
    assert handshake_burst([Observation(13.0, handshakes=hs)], replace(S, handshake_burst_failures=0), 13.0) == []


def test_an_honest_redial_and_this_nodes_own_dials_are_no_fast_burst() -> None:
    """A neighbour with a bad SVID redialling with the peer subsystem's backoff (0.5 s doubling,
    jitter down to 0.8 of it) makes at most four in 5 s; this node's own dials failing at it
    (client) are not attempts on this node, however fast."""
    at, delay, redials = 0.0, 0.5, []
    while at < 60.0:
        redials.append(Handshake(at, "fd00::2", False, "certificate_expired"))
        at, delay = at + 0.8 * delay, min(2 * delay, 30.0)
    assert len(redials) < S.handshake_failures
    mine = tuple(Handshake(float(i) * 0.2, "fd00::2", False, "bad_certificate", role="client") for i in range(10))
    assert handshake_burst([Observation(60.0, handshakes=tuple(redials))], S, 60.0) == []
    assert handshake_burst([Observation(60.0, handshakes=mine)], S, 60.0) == []


def test_old_failures_leave_the_window() -> None:
    hs = tuple(Handshake(float(i), "fd00::9", False, "tls_error") for i in range(30))
    assert handshake_burst([Observation(30.0, handshakes=hs)], S, 200.0) == []


# -- all together ---------------------------------------------------------------------------------


def test_honest_churn_raises_nothing() -> None:
    """Links flap, an agent restarts, a node joins, traffic flows: no detector fires."""
    admitted = frozenset({A, B, C})
    obs = []
    for t in range(0, 121, 5):
        up = t % 30 < 20  # B flaps
        neigh = (heard(A, 10 * t, last=float(t)),) + ((heard(B, 10 * t, last=float(t)),) if up else ())
        joiner = (heard(mac(77), t, first=100.0, last=float(t)),) if t >= 100 else ()
        rts = routes(20) + ((Route(B, B, "wlan0", tq=240),) if up else ())
        obs.append(Observation(
            float(t), heard=neigh + joiner, admitted=admitted, routes=rts,
            links=(LinkMeasure("wlan0", A, delivery=0.95), LinkMeasure("wlan0", B, delivery=0.9)),
            gateways=(GatewayAd(A, A, 100_000, 20_000),),
            flows=(flow("fd00::2", "fd00::1", 7443, 50 * t, 0.0),),
            handshakes=(Handshake(float(t), link_local_from_mac(B, "wlan0"), True, spiffe_id="spiffe://m/b"),),
            ogms=stream(C, 100 + t, float(t), 5, A) + (stream(B, 9_000_000, float(t), 5, B) if t > 60 else ()),
        ))
    for t in range(0, 121, 5):
        assert detect([o for o in obs if o.at <= t], S, float(t)) == [], t


def test_fresh_reports_a_lasting_threat_once_per_hold() -> None:
    obs = [Observation(0.0, heard=(heard(R, 0),)), Observation(60.0, heard=(heard(R, 400),))]
    found = unadmitted_frames(obs, S, 60.0)
    first, seen = fresh(found, {}, 300.0, 60.0)
    again, seen = fresh(found, seen, 300.0, 120.0)
    later, _ = fresh(found, seen, 300.0, 400.0)
    assert len(first) == 1 and again == [] and len(later) == 1


# -- never raise ----------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(observations, max_size=4), times)
def test_detectors_never_raise_on_arbitrary_observations(obs: list[Observation], now: float) -> None:
    for f in detect(obs, S, now):
        assert f.signature in SIGNATURES.values() and 1 <= f.level <= 4


def test_thresholds_are_settings_of_the_guard_section() -> None:
    from x0tta.config.loader import parse_settings

    s = parse_settings("[guard.detect]\nwindow = 20\n", environ={"X0TTA_GUARD__DETECT__FLOOD_PPS": "500"})
    assert s.guard.detect.window == 20.0 and s.guard.detect.flood_pps == 500.0
    assert parse_settings("").guard.detect == DetectSettings()
