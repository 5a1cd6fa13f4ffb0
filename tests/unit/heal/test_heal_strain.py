"""A strained agent backs off: its own lag and CPU (x0tta.heal.core.strain), and what it changes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.config.heal import HealSettings
from x0tta.heal.core import loop
from x0tta.heal.core.loop import Result, settle, step
from x0tta.heal.core.model import ActionKind
from x0tta.heal.core.strain import Strain


def strain(**kw) -> Strain:
    return Strain(**{"lag_limit": 0.05, "cpu_limit": 0.25, "window": 5.0, "hold": 5.0, **kw})


def test_on_time_and_cheap_is_not_strained():
    s = strain()
    for i in range(20):
        assert not s.sample(float(i), 0.02 * i, 0.003)  # 2 % of a CPU, 3 ms late
    assert 0.015 < s.cpu_share <= 0.02 + 1e-9 and s.reason == "" and s.until == 0.0


def test_a_late_round_strains_for_the_hold_and_then_no_longer():
    s = strain()
    s.sample(0.0, 0.0, 0.0)
    assert s.sample(1.0, 0.02, 0.120)  # a round woke 120 ms late
    assert "120 ms late" in s.reason and s.until == 1.0 + s.hold
    assert s.sample(5.9, 0.1, 0.0)  # within the hold
    assert not s.sample(6.1, 0.11, 0.0)  # on time for the whole hold


def test_cpu_over_the_share_strains_once_smoothed():
    s = strain(window=2.0)
    s.sample(0.0, 0.0, 0.0)
    assert not s.sample(0.5, 0.3, 0.0)  # one burst of 60 % over 0.5 s: smoothed to 15 %
    assert s.sample(1.0, 0.6, 0.0)  # still 60 %: over a quarter of a CPU
    assert "% of a CPU" in s.reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 5.0), st.floats(-1.0, 5.0)), max_size=40))
def test_any_samples_keep_the_share_finite_and_never_raise(samples):
    s = strain()
    now = cpu = 0.0
    for dt, dcpu, lag in samples:
        now, cpu = now + dt, cpu + dcpu
        s.sample(now, cpu, lag)
        assert 0.0 <= s.cpu_share < float("inf") and s.worst_lag >= 0.0


def test_a_strained_agent_does_not_suspect_a_link_on_one_late_probe(ring):
    """The suspect stage speeds up this node's OGMs: on a busy node that is more load on a guess."""
    s = HealSettings()
    k = loop.initial(s, "t")
    k, d = step(k, ring.obs(0.0, interval=1000), 0.0)
    k, d = step(k, replace(ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), strained=True), 0.15)
    assert not d and not k.incidents
    # a confirmed silent loss is still acted on: a dead link is found whatever this agent's load
    t = 0.15
    for _ in range(4):
        t += 0.1
        k, d = step(k, replace(ring.obs(t, lost_run=5, loss=0.25, interval=1000), strained=True), t)
        if d:
            k = settle(k, [Result(x.id, "applied") for x in d], t)
            break
    assert ActionKind.STEER_OFF in [x.action.kind for x in d]


def test_without_the_kernel_echo_silent_loss_takes_twice_the_run_and_nothing_is_suspect(ring):
    """A starved agent over there cannot be told from a dead link without its kernel's echo: the
    loop waits for twice the run, and a suspicion moves nothing."""
    s = HealSettings(silent_loss_raise_after=0.0)
    k = loop.initial(s, "t")
    k, d = step(k, replace(ring.obs(0.0, interval=1000), echo_missing=True), 0.0)
    k, d = step(k, replace(ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), echo_missing=True), 0.15)
    assert not d and not k.incidents
    k, d = step(k, replace(ring.obs(0.45, lost_run=s.silent_loss_run, loss=0.15, interval=1000), echo_missing=True),
                0.45)
    assert not d and not k.incidents  # what confirms loss with the echo does not without it
    k, d = step(k, replace(ring.obs(0.75, lost_run=2 * s.silent_loss_run, loss=0.3, interval=1000),
                           echo_missing=True), 0.75)
    assert ActionKind.STEER_OFF in [x.action.kind for x in d]
