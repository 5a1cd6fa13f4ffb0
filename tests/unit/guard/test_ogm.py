"""The guard's OGM map decoded: the kernel's streams of an originator's sequence numbers become the
``Ogm`` records ``seqno_takeover`` judges, from one read."""

from __future__ import annotations

from dataclasses import replace

import pytest

from x0tta.config.guard import DetectSettings
from x0tta.guard.core.detect import Observation, ogm_full_claim, seqno_takeover
from x0tta.guard.core.ogm import (
    OGM_STREAM,
    OGM_VALUE_SIZE,
    OGM_VALUE_TAIL,
    OgmClaim,
    OgmDecodeError,
    OgmEntry,
    OgmStream,
    decode_ogm_entries,
    decode_ogm_key,
    decode_ogm_value,
    encode_ogm_entry,
    ogm_claims,
    ogm_records,
)

ORIG, HONEST, ROGUE = "02:00:00:00:00:0c", "02:00:00:00:00:0a", "02:00:00:00:00:66"
S = 1_000_000_000


def key(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + b"\0\0"


def stream(first: float, last: float, frames: int, first_seqno: int, seqno: int, neigh: str,
           ifindex: int = 7) -> bytes:
    return OGM_STREAM.pack(int(first * S), int(last * S), frames, first_seqno, seqno, ifindex,
                           bytes.fromhex(neigh.replace(":", "")))


EMPTY = bytes(OGM_STREAM.size)


NO_CLAIM = (0, 0, bytes(6), 0, 0)


def value(a: bytes, b: bytes = EMPTY, jumps: int = 0, ptype: int = 0,
          claim: tuple[int, int, bytes, int, int] = NO_CLAIM) -> bytes:
    return a + b + OGM_VALUE_TAIL.pack(jumps, ptype, *claim)


def test_layout_matches_the_c_structs() -> None:
    assert (OGM_STREAM.size, OGM_VALUE_SIZE) == (48, 136)


def test_an_entry_decodes_to_its_streams_and_leaves_empty_slots_out() -> None:
    assert decode_ogm_key(key(ORIG)) == ORIG
    e = decode_ogm_value(ORIG, value(stream(1.0, 9.0, 9, 100, 108, HONEST)))
    assert e == OgmEntry(ORIG, (OgmStream(S, 9 * S, 9, 100, 108, 7, HONEST),), 0, "BATMAN_IV")
    two = decode_ogm_value(ORIG, value(stream(1.0, 9.0, 9, 100, 108, HONEST), stream(5.0, 8.0, 4, 9000, 9003, ROGUE),
                                       jumps=1, ptype=4))
    assert [s.neigh for s in two.streams] == [HONEST, ROGUE] and (two.jumps, two.protocol) == (1, "BATMAN_V")


@pytest.mark.parametrize(
    ("k", "v", "why"),
    [
        (b"\x02" * 7, None, "7 bytes"),
        (b"\x02" * 6 + b"\x01\x00", None, "padding"),
        (None, b"\0" * 111, "111 bytes"),
        (None, value(stream(1.0, 2.0, 2, 1, 2, HONEST), ptype=1), "packet type 0x01"),
        (None, value(EMPTY), "no stream"),
        (None, value(stream(1.0, 2.0, 2, 1, 2, HONEST), claim=(S, 7, bytes(6), 247, 50)), "TQ 247"),
    ],
)
def test_malformed_entries_raise_the_decode_error(k, v, why) -> None:
    with pytest.raises(OgmDecodeError, match=why):
        if k is not None:
            decode_ogm_key(k)
        else:
            decode_ogm_value(ORIG, v)


def test_encoding_is_the_inverse_of_decoding() -> None:
    e = OgmEntry(ORIG, (OgmStream(S, 9 * S, 9, 100, 108, 7, HONEST), OgmStream(2, 3, 2, 5, 6, 1, ROGUE)), 3, "BATMAN_V")
    k, v = encode_ogm_entry(e)
    assert decode_ogm_value(decode_ogm_key(k), v) == e
    claimed = replace(e, claim=OgmClaim(9 * S, 7, ROGUE, 255, 49))
    assert decode_ogm_value(ORIG, encode_ogm_entry(claimed)[1]) == claimed
    assert decode_ogm_entries([encode_ogm_entry(replace(e, streams=e.streams[:1]))])[0][0].streams == e.streams[:1]


def test_a_dump_counts_what_does_not_decode() -> None:
    good = (key(ORIG), value(stream(1.0, 2.0, 2, 1, 2, HONEST)))
    entries, bad = decode_ogm_entries([good, (b"x", b"y"), (key(ROGUE), b"\0" * OGM_VALUE_SIZE)])
    assert [e.orig for e in entries] == [ORIG] and bad == 2


def test_records_give_each_stream_its_first_and_newest_ogm_within_the_window() -> None:
    e = decode_ogm_value(ORIG, value(stream(1.0, 9.0, 9, 100, 108, HONEST), stream(5.0, 5.0, 1, 9000, 9000, ROGUE)))
    recs = ogm_records([e], {7: "wlan0"}, since=0.0)
    assert [(r.at, r.seqno, r.mac, r.interface) for r in recs] == [
        (1.0, 100, HONEST, "wlan0"), (5.0, 9000, ROGUE, "wlan0"), (9.0, 108, HONEST, "wlan0")]
    # the honest stream began before the window: only its newest OGM is in it; unknown index: its number
    assert [(r.at, r.seqno) for r in ogm_records([e], {}, since=2.0)] == [(5.0, 9000), (9.0, 108)]
    assert {r.interface for r in ogm_records([e], {}, since=0.0)} == {"7"}


def test_one_read_of_a_jumped_stream_beside_the_old_one_is_a_takeover() -> None:
    # the kernel split them: the rogue's stream began (t=5) and went on (t=8) while the honest one
    # did too (t=9); one look at the map says so
    e = decode_ogm_value(ORIG, value(stream(1.0, 9.0, 9, 100, 108, HONEST), stream(5.0, 8.0, 4, 9000, 9003, ROGUE),
                                     jumps=1))
    obs = Observation(10.0, ogms=tuple(ogm_records([e], {7: "wlan0"}, 0.0)))
    [f] = seqno_takeover([obs], DetectSettings(), 10.0)
    assert (f.originator, f.macs, f.interface) == (ORIG, (ROGUE,), "wlan0")
    assert (f.evidence["old_seqno"], f.evidence["new_seqno"], f.evidence["jump"]) == (108, 9003, 9000 - 108)


def test_a_restart_read_from_the_map_is_not_a_takeover() -> None:
    # the old stream stopped (t=4) before the new one began (t=6): an originator that restarted
    e = decode_ogm_value(ORIG, value(stream(1.0, 4.0, 4, 100, 103, HONEST), stream(6.0, 9.0, 4, 77, 80, HONEST),
                                     jumps=1))
    obs = Observation(10.0, ogms=tuple(ogm_records([e], {}, 0.0)))
    assert seqno_takeover([obs], DetectSettings(), 10.0) == []


def test_claims_are_each_entrys_last_full_quality_ogm_by_interface_name() -> None:
    """The claim part of an entry: its last OGM at TQ 248 or more, from which neighbour, with which
    TTL; ogm_full_claim reads them (a far originator's at 255 from a neighbour whose own OGMs come
    with its primary's TTL)."""
    neigh = bytes.fromhex(HONEST.replace(":", ""))
    honest = decode_ogm_value(HONEST, value(stream(1.0, 9.0, 9, 100, 108, HONEST), claim=(9 * S, 7, neigh, 255, 50)))
    far = decode_ogm_value(ORIG, value(stream(1.0, 9.5, 9, 100, 108, HONEST),
                                       claim=(9 * S + S // 2, 7, neigh, 255, 49)))
    quiet = decode_ogm_value(ROGUE, value(stream(1.0, 2.0, 2, 1, 2, HONEST)))
    claims = ogm_claims([far, quiet, honest], {7: "wlan0"})
    assert [(c.at, c.orig, c.mac, c.interface, c.tq, c.ttl) for c in claims] == [
        (9.0, HONEST, HONEST, "wlan0", 255, 50), (9.5, ORIG, HONEST, "wlan0", 255, 49)]
    obs = Observation(10.0, claims=tuple(claims), hop_penalty=15)
    [f] = ogm_full_claim([obs], DetectSettings(), 10.0)
    assert (f.subject, f.originator, f.interface) == (HONEST, ORIG, "wlan0")
