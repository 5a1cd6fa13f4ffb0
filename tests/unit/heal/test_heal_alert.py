"""Mesh alerts: the wire format, the board of alerts in force, and what the loop does with them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from x0tta.config.heal import HealSettings
from x0tta.heal.core import alert as al
from x0tta.heal.core import loop
from x0tta.heal.core.budget import LoadUse
from x0tta.heal.core.loop import Result, settle, step
from x0tta.heal.core.model import ActionKind, AlertHeard

ORIGIN = "02:ba:01:01:00:00"


def test_round_trip_with_and_without_key():
    a = al.Alert(ORIGIN, 41, "link_suspect", 3000)
    assert al.decode(al.encode(a)) == a
    key = b"secret"
    data = al.encode(a, key)
    assert len(data) == 20 + al.TAG_LEN and al.decode(data, key) == a


TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("keyed", [False, True], ids=["untagged", "shared-key"])
def test_the_trace_context_travels_inside_what_the_tag_covers(keyed):
    key = b"secret" if keyed else None
    a = al.Alert(ORIGIN, 42, "link_down", 3000, traceparent=TP)
    data = al.encode(a, key)
    assert data[5] & al.FLAG_TRACE and len(data) == 20 + 25 + (al.TAG_LEN if keyed else 0)
    assert data[20:36].hex() == TP[3:35] and data[36:44].hex() == TP[36:52] and data[44] == 1
    assert al.decode(data, key) == a
    flipped = data[:30] + bytes([data[30] ^ 1]) + data[31:]  # another trace id in flight
    if keyed:
        with pytest.raises(al.AlertDecodeError) as err:
            al.decode(flipped, key)
        assert err.value.reason == "bad_tag"
    assert al.decode(al.encode(replace(a, traceparent=None), key), key).traceparent is None


def test_a_session_tagged_alert_carries_the_trace_context_too():
    from x0tta.heal.core.linkkeys import key_id

    a = al.Alert(ORIGIN, 43, "silent_loss", 3000, traceparent=TP)
    data = al.encode(a, link_keys=[(key_id(KEY), KEY)])
    assert len(data) == 20 + 25 + 1 + 16
    assert al.decode(data, lookup={key_id(KEY): KEY}.get) == a
    with pytest.raises(al.AlertDecodeError) as err:
        al.decode(data[:25] + bytes([data[25] ^ 1]) + data[26:], lookup={key_id(KEY): KEY}.get)
    assert err.value.reason == "bad_tag"


@pytest.mark.parametrize("tp", ["01-" + TP[3:], TP[:-3], "00-" + "0" * 32 + TP[35:], TP[:36] + "0" * 16 + "-01"])
def test_a_malformed_traceparent_is_not_sent(tp):
    with pytest.raises(ValueError, match="traceparent"):
        al.encode(al.Alert(ORIGIN, 1, "link_down", 1, traceparent=tp))


@pytest.mark.parametrize(("data", "why"), [
    (al.encode(al.Alert(ORIGIN, 1, "link_down", 1, TP))[:20] + bytes(25), "all-zero id"),
    (al.encode(al.Alert(ORIGIN, 1, "link_down", 1, TP))[:40], "length"),
    (b"X0MA", "too short"),
    (b"NOPE" + bytes(16), "not a mesh alert"),
    (b"X0MA\x03" + bytes(15), "version 3"),
    (b"X0MA\x02\x04" + bytes(14), "session tags"),
    (b"X0MA\x02\x01" + bytes(14), "reserved bits"),
    (al.encode(al.Alert(ORIGIN, 1, "link_down", 1)) + b"x", "length"),
    (al.encode(al.Alert(ORIGIN, 1, "link_down", 1))[:18] + b"\x09\x00", "unknown alert kind 9"),
    (al.encode(al.Alert("03:00:00:00:00:01", 1, "link_down", 1)), "multicast"),
])
def test_bad_alerts_are_refused_with_the_reason(data, why):
    with pytest.raises(al.AlertDecodeError, match=why):
        al.decode(data)


def test_a_keyed_receiver_refuses_untagged_and_forged_alerts():
    a = al.Alert(ORIGIN, 1, "silent_loss", 3000)
    with pytest.raises(al.AlertDecodeError, match="unauthenticated"):
        al.decode(al.encode(a), b"key")
    with pytest.raises(al.AlertDecodeError, match="authentication failed"):
        al.decode(al.encode(a, b"other"), b"key")


def test_board_takes_an_alert_once_caps_its_hold_and_forgets_it_after():
    board = al.Board(hold_max=5.0)
    a = al.Alert(ORIGIN, 10, "silent_loss", 60_000)
    assert board.hear(a, 100.0)
    assert not board.hear(a, 100.2)  # the repeat
    assert not board.hear(replace(a, seq=9), 100.3)  # older
    (h,) = board.active(100.5)
    assert h.until == 105.0  # capped at hold_max
    assert board.hear(replace(a, seq=11, hold_ms=1000), 101.0)  # newer: replaces, shorter
    assert board.active(101.9) and not board.active(102.1)
    assert not board.hear(replace(a, seq=10), 103.0)  # a replay after its hold ran out: still old
    assert board.hear(replace(a, seq=12), 103.0)


def test_board_is_bounded_against_a_storm_of_origins():
    board = al.Board(hold_max=5.0, max_origins=4)
    heard = [board.hear(al.Alert(f"02:00:00:00:00:{i:02x}", 1, "link_down", 3000), 0.0) for i in range(10)]
    assert heard == [True] * 4 + [False] * 6 and len(board.heard) == 4
    # once their holds are over, a new origin takes the place of the one heard longest ago
    assert board.hear(al.Alert("02:00:00:00:00:99", 1, "link_down", 3000), 4.0)
    assert len(board.seqs) == 4 and "02:00:00:00:00:00" not in board.seqs


KEY, OTHER = b"a-b session secret..............", b"x-y session secret.............."


def test_session_tagged_alerts_verify_per_link_and_refuse_the_rest():
    from x0tta.heal.core.linkkeys import key_id

    a = al.Alert(ORIGIN, 7, "silent_loss", 3000)
    data = al.encode(a, link_keys=[(key_id(OTHER), OTHER), (key_id(KEY), KEY)])
    assert data[4] == al.VERSION_SESSION and len(data) == 20 + 1 + 2 * 16
    mine = {key_id(KEY): KEY}
    assert al.decode(data, lookup=mine.get) == a
    refusals = [
        (al.encode(a), "unauthenticated"),
        (al.encode(a, b"shared"), "unauthenticated"),
        (al.encode(a, link_keys=[(key_id(OTHER), OTHER)]), "not_for_us"),
        (data[:-1] + bytes([data[-1] ^ 1]), "bad_tag"),
        (data[:12] + b"\x03" + data[13:], "bad_tag"),  # the origin changed in flight
        (data[:-16], "malformed"),
    ]
    for bad, reason in refusals:
        with pytest.raises(al.AlertDecodeError) as err:
            al.decode(bad, lookup=mine.get)
        assert err.value.reason == reason, (bad, reason)
    with pytest.raises(al.AlertDecodeError, match="session tags"):
        al.decode(data, b"shared")  # a shared-key node cannot check them


def run(k, obs, now):
    k, decisions = step(k, obs, now)
    if decisions:
        k = settle(k, [Result(d.id, "applied") for d in decisions], now)
    return k, decisions


def test_an_alert_pauses_aggregation_and_speeds_this_nodes_ogms_until_it_expires(ring):
    """The pause forwards the others' OGMs at once; the companion sends this node's own every
    unstable_orig_interval, so routes towards it through the failed link move off in a few of
    them. Both end with the alert's hold, and a new alert is not a failed restore."""
    s = HealSettings()
    k = loop.initial(s, "t")
    heard = (AlertHeard(ORIGIN, "silent_loss"),)
    calm = replace(ring.obs(0.0, interval=1000), aggregation=True)
    k, d = run(k, replace(calm, at=0.0, alerts=heard), 0.0)
    assert [x.action.kind for x in d] == [ActionKind.PAUSE_AGGREGATION, ActionKind.TUNE_ORIG_INTERVAL]
    assert d[0].action.param("previous") is True and not d[0].action.disruptive
    assert d[1].action.param("interval_ms") == s.unstable_orig_interval and d[1].action.param("previous_ms") == 1000
    assert k.records[d[1].id].companion and d[1].incident == d[0].incident
    paused = replace(calm, aggregation=False, orig_interval_ms=s.unstable_orig_interval, alerts=heard)
    k, d = run(k, paused, 1.1)  # verified
    assert not d and sum(r.state.value == "effective" for r in k.records.values()) == 2
    k, d = run(k, replace(paused, alerts=()), 3.0)  # the alert's hold ended
    assert sorted(x.action.kind.value for x in d) == ["restore_orig_interval", "resume_aggregation"]
    assert [x.action.param("previous_ms") for x in d if x.action.kind == ActionKind.RESTORE_ORIG_INTERVAL] == [1000]
    # another alert within restore_verify_after: news from elsewhere, the restore did not fail
    k, d = run(k, replace(calm, alerts=heard), 4.0)
    assert [x.action.kind for x in d] == [ActionKind.PAUSE_AGGREGATION, ActionKind.TUNE_ORIG_INTERVAL]
    assert all(r.undo_state is None or r.undo_state.value != "failed" for r in k.records.values())


@pytest.mark.parametrize("why", ["turned_off", "strained", "budget_spent", "half_budget", "unkeyed", "already_fast"])
def test_an_alert_pauses_aggregation_without_the_faster_ogms_when_they_are_not_to_be_had(ring, why):
    """Not for an alert whose tag nobody checked (a forger could spend the budget this node's own
    steer-offs need), nor past half the budget (kept for this node's own faults)."""
    s = HealSettings(alert_fast_ogms=why != "turned_off")
    k = loop.initial(s, "t")
    heard = (AlertHeard(ORIGIN, "link_down", keyed=why != "unkeyed"),)
    obs = replace(ring.obs(0.0, interval=50 if why == "already_fast" else 1000), aggregation=True, alerts=heard,
                  strained=why == "strained")
    used = {"budget_spent": s.load_budget, "half_budget": 0.6 * s.load_budget}.get(why)
    if used is not None:
        k = replace(k, load={ActionKind.TUNE_ORIG_INTERVAL: LoadUse(((-used, 0.0),))})
    k, d = step(k, obs, 0.0)
    assert [x.action.kind for x in d] == [ActionKind.PAUSE_AGGREGATION], why
    refused = [e.data["reason"] for e in k.events if e.name == "load_budget" and e.data["op"] == "refused"]
    assert bool(refused) == (used is not None), (why, refused)


def _holding(k, kind):
    return any(r.action.kind == kind and r.holds and r.undo_state is None for r in k.records.values())


def test_the_faster_ogms_of_a_cleared_suspect_stay_while_an_alert_holds(ring):
    """The alert found them in force (its pause took no companion): the suspect clearing must not
    give them back before the alert's hold is over."""
    s = HealSettings()
    k = loop.initial(s, "t")
    k, d, _ = ring.run(k, replace(ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), aggregation=True), 0.15)
    assert [x.action.kind for x in d] == [ActionKind.TUNE_ORIG_INTERVAL]
    heard, log = (AlertHeard(ORIGIN, "silent_loss"),), []
    for i in range(1, 100):
        t = round(0.15 + 0.2 * i, 3)
        alerts = heard if 1.0 <= t <= 12.0 else ()
        fast = _holding(k, ActionKind.TUNE_ORIG_INTERVAL)
        o = replace(ring.obs(t, interval=s.unstable_orig_interval if fast else 1000),
                    aggregation=not _holding(k, ActionKind.PAUSE_AGGREGATION), alerts=alerts)
        k, d, _ = ring.run(k, o, t)
        log += [(t, x.action.kind, bool(alerts)) for x in d]
    restores = [(t, during) for t, kind, during in log if kind == ActionKind.RESTORE_ORIG_INTERVAL]
    assert restores and not any(during for _, during in restores), log


def test_a_steer_off_goes_when_the_alerts_faster_ogms_it_relied_on_run_out_of_budget(ring):
    """The alert's companion was in force when this node's own link failed, so the steer-off took
    none of its own; when the budget takes the alert's back, the steer-off goes with them."""
    s = HealSettings(load_budget=8.0, load_budget_window=60.0)
    k = loop.initial(s, "t")
    heard, t, both = (AlertHeard(ORIGIN, "silent_loss"),), 0.0, False
    for i in range(80):
        t = round(0.2 * i, 3)
        lost = 3 if t >= 1.0 else 0
        fast, steered = _holding(k, ActionKind.TUNE_ORIG_INTERVAL), _holding(k, ActionKind.STEER_OFF)
        both |= fast and steered
        o = replace(ring.obs(t, lost_run=lost, loss=0.5 if lost else 0.0, interval=50 if fast else 1000,
                             eth0_attached=not steered),
                    aggregation=not _holding(k, ActionKind.PAUSE_AGGREGATION), alerts=heard)
        k, _d, _ = ring.run(k, o, t)
        assert not (_holding(k, ActionKind.STEER_OFF) and not _holding(k, ActionKind.TUNE_ORIG_INTERVAL)), t
    assert both  # the steer-off did happen, on the alert's faster OGMs


def test_no_pause_when_aggregation_is_already_off_or_unknown(ring):
    k = loop.initial(HealSettings(), "t")
    heard = (AlertHeard(ORIGIN, "link_down"),)
    for agg in (False, None):
        k, d = run(k, replace(ring.obs(0.0), aggregation=agg, alerts=heard), 0.0)
        assert not d


def test_route_flapping_keeps_the_faster_ogms_but_not_the_paused_aggregation(ring):
    s = HealSettings()
    k = loop.initial(s, "t")
    heard = (AlertHeard(ORIGIN, "silent_loss"),)
    calm = replace(ring.obs(0.0, interval=1000), aggregation=True)
    k, d = run(k, replace(calm, alerts=heard), 0.0)
    assert [x.action.kind for x in d] == [ActionKind.PAUSE_AGGREGATION, ActionKind.TUNE_ORIG_INTERVAL]
    t, kinds = 0.0, set()
    for i in range(1, 2 * s.flap_count + 2):  # routes flap while the alert holds
        t = 0.2 * i
        k, d = run(k, ring.flapping(replace(calm, at=t, aggregation=False, alerts=heard,
                                               orig_interval_ms=s.unstable_orig_interval), i), t)
        kinds |= {x.action.kind for x in d}
    # the alert's faster OGMs serve the flapping too
    assert not kinds & {ActionKind.TUNE_ORIG_INTERVAL, ActionKind.RESTORE_ORIG_INTERVAL}, kinds
    # the alert's hold ends while the routes still flap: aggregation resumes, the faster OGMs stay
    done = []
    for j in range(5):
        t += 0.2
        fast = ring.flapping(replace(calm, at=t, aggregation=False, orig_interval_ms=s.unstable_orig_interval), j)
        k, d = run(k, fast, t)
        done += [x.action.kind for x in d]
    assert ActionKind.RESUME_AGGREGATION in done, done
    assert ActionKind.RESTORE_ORIG_INTERVAL not in done, done


def test_the_faster_ogms_of_a_cleared_suspect_go_to_route_flapping_and_the_suspect_closes(ring):
    s = HealSettings()
    k = loop.initial(s, "t")
    k, d, _ = ring.run(k, ring.obs(0.15, lost_run=1, loss=0.05, interval=1000), 0.15)
    assert [x.action.kind for x in d] == [ActionKind.TUNE_ORIG_INTERVAL]
    suspect = d[0].incident
    fast = s.unstable_orig_interval
    t, events = 0.15, []
    for i in range(1, 2 * s.flap_count + 12):  # the probes are fine again; the routes flap meanwhile
        t = round(0.15 + 0.5 * i, 3)
        k, d, ev = ring.run(k, ring.flapping(ring.obs(t, interval=fast), i), t)
        events += ev
    closed = [e for e in events if e.name == "incident_closed" and e.incident == suspect]
    assert closed and "handed over" in closed[0].data["incident"]["resolution"], [e.name for e in events]
    (tune,) = [r for r in k.records.values() if r.action.kind == ActionKind.TUNE_ORIG_INTERVAL]
    assert k.incidents[tune.incident].key[0] == "route_flapping"
    # the routes settle: route flapping clears after its window and gives the interval back
    undone = []
    for _ in range(int(s.flap_window / 0.5) + 20):
        t = round(t + 0.5, 3)
        k, d, _ = ring.run(k, ring.obs(t, interval=fast if not undone else 1000), t)
        undone += [x.action.kind for x in d]
    assert ActionKind.RESTORE_ORIG_INTERVAL in undone and not k.incidents


def _alerted(ring, k, t, alerts, **obs):
    fast = _holding(k, ActionKind.TUNE_ORIG_INTERVAL)
    o = replace(ring.obs(t, interval=50 if fast else 1000, **obs),
                aggregation=not _holding(k, ActionKind.PAUSE_AGGREGATION), alerts=alerts)
    k, d, _ = ring.run(k, o, t)
    return k, d


def test_an_alerts_faster_ogms_end_at_half_the_budget_however_long_the_alerts_last(ring):
    s = HealSettings(load_budget=20.0, load_budget_window=100.0)
    k, restored = loop.initial(s, "t"), None
    for i in range(100):
        t = 0.5 * i
        k, d = _alerted(ring, k, t, (AlertHeard(ORIGIN, "silent_loss"),))
        if restored is None and any(x.action.kind == ActionKind.RESTORE_ORIG_INTERVAL for x in d):
            restored = t
    assert restored is not None and restored <= s.load_budget / 2 + 0.5, restored


def test_an_unkeyed_alert_does_not_keep_the_faster_ogms_a_keyed_one_took(ring):
    k = loop.initial(HealSettings(), "t")
    own, forged = AlertHeard("02:00:00:00:00:01", "silent_loss"), AlertHeard(ORIGIN, "silent_loss", keyed=False)
    for i in range(30):
        t = 0.5 * i
        k, _ = _alerted(ring, k, t, ((own,) if t < 3 else ()) + (forged,))
    assert not _holding(k, ActionKind.TUNE_ORIG_INTERVAL)
    assert _holding(k, ActionKind.PAUSE_AGGREGATION)  # the pause is all an unkeyed alert gets


def _degraded_under_alert(ring, s):
    """eth0 degraded (a hop-penalty steer-off, which needs no faster OGMs) and, from 6 s on, a
    keyed alert: yields (t, knowledge, decisions) every 0.2 s for 16 s."""
    from x0tta.heal.core.model import Neighbour

    k = loop.initial(s, "t")
    for i in range(80):
        t = round(0.2 * i, 3)
        fast = _holding(k, ActionKind.TUNE_ORIG_INTERVAL)
        o = ring.obs(t, interval=50 if fast else 1000)
        if _holding(k, ActionKind.STEER_OFF):
            away = ring.obs(t, eth0_attached=False)
            o = replace(o, originators=away.originators, other_routes=away.other_routes)
        weak = tuple(Neighbour(n.addr, n.hardif, tq=20) if n.hardif == "eth0" else n for n in o.neighbours)
        o = replace(o, neighbours=weak, aggregation=not _holding(k, ActionKind.PAUSE_AGGREGATION),
                    alerts=(AlertHeard(ORIGIN, "silent_loss"),) if t >= 6 else ())
        k, d, _ = ring.run(k, o, t)
        yield t, k, d


def test_a_steer_off_never_outlives_the_faster_ogms_and_a_penalty_for_a_worse_link_does_not_rely_on_them(ring):
    s = HealSettings(load_budget=8.0, load_budget_window=60.0)
    # a silent link steered off on an almost spent budget: it goes when the faster OGMs go
    k, steered = loop.initial(s, "t"), False
    for i in range(80):
        t = round(0.2 * i, 3)
        lost = 3 if t >= 7.2 else 0
        k, _ = _alerted(ring, k, t, (AlertHeard(ORIGIN, "silent_loss"),), lost_run=lost,
                        loss=0.5 if lost else 0.0, eth0_attached=not _holding(k, ActionKind.STEER_OFF))
        steered |= _holding(k, ActionKind.STEER_OFF)
        assert not (_holding(k, ActionKind.STEER_OFF) and not _holding(k, ActionKind.TUNE_ORIG_INTERVAL)), t
    assert steered
    # a degraded link's hop penalty took no faster OGMs: their budget running out leaves it be
    log = [x.action.kind for _t, _k, d in _degraded_under_alert(ring, s) for x in d]
    assert ActionKind.STEER_OFF in log and ActionKind.RESTORE_HARDIF not in log, log


@pytest.mark.parametrize("interval", [50, None])
def test_a_steer_off_is_not_taken_on_a_spent_budget_when_the_interval_needs_no_faster_ogms(ring, interval):
    """Already short (or unknown), the interval asks for no faster OGMs; the budget is spent all the
    same, and the steer-off it would take back must not be taken: else detach and restore every
    cycle."""
    s = HealSettings(load_budget=8.0, load_budget_window=60.0)
    k = replace(loop.initial(s, "t"), load={ActionKind.TUNE_ORIG_INTERVAL: LoadUse(((0.0, 9.0),))})
    log = []
    for i in range(100):
        t = round(10 + 0.2 * i, 3)
        o = ring.obs(t, lost_run=3, loss=0.5, eth0_attached=not _holding(k, ActionKind.STEER_OFF), interval=interval)
        k, d, _ = ring.run(k, o, t)
        log += [x.action.kind for x in d]
    assert log.count(ActionKind.RESTORE_HARDIF) <= 1, log


def test_an_alerts_faster_ogms_end_at_half_the_budget_beside_a_steer_off_that_does_not_need_them(ring):
    from x0tta.heal.core.budget import spent

    s = HealSettings(load_budget=8.0, load_budget_window=60.0)
    restored = None
    for t, k, d in _degraded_under_alert(ring, s):
        if restored is None and any(x.action.kind == ActionKind.RESTORE_ORIG_INTERVAL for x in d):
            restored = spent(k.load, ActionKind.TUNE_ORIG_INTERVAL, t, s)
    assert restored is not None and restored <= s.load_budget / 2 + 0.5, restored

