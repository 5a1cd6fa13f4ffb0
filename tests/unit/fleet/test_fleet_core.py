"""The outbox policy and the reconnection schedule of the fleet plane (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from x0tta.fleet.core.backoff import backoff_delay
from x0tta.fleet.core.outbox import NEW, Candidate, Priority, delivered, evictions

INFO, IMPORTANT = int(Priority.INFO), int(Priority.IMPORTANT)


def test_informational_messages_go_first_oldest_first():
    queued = [Candidate(1, IMPORTANT), Candidate(2, INFO), Candidate(3, IMPORTANT), Candidate(4, INFO)]
    assert evictions([*queued, Candidate(NEW, IMPORTANT)], 1) == [Candidate(2, INFO)]
    assert evictions([*queued, Candidate(NEW, IMPORTANT)], 3) == [Candidate(2, INFO), Candidate(4, INFO),
                                                                  Candidate(1, IMPORTANT)]
    assert evictions(queued, 0) == []


def test_an_informational_message_arriving_at_a_full_outbox_of_important_ones_is_the_one_dropped():
    queued = [Candidate(1, IMPORTANT), Candidate(2, IMPORTANT)]
    assert evictions([*queued, Candidate(NEW, INFO)], 1) == [Candidate(NEW, INFO)]
    # Among informational ones, the arriving message is the newest: the stored one goes first.
    assert evictions([Candidate(5, INFO), Candidate(NEW, INFO)], 1) == [Candidate(5, INFO)]


@given(st.lists(st.tuples(st.integers(1, 10_000), st.sampled_from([INFO, IMPORTANT])), unique_by=lambda t: t[0]),
       st.sampled_from([INFO, IMPORTANT]), st.integers(0, 20))
def test_evictions_never_keep_a_lower_priority_or_older_message_over_a_victim(queued, new, excess):
    cands = [Candidate(s, p) for s, p in queued] + [Candidate(NEW, new)]
    victims = evictions(cands, excess)
    assert len(victims) == min(excess, len(cands))
    kept = [c for c in cands if c not in victims]
    rank = {c: (c.priority, c.seq == NEW, c.seq) for c in cands}
    assert all(rank[v] < rank[k] for v in victims for k in kept)


def test_puback_reason_codes():
    assert delivered(0x00) and delivered(0x10)  # success, no matching subscribers
    assert not delivered(0x87) and not delivered(0x80)  # not authorized, unspecified error


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half():
    lows = [backoff_delay(a, 1.0, 60.0, 0.0) for a in range(10)]
    highs = [backoff_delay(a, 1.0, 60.0, 0.999999) for a in range(10)]
    assert lows[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and lows[9] == 30.0
    assert all(h == pytest.approx(2 * lo, rel=1e-5) for lo, h in zip(lows, highs, strict=True))
    assert backoff_delay(10_000, 1.0, 60.0, 0.5) == 45.0  # no overflow after a long outage
    for bad in ((-1, 1.0, 60.0, 0.5), (0, 1.0, 60.0, 1.0), (0, 0.0, 60.0, 0.5), (0, 2.0, 1.0, 0.5)):
        with pytest.raises(ValueError):
            backoff_delay(*bad)
