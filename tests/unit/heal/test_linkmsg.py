"""rtnetlink link notifications: decoded into the heal loop's link table, and nothing else raised."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.common.errors import DecodeError
from x0tta.heal.core.linkmsg import (
    IFF_RUNNING,
    IFF_UP,
    RTM_DELLINK,
    RTM_NEWLINK,
    LinkMessageError,
    LinkState,
    apply,
    decode,
)


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def link_msg(mtype: int, index: int, name: str, flags: int, master: int | None = None) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + attr(3, name.encode() + b"\0")
    if master is not None:
        body += attr(10, struct.pack("=I", master))
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def test_new_and_deleted_links_update_the_table():
    data = link_msg(RTM_NEWLINK, 3, "eth0", IFF_UP | IFF_RUNNING, master=7) + link_msg(RTM_NEWLINK, 7, "bat0", IFF_UP)
    table = apply({}, decode(data))
    assert table == {"eth0": LinkState("eth0", 3, True, True, 7), "bat0": LinkState("bat0", 7, True, False, None)}
    # detached and carrier lost: a full RTM_NEWLINK without IFLA_MASTER
    table = apply(table, decode(link_msg(RTM_NEWLINK, 3, "eth0", IFF_UP)))
    assert table["eth0"] == LinkState("eth0", 3, True, False, None)
    # renamed: found by its index
    table = apply(table, decode(link_msg(RTM_NEWLINK, 3, "mesh0", IFF_UP)))
    assert "eth0" not in table and table["mesh0"].index == 3
    table = apply(table, decode(link_msg(RTM_DELLINK, 3, "mesh0", 0)))
    assert set(table) == {"bat0"}


def test_other_messages_are_skipped_and_bad_ones_raise():
    other = struct.pack("=IHHII", 20, 24, 0, 0, 0) + b"\0" * 4  # RTM_NEWROUTE
    assert decode(other) == []
    with pytest.raises(LinkMessageError, match="without a name"):
        decode(struct.pack("=IHHII", 32, RTM_NEWLINK, 0, 0, 0) + struct.pack("=BxHiII", 0, 1, 3, 0, 0))
    with pytest.raises(LinkMessageError, match="too short"):
        decode(struct.pack("=IHHII", 20, RTM_NEWLINK, 0, 0, 0) + b"\0" * 4)
    with pytest.raises(DecodeError):
        decode(link_msg(RTM_NEWLINK, 3, "eth0", 0)[:-3])
    with pytest.raises(LinkMessageError, match="overrun"):
        decode(struct.pack("=IHHII", 16, 4, 0, 0, 0))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 40))
def test_decoder_raises_only_decode_errors(tail, cut):
    base = link_msg(RTM_NEWLINK, 3, "eth0", IFF_UP, master=7)
    for blob in (tail, base[:cut] + tail, base + tail):
        try:
            decode(blob)
        except DecodeError:
            pass
