"""SPIFFE ID parsing per SPIFFE-ID.md, and the authorization policy; examples and properties."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from x0tta.common.spiffe_id import (
    MAX_ID_LENGTH,
    AuthorizationPolicy,
    SpiffeId,
    SpiffeIdError,
    parse_pattern,
)

TD_CHARS = string.ascii_lowercase + string.digits + ".-_"
SEG_CHARS = string.ascii_letters + string.digits + ".-_"

trust_domains = st.text(TD_CHARS, min_size=1, max_size=40)
segments = st.text(SEG_CHARS, min_size=1, max_size=16).filter(lambda s: s not in (".", ".."))
ids = st.builds(lambda td, segs: SpiffeId.from_parts(td, *segs), trust_domains, st.lists(segments, max_size=6))


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://mesh.x0tta",
        "spiffe://mesh.x0tta/node/r1",
        "spiffe://a_b-c.d/A-Z.a_z/0..9/...",
        "spiffe://x/" + "/".join(["s"] * 100),
    ],
)
def test_valid_ids_round_trip(text: str) -> None:
    assert str(SpiffeId.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("spiffe://", "missing_trust_domain"),
        ("spiffe:///path", "missing_trust_domain"),
        ("SPIFFE://mesh/x", "bad_scheme"),
        ("https://mesh/x", "bad_scheme"),
        ("spiffe:/mesh/x", "bad_scheme"),
        ("mesh/x", "bad_scheme"),
        ("spiffe://Mesh/x", "bad_trust_domain_char"),
        ("spiffe://me sh/x", "bad_trust_domain_char"),
        ("spiffe://mesh:443/x", "has_port"),
        ("spiffe://user@mesh/x", "has_userinfo"),
        ("spiffe://mesh/x?q=1", "has_query"),
        ("spiffe://mesh/x#frag", "has_fragment"),
        ("spiffe://mesh/", "trailing_slash"),
        ("spiffe://mesh/x/", "trailing_slash"),
        ("spiffe://mesh//x", "empty_segment"),
        ("spiffe://mesh/x//y", "empty_segment"),
        ("spiffe://mesh/./x", "dot_segment"),
        ("spiffe://mesh/x/..", "dot_segment"),
        ("spiffe://mesh/x%41", "percent_encoded"),
        ("spiffe://mesh/%2e%2e", "percent_encoded"),
        ("spiffe://mesh/x y", "bad_path_char"),
        ("spiffe://mesh/é", "bad_path_char"),
        ("spiffe://" + "a" * 256 + "/x", "trust_domain_too_long"),
        ("spiffe://mesh/" + "a" * MAX_ID_LENGTH, "too_long"),
    ],
)
def test_invalid_ids_have_their_reason(text: str, code: str) -> None:
    with pytest.raises(SpiffeIdError) as err:
        SpiffeId.parse(text)
    assert err.value.code == code


def test_non_string_is_a_decode_error_not_a_type_error() -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(b"spiffe://mesh/x")  # type: ignore[arg-type]


def test_length_limit_is_inclusive() -> None:
    prefix = "spiffe://t/"
    assert len(str(SpiffeId.parse(prefix + "a" * (MAX_ID_LENGTH - len(prefix))))) == MAX_ID_LENGTH


@given(ids)
def test_property_round_trip(sid: SpiffeId) -> None:
    assert SpiffeId.parse(str(sid)) == sid
    assert SpiffeId.from_parts(sid.trust_domain, *sid.segments) == sid


@given(st.text(max_size=80))
def test_property_decoder_promise(text: str) -> None:
    """Any string parses to an ID that prints back identically, or raises SpiffeIdError only."""
    try:
        sid = SpiffeId.parse(text)
    except SpiffeIdError:
        return
    assert str(sid) == text


@given(ids, st.sampled_from(["%", " ", "?", "#", "é", "\x00", ":", "@", "+"]), st.data())
def test_property_foreign_characters_in_a_segment_are_refused(sid: SpiffeId, bad: str, data: st.DataObject) -> None:
    if not sid.segments:
        sid = SpiffeId.from_parts(sid.trust_domain, "x")
    segs = list(sid.segments)
    i = data.draw(st.integers(0, len(segs) - 1))
    pos = data.draw(st.integers(0, len(segs[i])))
    segs[i] = segs[i][:pos] + bad + segs[i][pos:]
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(f"spiffe://{sid.trust_domain}/" + "/".join(segs))


@given(st.text(string.ascii_uppercase, min_size=1, max_size=3), trust_domains)
def test_property_uppercase_trust_domain_refused(upper: str, td: str) -> None:
    with pytest.raises(SpiffeIdError) as err:
        SpiffeId.parse(f"spiffe://{td}{upper}/x")
    assert err.value.code == "bad_trust_domain_char"


# -- authorization policy ------------------------------------------------------------------------
def test_policy_patterns_and_ids() -> None:
    p = AuthorizationPolicy.build(
        "mesh.x0tta",
        allowed_ids=("spiffe://mesh.x0tta/ops/cli",),
        allowed_patterns=("/node/*", "spiffe://other.org/gw/**"),
    )
    allowed = ["spiffe://mesh.x0tta/node/r1", "spiffe://mesh.x0tta/ops/cli", "spiffe://other.org/gw/a/b"]
    refused = [
        "spiffe://mesh.x0tta/node",
        "spiffe://mesh.x0tta/node/r1/extra",
        "spiffe://mesh.x0tta/ops/other",
        "spiffe://other.org/gw",
        "spiffe://other.org/node/r1",
        "spiffe://evil.mesh.x0tta/node/r1",
        "spiffe://mesh.x0tta",
    ]
    assert all(p.allows(SpiffeId.parse(s)) for s in allowed)
    assert not any(p.allows(SpiffeId.parse(s)) for s in refused)


def test_empty_policy_is_our_trust_domain_only() -> None:
    p = AuthorizationPolicy.build("mesh.x0tta")
    assert p.allows(SpiffeId.parse("spiffe://mesh.x0tta/anything/at/all"))
    assert not p.allows(SpiffeId.parse("spiffe://other/node/a"))


@pytest.mark.parametrize("bad", ["/node/**/x", "/node/%2a", "node/*", "spiffe://Bad/x", "/a//b"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(SpiffeIdError):
        parse_pattern(bad, "mesh.x0tta")


@given(ids, st.lists(st.booleans(), max_size=6))
def test_property_star_matches_exactly_one_segment(sid: SpiffeId, stars: list[bool]) -> None:
    segs = sid.segments
    pattern = tuple("*" if (i < len(stars) and stars[i]) else s for i, s in enumerate(segs))
    policy = AuthorizationPolicy(sid.trust_domain, frozenset(), ((sid.trust_domain, pattern),)) if segs else None
    if policy is None:
        return
    assert policy.allows(sid)
    assert not policy.allows(SpiffeId.from_parts(sid.trust_domain, *segs, "extra"))
    assert policy.allows(SpiffeId.from_parts(sid.trust_domain, *segs)) == policy.allows(sid)
