"""Frames: every frame survives encode -> decode, split at any point; bad bytes raise FrameError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from x0tta.common.errors import DecodeError
from x0tta.peer.core.errors import FrameError, LocalProtocolError
from x0tta.peer.core.frames import (
    HEADER,
    FrameDecoder,
    GoAway,
    Hello,
    Ping,
    Pong,
    Request,
    Response,
    encode,
)

tokens = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
hexs = st.text("0123456789abcdef", min_size=1, max_size=1)
traceparents = st.builds(
    lambda t, s, f: f"00-{t}-{s}-{f}",
    st.from_regex(r"[0-9a-f]{31}[1-9a-f]", fullmatch=True),
    st.from_regex(r"[1-9a-f][0-9a-f]{15}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{2}", fullmatch=True),
)
u32 = st.integers(0, 2**32 - 1)
frames = st.one_of(
    st.builds(
        Hello,
        node_id=st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=60),
        min_version=st.just(1),
        max_version=st.integers(1, 5),
        max_frame=st.integers(64, 1 << 20),
        max_in_flight=st.integers(1, 0xFFFF),
        capabilities=st.lists(tokens, max_size=5, unique=True).map(tuple),
    ),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**64 - 1)),
    st.builds(Request, u32, tokens, st.binary(max_size=300), st.none() | traceparents),
    st.builds(Response, u32, st.integers(0, 3), st.binary(max_size=300), st.none() | traceparents),
    st.builds(GoAway, st.text(max_size=50)),
)


@given(st.lists(frames, min_size=1, max_size=8), st.data())
def test_roundtrip_any_split(items, data):
    wire = b"".join(encode(f) for f in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    dec = FrameDecoder(1 << 20)
    out = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        dec.feed(wire[prev:cut])
        prev = cut
        while (f := dec.next_frame()) is not None:
            out.append(f)
    assert out == items
    assert dec.buffered == 0


def test_oversized_length_refused_before_buffering():
    dec = FrameDecoder(1024)
    dec.feed(HEADER.pack(1025, 4))
    with pytest.raises(FrameError) as exc:
        dec.next_frame()
    assert exc.value.code == "bad_length"
    assert isinstance(exc.value, DecodeError)
    with pytest.raises(FrameError):  # the decoder stays dead
        dec.feed(b"x")


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (HEADER.pack(0, 1), "bad_length"),
        (HEADER.pack(1, 99), "unknown_type"),
        (HEADER.pack(10, 2) + b"\0" * 9, "trailing_bytes"),
        (HEADER.pack(5, 2) + b"\0" * 4, "truncated"),
        (HEADER.pack(7, 5) + b"\0\0\0\1\7\0", "bad_status"),
        (HEADER.pack(7, 4) + b"\0\0\0\1\1A\0", "bad_method"),
        (HEADER.pack(10, 4) + b"\0\0\0\1\1a\2xy", "bad_traceparent"),
        (HEADER.pack(4, 6) + b"\0\1\xff", "bad_utf8"),
    ],
)
def test_bad_frames(wire, code):
    dec = FrameDecoder(1024)
    dec.feed(wire)
    with pytest.raises(FrameError) as exc:
        dec.next_frame()
    assert exc.value.code == code


def test_all_zero_trace_id_is_invalid():
    with pytest.raises(LocalProtocolError):
        encode(Request(1, "x", b"", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"))


def test_frame_above_peer_maximum_is_a_local_error():
    with pytest.raises(LocalProtocolError) as exc:
        encode(Request(1, "echo", b"x" * 100), max_frame=64)
    assert exc.value.code == "frame_too_large"
