"""Property tests: breakers, token buckets, detector hysteresis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kit.clock import ManualClock
from x0tta.config.heal import HealSettings
from x0tta.heal.breakers import BreakerOpen, Breakers
from x0tta.heal.core import loop
from x0tta.heal.core.detect import hysteresis
from x0tta.heal.core.model import ActionKind, Observation, ProbeStats, Severity
from x0tta.heal.core.ratelimit import TokenBucket

ops = st.lists(
    st.tuples(st.sampled_from(["ok", "fail", "wait"]), st.floats(min_value=0.0, max_value=30.0)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_breaker_never_closes_without_a_successful_half_open_trial(script):
    clock = ManualClock()
    changes: list[tuple[str, str]] = []
    br = Breakers(fail_max=3, reset_timeout=10.0, clock=clock.monotonic, on_change=lambda n, s: changes.append((n, s)))
    for op, dt in script:
        if op == "wait":
            clock.advance(dt)
            continue
        b = br.get("steer_off", "hardif:eth0")
        before = b.current_state
        seen = len(changes)
        try:
            trial = br.begin("steer_off", "hardif:eth0")
        except BreakerOpen as exc:
            assert before == "open"
            assert 0.0 < exc.delay <= 10.0
            continue
        state_at_start = b.current_state
        if before == "open":  # its timeout passed: exactly this one trial goes through, half-open
            assert state_at_start == "half-open"
        if op == "ok":
            trial.success()
        else:
            trial.failure("did not help")
        # the invariant: a transition to closed only ever ends a successful trial begun half-open
        for i in range(seen, len(changes)):
            if changes[i][1] == "closed":
                assert op == "ok" and state_at_start == "half-open"
                assert i > 0 and changes[i - 1][1] == "half-open"


def test_breaker_opens_after_fail_max_and_waits_reset_timeout():
    clock = ManualClock()
    br = Breakers(fail_max=2, reset_timeout=60.0, clock=clock.monotonic)
    for _ in range(2):
        br.begin("restore_hardif", "hardif:eth0").failure("symptom came back")
    assert br.states() == {"restore_hardif:hardif:eth0": "open"}
    clock.advance(59.0)
    try:
        br.begin("restore_hardif", "hardif:eth0")
        raise AssertionError("open breaker let a call through")
    except BreakerOpen as exc:
        assert 0.9 <= exc.delay <= 1.01
    clock.advance(1.5)
    trial = br.begin("restore_hardif", "hardif:eth0")
    assert br.states()["restore_hardif:hardif:eth0"] == "half-open"
    trial.failure("again")
    assert br.states()["restore_hardif:hardif:eth0"] == "open"
    clock.advance(61)
    br.begin("restore_hardif", "hardif:eth0").success()
    assert br.states()["restore_hardif:hardif:eth0"] == "closed"


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=10),
    rate=st.floats(min_value=0.01, max_value=10.0),
    gaps=st.lists(st.floats(min_value=-1.0, max_value=5.0), min_size=1, max_size=200),
)
def test_rate_limit_is_never_exceeded(capacity, rate, gaps):
    now = 0.0
    bucket = TokenBucket.full(capacity, rate, now)
    accepted: list[float] = []
    for gap in gaps:
        now = max(0.0, now + gap)  # clocks may step back; time seen by the bucket never adds tokens then
        ok, bucket = bucket.take(now)
        if ok:
            accepted.append(bucket.updated)  # the bucket's own time: it never runs backwards
        assert 0.0 <= bucket.tokens <= capacity
    # over any interval [a, b]: at most capacity + rate * (b - a) actions
    accepted.sort()
    for i in range(len(accepted)):
        for j in range(i, len(accepted)):
            assert j - i + 1 <= capacity + rate * (accepted[j] - accepted[i]) + 1e-6


def _probe(lost_run: int, loss: float) -> ProbeStats:
    return ProbeStats("eth0", "02:00:00:00:00:0a", window=20, received=20, loss=loss, lost_run=lost_run)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_isolated_lost_probes_never_raise_silent_loss(pattern):
    """Probes every 100 ms, each lost or not, never more than run-1 in a row: no incident ever."""
    s = HealSettings()
    k = loop.initial(s, "p")
    run = 0
    lost_window: list[bool] = []
    from x0tta.heal.core.model import HardIf

    for i, lost in enumerate(pattern):
        run = run + 1 if lost else 0
        if run >= s.silent_loss_run:  # the property is about isolated losses
            run = 0
            lost = False
        lost_window = ([*lost_window, lost])[-20:]
        loss = sum(lost_window) / 20
        if loss >= s.silent_loss_ratio:
            continue
        now = i * 0.1
        obs = Observation(at=now, hardifs=(HardIf("eth0", True), HardIf("eth1", True)), probes=(_probe(run, loss),))
        k, decisions = loop.step(k, obs, now)
        # at most the cheap first stage (a link_suspect: faster OGMs), never an outage
        assert all(d.action.kind in (ActionKind.TUNE_ORIG_INTERVAL, ActionKind.RESTORE_ORIG_INTERVAL)
                   for d in decisions), decisions
        assert not any(i.key[0] == "silent_loss" for i in k.incidents.values())


@settings(max_examples=200, deadline=None)
@given(
    raise_after=st.floats(min_value=0.0, max_value=5.0),
    clear_after=st.floats(min_value=0.0, max_value=5.0),
    pattern=st.lists(st.tuples(st.booleans(), st.floats(min_value=0.01, max_value=2.0)), max_size=80),
)
def test_hysteresis_raises_only_after_raise_after_and_clears_only_after_clear_after(raise_after, clear_after, pattern):
    s = HealSettings(silent_loss_raise_after=raise_after, silent_loss_clear_after=clear_after)
    key = ("silent_loss", "link:eth0/x")
    state: dict = {}
    now = 0.0
    true_since = None
    false_since = None
    active = False
    for cond, dt in pattern:
        now += dt
        conds = {key: (Severity.WARNING, ())} if cond else {}
        if cond:
            true_since = true_since if true_since is not None else now
            false_since = None
        else:
            false_since = false_since if false_since is not None else now
        state, raised, cleared, act = hysteresis(state, conds, s, now)
        if raised:
            assert not active and cond and now - true_since >= raise_after
            active = True
        if cleared:
            assert active and not cond and now - false_since >= clear_after
            active = False
        if not cond and not active:
            true_since = None
        assert (key in act) == active
