"""Hypothesis strategies for the guard's detector inputs: arbitrary observations, with MACs and
link-local addresses that sometimes mean something, shared by the detector and record tests."""

from __future__ import annotations

from hypothesis import strategies as st

from x0tta.guard.core import link_local_from_mac
from x0tta.guard.core.detect import Flow, GatewayAd, Handshake, Heard, LinkMeasure, Observation, Ogm, Route

A, B, C, R = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c", "02:00:00:00:00:66"

macs = st.one_of(st.sampled_from([A, B, C, R, "ff:ff:ff:ff:ff:ff"]), st.text(max_size=20))
times = st.floats(allow_nan=True, allow_infinity=True)
ints = st.integers(min_value=-(1 << 70), max_value=1 << 70)
opt_ints = st.none() | ints
texts = st.text(max_size=30)

observations = st.builds(
    Observation,
    at=times,
    heard=st.lists(st.builds(Heard, texts, macs, ints, times, st.none() | times, opt_ints), max_size=4).map(tuple),
    admitted=st.frozensets(macs, max_size=3),
    routes=st.lists(st.builds(Route, macs, macs, texts, opt_ints, opt_ints, st.booleans()), max_size=6).map(tuple),
    links=st.lists(st.builds(LinkMeasure, texts, macs, st.none() | times, st.none() | times), max_size=4).map(tuple),
    gateways=st.lists(st.builds(GatewayAd, macs, macs, opt_ints, opt_ints), max_size=4).map(tuple),
    flows=st.lists(st.builds(Flow, st.sampled_from(["ingress", "egress", ""]), texts, texts, ints, ints, ints,
                             times, ints, texts), max_size=6).map(tuple),
    handshakes=st.lists(st.builds(Handshake, times, st.one_of(texts, st.just(f"[{link_local_from_mac(A, 'w')}]:1")),
                                  st.booleans(), texts, texts, texts), max_size=6).map(tuple),
    ogms=st.lists(st.builds(Ogm, times, macs, ints, macs, texts), max_size=8).map(tuple),
    enforcing=st.booleans(),
    familiar=st.frozensets(macs, max_size=3),
)
