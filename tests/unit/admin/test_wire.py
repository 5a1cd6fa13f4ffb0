"""The admin API's wire format: both directions round-trip, and any bytes give a typed error or a value."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from x0tta.admin import core as wire

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@given(st.text(min_size=1, max_size=20), st.dictionaries(st.text(max_size=5), JSON, max_size=3))
def test_a_request_round_trips(cmd: str, args: dict) -> None:
    line = wire.encode_request(cmd, args)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the text holds
    assert wire.decode_request(line) == wire.Request(cmd, args)


@given(JSON)
def test_a_reply_round_trips(result: object) -> None:
    assert wire.decode_reply(wire.encode_reply(wire.ok(result))) == result


def test_an_error_reply_raises_with_the_agents_text() -> None:
    with pytest.raises(wire.AdminCallFailed, match="no such interface"):
        wire.decode_reply(wire.encode_reply(wire.error("no such interface")))


@pytest.mark.parametrize(
    ("line", "says"),
    [(b"not json\n", "not JSON"), (b"\xff\xfe\n", "not JSON"), (b"[1]\n", 'string "cmd"'),
     (b'{"cmd": 3}\n', 'string "cmd"'), (b'{"cmd": "x", "args": [1]}\n', '"args" must be an object')],
)
def test_a_bad_request_says_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(wire.AdminRequestError, match=says):
        wire.decode_request(line)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_the_typed_error(data: bytes) -> None:
    try:
        wire.decode_request(data)
    except wire.AdminRequestError:
        pass
    try:
        wire.decode_reply(data)
    except wire.AdminCallFailed:
        pass


def test_values_json_cannot_carry_are_sent_as_text() -> None:
    from pathlib import Path

    assert wire.decode_reply(wire.encode_reply(wire.ok({"path": Path("/run/x")}))) == {"path": "/run/x"}
