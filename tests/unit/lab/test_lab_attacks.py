"""The attack suite's frame builders and its scoring (x0tta/lab/core/attacks.py): each builder's
frames decoded back, and their header fields read at the byte offsets of batman-adv's
``batadv_packet.h`` independently of the decoder; the scoring of threat records against attack
start times."""

from __future__ import annotations

import random
import struct

import pytest

from x0tta.lab.core import attacks as a

SENDER = "02:00:00:00:00:02"
ORIG = "02:00:00:00:00:05"


def header(frame: bytes) -> dict:
    """The fields of a single BATMAN_IV OGM frame, read by offset (Ethernet 14 bytes, then the OGM)."""
    o = frame[14:]
    return {"dst": frame[0:6].hex(":"), "src": frame[6:12].hex(":"), "proto": frame[12:14].hex(),
            "type": o[0], "version": o[1], "ttl": o[2], "flags": o[3], "seqno": int.from_bytes(o[4:8], "big"),
            "orig": o[8:14].hex(":"), "prev": o[14:20].hex(":"), "tq": o[21],
            "tvlv_len": int.from_bytes(o[22:24], "big")}


def test_a_bare_iv_ogm_has_batman_adv_layout_and_is_padded_to_the_wire_minimum():
    frame = a.ethernet(SENDER, a.ogm_iv(ORIG, 0x01020304, tq=200, ttl=7))
    assert len(frame) == 60  # 14 + 24, padded
    assert header(frame) == {"dst": "ff:ff:ff:ff:ff:ff", "src": SENDER, "proto": "4305", "type": 0, "version": 15,
                             "ttl": 7, "flags": 0, "seqno": 0x01020304, "orig": ORIG, "prev": ORIG, "tq": 200,
                             "tvlv_len": 0}
    dst, src, [ogm] = a.decode_frame(frame)  # the padding after the OGM is not another OGM
    assert (dst, src, ogm.orig, ogm.seqno, ogm.tq, ogm.ttl, ogm.tvlvs) == (a.BROADCAST, SENDER, ORIG, 0x01020304,
                                                                          200, 7, b"")


def test_ogm2_and_aggregates_decode_in_order():
    v = a.ogm2(ORIG, 7, throughput=123_456)
    assert len(v) == 20 and v[0] == 4 and struct.unpack("!I", v[16:20])[0] == 123_456
    [ogm] = a.decode_ogms(v)
    assert (ogm.packet_type, ogm.seqno, ogm.throughput, ogm.tq) == (4, 7, 123_456, None)
    agg = a.ogm_iv(ORIG, 1, tvlvs=a.tvlv(9, 1, b"xyz")) + a.ogm_iv(SENDER, 2)
    assert [(o.orig, o.seqno, o.tvlvs) for o in a.decode_ogms(agg)] == [(ORIG, 1, b"\x09\x01\x00\x03xyz"),
                                                                         (SENDER, 2, b"")]


@pytest.mark.parametrize("bad", [
    b"", bytes([0x40, 15]) + bytes(30), bytes([0, 14]) + bytes(22), a.ogm_iv(ORIG, 1)[:20],
    a.ogm_iv(ORIG, 1)[:22] + b"\x00\x09", a.ogm_iv(ORIG, 1) + a.ogm2(ORIG, 2, throughput=1),
])
def test_what_is_not_an_ogm_raises_the_decode_error(bad):
    with pytest.raises(a.AttackDecodeError):
        a.decode_ogms(bad)


def test_gateway_tvlv_in_units_of_100_kbit():
    t = a.gateway_tvlv(40_000_050, 1_000)
    assert t == bytes([1, 1, 0, 8]) + struct.pack("!II", 400_000, 10)
    [ogm] = a.decode_ogms(a.ogm_iv(ORIG, 5, tvlvs=t))
    assert a.gateway_of(ogm) == (40_000_000, 1_000)
    assert a.gateway_of(a.decode_ogms(a.ogm_iv(ORIG, 5))[0]) is None


def test_echo_marks_a_direct_link_and_keeps_originator_and_seqno():
    [heard] = a.decode_ogms(a.ogm_iv(ORIG, 99, tq=255, ttl=50))
    back = a.decode_ogms(a.echo(heard))[0]
    assert (back.orig, back.seqno, back.ttl, back.flags & a.BATADV_DIRECTLINK) == (ORIG, 99, 49, a.BATADV_DIRECTLINK)


def test_random_macs_are_locally_administered_unicast_and_seeded():
    macs = [a.random_mac(random.Random(s)) for s in range(200)]
    assert all(int(m[:2], 16) & 0x03 == 0x02 for m in macs)
    assert a.random_mac(random.Random(5)) == a.random_mac(random.Random(5)) != a.random_mac(random.Random(6))


def test_rogue_node_announces_itself_with_consecutive_seqnos():
    atk = a.rogue_node(random.Random(1), seconds=5, interval=1.0)
    hs = [header(f) for f in atk.frames]
    assert len(hs) == 5 and atk.rate == 1.0 and atk.about == (atk.sender,)
    assert all(h["src"] == h["orig"] == atk.sender for h in hs)
    assert [h["seqno"] for h in hs] == [(hs[0]["seqno"] + i) % a.U32 for i in range(5)]


def test_originator_flood_brings_distinct_made_up_originators_through_one_sender():
    atk = a.originator_flood(random.Random(2), SENDER, originators=50, rounds=2)
    hs = [header(f) for f in atk.frames]
    assert len(hs) == 100 and {h["src"] for h in hs} == {SENDER}
    origs = {h["orig"] for h in hs}
    assert len(origs) == 50 == atk.details["originators"] and SENDER not in origs
    first = {h["orig"]: h["seqno"] for h in hs[:50]}
    assert all(h["seqno"] == (first[h["orig"]] + 1) % a.U32 for h in hs[50:])  # the second round goes on
    assert a.originator_flood(random.Random(2), SENDER, originators=50).frames == atk.frames  # seeded


def test_seqno_takeover_jumps_far_ahead_of_the_honest_stream_and_goes_on():
    atk = a.seqno_takeover(random.Random(3), SENDER, ORIG, 5000, count=4)
    hs = [header(f) for f in atk.frames]
    assert {(h["src"], h["orig"], h["tq"]) for h in hs} == {(SENDER, ORIG, 255)}
    jump = (hs[0]["seqno"] - 5000) % a.U32
    assert 1000 <= jump < 60_000  # far beyond the guard's window, within batman-adv's expected range
    assert [h["seqno"] for h in hs] == [(hs[0]["seqno"] + i) % a.U32 for i in range(4)]
    wrapped = a.seqno_takeover(random.Random(3), SENDER, ORIG, a.U32 - 10, count=1)
    assert header(wrapped.frames[0])["seqno"] == (a.U32 - 10 + jump) % a.U32  # across the wrap


def test_inflated_tq_claims_the_best_quality_for_a_far_originator_with_its_current_seqnos():
    atk = a.inflated_tq(random.Random(4), SENDER, ORIG, 70, count=3)
    hs = [header(f) for f in atk.frames]
    assert all((h["tq"], h["orig"], h["src"], h["prev"]) == (255, ORIG, SENDER, SENDER) for h in hs)
    assert 71 <= hs[0]["seqno"] <= 72 and hs[2]["seqno"] == hs[0]["seqno"] + 2


def test_gateway_hijack_announces_implausible_bandwidth_from_a_made_up_originator():
    atk = a.gateway_hijack(random.Random(5), SENDER, count=2)
    for f in atk.frames:
        _, src, [ogm] = a.decode_frame(f)
        assert src == SENDER and ogm.orig == atk.details["gateway"] != SENDER
        assert a.gateway_of(ogm) == (40_000_000, 40_000_000)
        assert header(f)["tvlv_len"] == 12


def eve(detector: str, *, subject: str = "", macs=(), originator=None, severity: int = 1, evidence=None) -> dict:
    return {"event_type": "alert", "alert": {"severity": severity},
            "batman": {"detector": detector, "subject": subject, "macs": list(macs), "originator": originator,
                       "evidence": evidence or {}}}


def test_score_takes_the_first_matching_record_after_the_start():
    recs = [
        ("n3", 9.0, eve("seqno_takeover", subject=ORIG, originator=ORIG)),  # before the attack: not its
        ("n3", 12.5, eve("originator_flood", subject=SENDER, macs=[SENDER])),  # another detector
        ("n4", 13.0, eve("seqno_takeover", subject="02:00:00:00:00:09", originator="02:00:00:00:00:09")),  # other orig
        ("n3", 14.2, eve("seqno_takeover", subject=ORIG, originator=ORIG, macs=[SENDER])),
        ("n1", 13.9, eve("seqno_takeover", subject=ORIG, originator=ORIG, severity=2)),
    ]
    out = a.score("seqno_takeover", 7, 10.0, recs, about=(ORIG,))
    assert out == a.Outcome("seqno_takeover", 7, True, 3.9, 2, "n1")
    assert a.score("seqno_takeover", 7, 10.0, recs, about=(ORIG,), horizon=3.0).detected is False
    assert a.score("gateway_hijack", 7, 10.0, recs).detected is False


def test_a_handshake_burst_matches_by_the_address_in_its_evidence():
    rec = eve("handshake_burst", subject="fe80::ff:fe00:2", severity=2, evidence={"address": "fe80::ff:fe00:2"})
    assert a.matches(rec, "handshake_burst", ["FE80::FF:FE00:2"]) and not a.matches(rec, "handshake_burst", ["x"])
    assert not a.matches({"batman": "nonsense"}, "handshake_burst", []) and not a.matches({}, "rogue_node", [])


def test_summary_counts_detections_within_the_goal_and_renders_a_table():
    outs = [a.Outcome("seqno_takeover", s, True, t) for s, t in enumerate([1.0, 4.0, 6.0])]
    outs += [a.Outcome("seqno_takeover", 3, False), a.Outcome("rogue_node", 0, True, 31.0)]
    rogue, take = a.summarize(outs)
    assert (rogue.kind, take.kind) == ("rogue_node", "seqno_takeover")  # the suite's order
    with pytest.raises(ValueError):
        a.seqno_takeover(random.Random(1), SENDER, ORIG, 0, jump_min=10, jump_max=1 << 32)
    assert (take.runs, take.detected, take.within, take.median_s, take.max_s) == (4, 3, 2, 4.0, 6.0)
    text = a.table([rogue, take])
    assert "| seqno_takeover | 4 | 3 (75%) | 2 | 4.0 | 6.0 | 0 | 0 |" in text and text.startswith("| attack |")


def test_a_run_is_scored_attack_by_attack_each_until_the_next_one_started():
    t0 = 1_000_000.0
    attacks = [
        {"kind": "originator_flood", "first_wall": t0 + 100, "about": [SENDER]},
        {"kind": "seqno_takeover", "error": "AssertionError: no OGM heard"},
        {"kind": "gateway_hijack", "first_wall": t0 + 130, "about": ["02:00:00:00:0e:01", SENDER]},
        {"kind": "handshake_burst", "first_wall": t0 + 160, "about": [SENDER]},
    ]
    recs = [
        ("n3", 104.5, eve("originator_flood", subject=SENDER, macs=[SENDER])),
        ("n3", 131.0, eve("originator_flood", subject=SENDER, macs=[SENDER])),  # the flood's, late: not the gateway's
        ("n3", 163.0, eve("gateway_bandwidth", subject="02:00:00:00:0e:01", originator="02:00:00:00:0e:01")),
    ]
    quarantines = [("n3", 106.0, SENDER), ("n3", 170.0, SENDER)]
    flood, take, gw, burst = a.run_outcomes(3, attacks, t0, recs, quarantines)
    assert (flood.detected, flood.seconds, flood.node, flood.quarantine_s) == (True, 4.5, "n3", 6.0)
    assert take.error and not take.detected
    assert gw.detected is False and gw.quarantine_s is None  # its record came after the burst had started
    assert (burst.detected, burst.quarantine_s) == (False, 10.0)
    f, t, _, _ = a.summarize([flood, take, gw, burst])
    assert (t.kind, t.runs, t.errors, f.quarantined) == ("seqno_takeover", 0, 1, 1)


def test_collateral_is_what_the_attacks_made_the_detectors_say_about_others():
    t0 = 500.0
    attacks = [{"kind": "originator_flood", "first_wall": t0 + 10, "about": [SENDER]}, {"kind": "x", "error": "e"}]
    honest = "02:00:00:00:00:03"
    recs = [
        ("n4", 5.0, eve("originator_flood", subject=honest, macs=[honest])),  # before the attacks
        ("n3", 12.0, eve("originator_flood", subject=SENDER, macs=[SENDER])),  # the attack's own
        ("n4", 13.0, eve("originator_flood", subject=honest, macs=[honest])),  # the flood's second hop
        ("n4", 14.0, eve("unadmitted_frames", subject=honest, severity=3)),  # low: not counted
    ]
    assert a.collateral(recs, attacks, t0) == [
        {"node": "n4", "t": 13.0, "detector": "originator_flood", "subject": honest}]
    assert a.collateral(recs, [{"kind": "x", "error": "e"}], t0) == []


def _load(path: str, name: str):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[3] / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_scenario_is_a_valid_lab_scenario_calling_checks_that_exist():
    """The bench cannot run here; what it hands the lab can be checked: its steps validate against
    the ring with its overrides, and every check it calls exists with the arguments it passes."""
    import inspect
    import tomllib

    from x0tta.common.tables import merge_tables
    from x0tta.lab.core.topology import topology_from_data

    bench = _load("tests/bench/bench_attacks.py", "bench_attacks")
    checks = _load("tests/lab/attack_checks.py", "attack_checks")
    for enforce in (True, False):
        data = tomllib.loads(bench.RING.read_text())
        data["steps"] = bench.scenario(4, list(a.KINDS), enforce)
        topo = topology_from_data(merge_tables(data, bench.overrides(enforce)))
        assert topo.agents and [s.label for s in topo.steps if s.label in a.KINDS] == list(a.KINDS)
        for step in topo.steps:
            if step.do != "check":
                continue
            fn = getattr(checks, step.call.rpartition(":")[2])
            inspect.signature(fn).bind(object(), "n2", **step.args)  # (lab, node, **args)
    assert bench.timeout_s(list(a.KINDS), True) > 6 * 60


def test_outcomes_follow_the_order_the_attacks_ran_in_not_the_order_they_are_listed_in():
    """--rescore lists a saved run's attacks in today's order of the kinds, which may not be the
    order they ran in."""
    flood = {"kind": "originator_flood", "first_wall": 1100.0, "about": ["02:00:00:00:00:02"]}
    inflated = {"kind": "inflated_tq", "first_wall": 1200.0, "about": ["02:00:00:00:00:02"]}
    rec = {"alert": {"severity": 1}, "batman": {"detector": "inflated_link_metric", "subject": "02:00:00:00:00:02"}}
    got = a.run_outcomes(1, [inflated, flood], 1000.0, [("n3", 205.0, rec)])
    assert got[0].kind == "inflated_tq" and got[0].detected, got

