"""Fuzz the mesh alert decoder: any bytes either decode or raise AlertDecodeError, nothing else;
what decodes encodes back to the same bytes; a flood of alerts keeps the board bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.heal.core import alert as al
from x0tta.heal.core.linkkeys import key_id

pytestmark = pytest.mark.fuzz

KEY = b"k" * 32
VALID = al.encode(al.Alert("02:ba:01:01:00:00", 7, "silent_loss", 3000))
VALID_KEYED = al.encode(al.Alert("02:ba:01:01:00:00", 7, "link_down", 3000), KEY)
KID = key_id(KEY)
VALID_SESSION = al.encode(al.Alert("02:ba:01:01:00:00", 8, "link_down", 3000), link_keys=[(KID, KEY)])
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # with the incident's trace context
VALID_TRACED = al.encode(al.Alert("02:ba:01:01:00:00", 9, "link_down", 3000, TP), KEY)
VALID_SESSION_TRACED = al.encode(al.Alert("02:ba:01:01:00:00", 9, "link_down", 3000, TP), link_keys=[(KID, KEY)])


def _mutations(base: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)).map(
        lambda p: base[:p[0]] + bytes([p[1]]) + base[p[0] + 1:])


@settings(max_examples=20000, deadline=None)
@given(st.one_of(st.binary(max_size=64), _mutations(VALID), _mutations(VALID_KEYED), _mutations(VALID_TRACED)),
       st.booleans())
def test_decode_raises_only_its_error_and_round_trips(data, keyed):
    key = KEY if keyed else None
    try:
        a = al.decode(data, key)
    except al.AlertDecodeError:
        return
    # (a receiver without a key takes a tagged alert too)
    if data[4] == al.VERSION and bool(data[5] & al.FLAG_AUTH) == keyed:
        assert al.encode(a, key) == data


@settings(max_examples=20000, deadline=None)
@given(st.one_of(st.binary(max_size=80), _mutations(VALID_SESSION), _mutations(VALID),
                 _mutations(VALID_SESSION_TRACED)))
def test_session_decode_raises_only_its_error_and_only_the_intact_alert_verifies(data):
    try:
        a = al.decode(data, lookup={KID: KEY}.get)
    except al.AlertDecodeError as exc:
        assert exc.reason in ("malformed", "unauthenticated", "not_for_us", "bad_tag")
        return
    assert al.encode(a, link_keys=[(KID, KEY)]) == data  # any change that still verifies is no change


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 2**32 - 1), st.sampled_from(sorted(al.KIND_CODES)),
                          st.integers(0, 65535), st.floats(0, 100)), max_size=400))
def test_board_stays_bounded_and_holds_are_capped(events):
    board = al.Board(hold_max=10.0, max_origins=16)
    now = 0.0
    for origin, seq, kind, hold, dt in events:
        now += dt
        board.hear(al.Alert(f"02:00:00:00:{origin // 256:02x}:{origin % 256:02x}", seq, kind, hold), now)
        assert len(board.seqs) <= 16 and len(board.heard) <= 16
        assert all(h.until <= now + 10.0 for h in board.heard.values())
