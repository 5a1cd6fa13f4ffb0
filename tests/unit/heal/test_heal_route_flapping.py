"""``route_flapping``: batman-adv alternating between equal paths is not flapping; a route whose
quality swings, or whose router comes and goes, is.

The sequences are shaped like what the agents read in the lab: one observation a second, the best
entry of an originator moving between neighbour A (eth0) and neighbour B (eth1). In a 20-node grid
without any fault, routes moved between two paths whose TQ differed by a unit or two for as long
as the mesh ran, and every agent raised ``route_flapping`` for it.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from x0tta.config.heal import HealSettings
from x0tta.heal.core import loop
from x0tta.heal.core.detect import Memory, analyze
from x0tta.heal.core.model import ActionKind, HardIf, Neighbour, Observation, Originator

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
# originators two hops away, reachable through A and through B
ORIG, OTHER = "02:00:00:00:03:00", "02:00:00:00:03:01"
VIA = {A: "eth0", B: "eth1"}
KEY = ("route_flapping", "mesh")


def obs(at: float, route: dict[str, tuple[str, int]], *, a_seen: int = 300, b_seen: int = 300,
        a_listed: bool = True, eth0_up: bool = True) -> Observation:
    """This node at ``at``: each originator of ``route`` routed through (router, TQ); A last heard
    ``a_seen`` ms ago (absent from the neighbour table unless ``a_listed``), B ``b_seen`` ms ago."""
    neighbours = [Neighbour(B, "eth1", last_seen_ms=b_seen)]
    if a_listed:
        neighbours.append(Neighbour(A, "eth0", last_seen_ms=a_seen))
    origs = [Originator(A, A, "eth0", tq=240), Originator(B, B, "eth1", tq=240)]
    origs += [Originator(orig, router, VIA[router], tq=tq) for orig, (router, tq) in route.items()]
    return Observation(at=at, originators=tuple(origs), neighbours=tuple(neighbours),
                       hardifs=(HardIf("eth0", oper_up=eth0_up), HardIf("eth1", oper_up=True)))


def run(seq, s: HealSettings | None = None):
    """Analyze every observation of ``seq`` in turn; the route_flapping condition of each (or None)."""
    s = s or HealSettings()
    mem, seen = Memory(), []
    for o in seq:
        mem, conds = analyze(mem, o, s, o.at)
        seen.append(conds.get(KEY))
    return seen


def equal_alternation(seconds: int = 180):
    """Two paths of equal quality: the TQ through each drifts by a unit or two, and the route goes
    to whichever is higher at the moment - moving most seconds, for minutes."""
    for t in range(seconds):
        via_a, via_b = 200 + (t * 7) % 3, 200 + (t * 5) % 4  # 200-202 and 200-203, out of step
        yield obs(float(t), {ORIG: (A, via_a) if via_a > via_b or (via_a == via_b and t % 2) else (B, via_b)})


def test_equal_paths_alternating_for_minutes_are_not_flapping():
    seq = list(equal_alternation())
    routers = [o.originators[-1].router for o in seq]
    assert sum(1 for x, y in itertools.pairwise(routers) if x != y) > 60  # it alternates
    assert run(seq) == [None] * len(seq)


def lossy_link(cycles: int = 3):
    """The link to A loses OGMs for a while, then recovers, ``cycles`` times: the TQ through A falls
    from 200 to 130 and back; B's path stays at 160. The route moves to B while A is below it."""
    t = 0.0
    for _ in range(cycles):
        for via_a in (*range(200, 129, -10), *range(130, 201, 10)):
            router, tq = (A, via_a) if via_a > 160 else (B, 160)
            yield obs(t, {ORIG: (router, tq)})
            t += 1.0


def test_a_lossy_link_swinging_the_route_is_flapping_with_its_cause():
    seen = run(lossy_link())
    assert seen[-1] is not None
    ev = dict(seen[-1][1])
    assert ev["originators"] == 1 and ev["alternating"] == 0
    worst = ev["worst"][ORIG]
    assert worst["cause"] == "quality swing" and worst["quality"] == [160.0, 200.0] and worst["fall"] == 0.2
    assert worst["changes"] >= 3
    # raised at the third change, not before
    first = next(i for i, c in enumerate(seen) if c is not None)
    routers = [o.originators[-1].router for o in lossy_link()]
    assert sum(1 for x, y in itertools.pairwise(routers[: first + 1]) if x != y) == 3


def test_batman_v_routes_swing_in_throughput():
    """BATMAN_V: the same lossy link, the routes carrying throughput (kbit/s) and no TQ."""
    seq = [replace(o, originators=tuple(replace(r, throughput=r.tq * 100, tq=None) for r in o.originators))
           for o in lossy_link()]
    worst = dict(run(seq)[-1][1])["worst"][ORIG]
    assert worst["cause"] == "quality swing" and worst["quality"] == [16000.0, 20000.0], worst


def neighbour_in_and_out(cycles: int = 3, *, listed: bool = True):
    """A drops out for 7 s and comes back, ``cycles`` times. batman-adv moves the route to B only
    after five OGMs went missing, at the same TQ: only A's silence tells this from an alternation.
    ``listed=False``: A leaves the neighbour table while it is out."""
    t = 0.0
    for _ in range(cycles):
        for gone in range(7):
            router = A if gone < 5 else B
            yield obs(t, {ORIG: (router, 200)}, a_seen=300 + 1000 * gone, a_listed=listed or gone < 2)
            t += 1.0
        for _ in range(5):
            yield obs(t, {ORIG: (A, 200)})
            t += 1.0


def test_a_neighbour_flapping_in_and_out_is_flapping_with_its_cause():
    for listed in (True, False):
        seen = run(neighbour_in_and_out(listed=listed))
        assert seen[-1] is not None, listed
        worst = dict(seen[-1][1])["worst"][ORIG]
        assert worst["cause"] == "router silent" and worst["silent"] == worst["changes"] >= 3, (listed, worst)


def test_an_interface_going_down_makes_its_routers_silent():
    seq, t = [], 0.0
    for _ in range(3):
        seq += [obs(t, {ORIG: (A, 200)}), obs(t + 1, {ORIG: (B, 200)}, eth0_up=False), obs(t + 2, {ORIG: (A, 200)})]
        t += 3
    worst = dict(run(seq)[-1][1])["worst"][ORIG]
    assert worst["cause"] == "router silent", worst


def test_one_silence_among_alternations_is_no_flapping_and_the_evidence_counts_the_alternating():
    seq = list(equal_alternation(60))
    # once, A is silent for 4 s when the route leaves it: one real change among many equal ones
    seq[30] = obs(30.0, {ORIG: (B, 200)}, a_seen=4000)
    assert run(seq) == [None] * len(seq)
    # next to an originator whose route swings: only that one is reported, the other is counted
    both = [replace(a, originators=(*a.originators, replace(b.originators[-1], orig=OTHER)))
            for a, b in zip(equal_alternation(60), lossy_link(), strict=False)]
    ev = dict(run(both)[-1][1])
    assert ev["originators"] == 1 and list(ev["worst"]) == [OTHER] and ev["alternating"] == 1, ev


def test_the_loop_takes_faster_ogms_for_a_swinging_route_and_nothing_for_an_alternating_one():
    """What it cost before: the whole loop on an equal alternation opened a route_flapping incident
    and sped the node's OGMs up to 50 ms. Now it opens nothing; a lossy link still gets them."""
    def decisions(seq):
        k, out = loop.initial(HealSettings(), "t"), []
        for o in seq:
            k, d = loop.step(k, replace(o, orig_interval_ms=1000), o.at)
            out += [x.action.kind for x in d]
            if d:
                k = loop.settle(k, [loop.Result(x.id, "applied") for x in d], o.at)
        return out, k

    quiet, k = decisions(equal_alternation())
    assert quiet == [] and not k.incidents
    swinging, k = decisions(lossy_link())
    assert swinging[:1] == [ActionKind.TUNE_ORIG_INTERVAL]
    assert [i.key for i in k.incidents.values()] == [KEY]


def test_the_band_and_the_silence_are_settings():
    # a band wider than the swing: the lossy link's changes are alternations
    assert run(lossy_link(), HealSettings(flap_quality_band=0.3))[-1] is None
    # a silence limit longer than the outage: only the quality can tell, and it stayed the same
    assert run(neighbour_in_and_out(), HealSettings(flap_router_silence=10.0))[-1] is None
    # the same with OGMs every 5 s: neighbours are heard every 5 s, silence is three of them
    slow = [replace(o, orig_interval_ms=5000) for o in neighbour_in_and_out()]
    assert run(slow)[-1] is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=25),
                          st.integers(min_value=0, max_value=2900), st.floats(min_value=0.1, max_value=2.0)),
                min_size=1, max_size=120))
def test_alternation_between_heard_routers_within_the_band_never_raises(steps):
    """Any pattern of moves between A and B, at any pace, with the route's TQ anywhere within the
    band (200 down to 175: 12.5 %) and both routers heard within the silence limit: no symptom."""
    t, seq = 0.0, []
    for via_a, drop, seen_ms, dt in steps:
        seq.append(obs(t, {ORIG: (A if via_a else B, 200 - drop)}, a_seen=seen_ms, b_seen=2900 - seen_ms))
        t += dt
    assert all(c is None for c in run(seq))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=40),
       st.floats(min_value=0.1, max_value=2.0))
def test_moves_with_a_quality_fall_beyond_the_band_always_raise(drops, dt):
    """The route moves at every observation, its TQ anywhere, then from 200 to 150 (a fall of 25 %):
    raised by the end, at any pace."""
    tqs = [*(200 - d for d in drops), 200, 150, 150]
    seq = [obs(i * dt, {ORIG: (A if i % 2 else B, tq)}) for i, tq in enumerate(tqs)]
    assert run(seq)[-1] is not None


def test_a_route_quality_that_only_climbs_is_no_swing():
    """A mesh that has just converged: every link builds its TQ over its 64-OGM window, so the
    routes' TQ climbs for a minute while equal paths alternate. Not flapping."""
    seq = [obs(float(t), {ORIG: (A if t % 2 else B, 120 + 2 * t)}) for t in range(60)]
    assert run(seq) == [None] * len(seq)
