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


def test_a_busy_node_strains_every_agent_on_it_though_none_is_late_or_costly():
    """A guest 83 % busy had its agents suspect healthy links while each was on time by its own measure."""
    s = strain(window=2.0, node_limit=0.7)
    s.sample(0.0, 0.0, 0.0, (0.0, 0.0))
    assert not s.sample(1.0, 0.02, 0.002, (50.0, 100.0))  # half busy: smoothed to 25 %
    for t in range(2, 6):
        strained = s.sample(float(t), 0.02 * t, 0.002, (50.0 + 90.0 * (t - 1), 100.0 * t))
    assert strained and "node's CPU" in s.reason and s.node_share > 0.7
    off = strain(window=2.0)  # node_limit 0: not a sign
    off.sample(0.0, 0.0, 0.0, (0.0, 0.0))
    assert not off.sample(1.0, 0.02, 0.002, (100.0, 100.0)) and off.node_share == 0.5  # measured, not a sign


def test_the_node_times_come_from_proc_stat(tmp_path):
    from x0tta.heal.service import node_cpu_times

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 20 800 10 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert node_cpu_times(str(stat)) == (131.0, 941.0)  # idle and iowait are not busy
    stat.write_text("garbage\n")
    assert node_cpu_times(str(stat)) is None
    assert node_cpu_times(str(tmp_path / "missing")) is None


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


def test_on_a_busy_node_a_silent_loss_takes_twice_the_run(ring):
    """A 20-node guest 96 % busy steered off four healthy links on three or four late probes: the
    kernel echo's answers are read late too on a node that busy (busy node: strained as well)."""
    s = HealSettings(silent_loss_raise_after=0.0)
    k = loop.initial(s, "t")
    k, d = step(k, replace(ring.obs(0.0, interval=1000), strained=True, node_busy=True), 0.0)
    k, d = step(k, replace(ring.obs(0.45, lost_run=s.silent_loss_run, loss=0.15, interval=1000), strained=True,
                           node_busy=True),
                0.45)
    assert not d and not k.incidents  # what confirms loss on a node with CPU to spare does not here
    k, d = step(k, replace(ring.obs(0.75, lost_run=2 * s.silent_loss_run, loss=0.3, interval=1000),
                           strained=True, node_busy=True), 0.75)
    assert ActionKind.STEER_OFF in [x.action.kind for x in d]
