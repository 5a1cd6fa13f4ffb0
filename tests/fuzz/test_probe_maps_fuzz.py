"""Fuzz the probes' map decoders: any bytes either decode or raise ProbeDecodeError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.guard.core import BadMac, parse_mac
from x0tta.probes import core

pytestmark = pytest.mark.fuzz

DECODERS = [
    core.decode_flow_key,
    core.decode_flow_value,
    core.decode_neighbor_key,
    core.decode_neighbor_value,
    core.neighbor_last_rx,
]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(DECODERS), st.one_of(st.binary(max_size=80), st.binary(min_size=44, max_size=44)))
def test_decoders_raise_only_decode_error(decoder, data):
    try:
        decoder(data)
    except core.ProbeDecodeError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80), st.integers(min_value=1, max_value=8))
def test_percpu_and_admitted(data, ncpus):
    for call in (lambda: core.decode_percpu_u64(data, ncpus), lambda: core.decode_admitted(data[:6], data[6:]),
                 lambda: core.decode_flow_value(data, ncpus)):
        try:
            call()
        except core.ProbeDecodeError:
            pass


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=20), st.binary(max_size=8)))
def test_parse_mac_raises_only_bad_mac(text):
    try:
        assert len(parse_mac(text)) == 6
    except BadMac:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=2**40),
       st.one_of(st.text(max_size=24), st.binary(min_size=6, max_size=6)))
def test_single_lookup_key_raises_only_decode_error_and_round_trips(ifindex, mac):
    """The heal prober's single-key lookup: any (index, text) gives the struct's key or a
    ProbeDecodeError; a real (index, MAC) comes back as itself from the dump decoder."""
    text = mac.hex(":") if isinstance(mac, bytes) else mac
    try:
        key = core.neighbor_lookup_key(ifindex, text)
    except core.ProbeDecodeError:
        return
    assert core.decode_neighbor_key(key) == core.NeighborKey(ifindex, bytes.fromhex(text.replace(":", "")).hex(":"))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=8, max_size=8))
def test_last_rx_of_a_value_is_its_last_rx_ns_in_seconds(fields):
    value = core.NEIGH_VALUE.pack(*fields)
    stats = core.decode_neighbor_value(value)
    assert core.neighbor_last_rx(value) == (stats.last_rx_ns / 1e9 if stats.last_rx_ns else None)
