"""Outages, restore times and convergence computed from raw lab samples."""

from __future__ import annotations

from x0tta.lab.core.timeline import (
    Outage,
    PingSample,
    best_routes,
    loss_between,
    missing_views,
    outages,
    reachable,
    samples_from_rows,
    summarize,
    time_to_restore,
)


def pings(pattern: str, interval: float = 0.02, start: float = 10.0) -> list[PingSample]:
    """'.' answered (rtt 1 ms), 'x' lost, one echo per interval."""
    return [
        PingSample(i, start + i * interval, None if c == "x" else start + i * interval + 0.001)
        for i, c in enumerate(pattern)
    ]


def test_outages_are_runs_of_lost_echoes():
    s = pings("..xxx..x.." + "xx")
    assert outages(s) == [
        Outage(start=10.04, end=10.1, lost=3, recovered=True),
        Outage(start=s[7].sent, end=s[8].sent, lost=1, recovered=True),
        Outage(start=s[10].sent, end=s[11].sent, lost=2, recovered=False),
    ]
    assert round(outages(s)[0].duration, 6) == 0.06
    assert outages(pings("....")) == []


def test_time_to_restore_waits_for_traffic_that_holds():
    # fault at 10.05; loss from echo 3, a single answered echo at 8 (flap), good from echo 12 on
    s = pings("...xxxxx.xxx" + "." * 60)
    ttr = time_to_restore(s, t=10.05, settle_s=1.0)
    assert ttr is not None and abs(ttr - (s[12].sent - 10.05)) < 1e-9
    # an echo answered before the loss begins is not a restore
    assert abs(time_to_restore(s, t=10.0, settle_s=0.5) - (s[12].sent - 10.0)) < 1e-9


def test_time_to_restore_edge_cases():
    assert time_to_restore(pings("." * 10), t=10.0) == 0.0  # nothing lost after t
    assert time_to_restore(pings("..xxxx"), t=10.0) is None  # never came back
    assert time_to_restore(pings("..xx.."), t=10.0, settle_s=1.0) is None  # too short to tell it held
    assert time_to_restore([], t=10.0) is None
    assert time_to_restore(pings("....xx" + "." * 60), t=10.0, until=10.08) == 0.0  # loss is the next fault's


def test_loss_between_counts_sent_and_lost():
    s = pings("..xx..xx")
    assert loss_between(s, 10.0, 10.1) == (5, 2)


def test_samples_from_rows_sorts_and_keeps_none():
    rows = [[1, 0.02, None], [0, 0.0, 0.001]]
    s = samples_from_rows(rows)
    assert [x.seq for x in s] == [0, 1] and s[1].lost and abs(s[0].rtt_ms - 1.0) < 1e-9


def test_best_routes_and_convergence():
    owners = {"02:ba:02:02:00:00": "b", "02:ba:00:02:00:01": "b", "02:ba:02:03:00:00": "c"}
    entries = [
        {"orig_address": "02:ba:02:02:00:00", "neigh_address": "02:ba:00:02:00:01", "best": True},
        {"orig_address": "02:ba:02:03:00:00", "neigh_address": "02:ba:00:02:00:01", "best": True},
        {"orig_address": "02:ba:02:03:00:00", "neigh_address": "02:ba:00:09:00:09", "best": False},
        {"orig_address": "aa:aa:aa:aa:aa:aa", "neigh_address": "02:ba:00:02:00:01", "best": True},
    ]
    assert best_routes(entries, owners) == {"b": "b", "c": "b"}
    # a neighbour's secondary interface listed as an originator of its own, stale but "best"
    stale = {"orig_address": "02:ba:00:02:00:01", "neigh_address": "02:ba:00:02:00:01", "best": True}
    moved = {"orig_address": "02:ba:02:02:00:00", "neigh_address": "02:ba:02:03:00:00", "best": True}
    primaries = {"02:ba:02:02:00:00": "b", "02:ba:02:03:00:00": "c"}
    assert best_routes([moved, stale], {**owners, **primaries}, primaries) == {"b": "c"}
    expected = reachable(["a", "b", "c", "d"], [("a", "b"), ("b", "c")])
    assert expected == {"a": {"b", "c"}, "b": {"a", "c"}, "c": {"a", "b"}, "d": set()}
    views = {"a": {"b": "b", "c": "b"}, "b": {"a": "a"}, "c": {}}
    assert missing_views(views, expected) == {"b": ["c"], "c": ["a", "b"]}


def test_summary_reports_outages_and_restore_times():
    s = pings("....xxxxx" + "." * 60)
    timeline = {
        "topology": "t", "nodes": [{}, {}], "routing_algo": "BATMAN_IV", "agents": False, "ok": True,
        "boot": {"setup_s": 1.0},
        "events": [{"t": 10.07, "kind": "silent_loss", "label": "cut", "link": "a-b", "ok": True}],
        "measurements": {"pings": {"a->b": {"interval_ms": 20, "samples": [[x.seq, x.sent, x.received] for x in s]}}},
    }
    text = summarize(timeline)
    assert "lab t: 2 nodes, BATMAN_IV, agents off, ok" in text
    assert "ping a->b every 20 ms: 69 sent, 5 lost" in text
    assert "outage at 10.080 s: 0.100 s, 5 lost" in text
    assert "after silent_loss a-b at 10.070 s: traffic restored in 0.110 s" in text


def test_two_runs_of_one_scenario_side_by_side():
    from x0tta.lab.core.timeline import compare

    def run(lost_from, lost_to):
        rows = [[i, i * 0.02, None if lost_from <= i * 0.02 < lost_to else i * 0.02 + 0.001] for i in range(600)]
        return {"events": [{"t": 2.0, "kind": "link_down", "label": "cut", "link": "n1-n2"}],
                "measurements": {"pings": {"n1->n2": {"samples": rows}}}}

    text = compare(run(2.0, 2.8), run(2.0, 9.0))
    assert "link_down n1-n2: traffic back after 0.80 s with agents, 7.00 s with batman-adv alone" in text, text
    assert "1 outages with agents (0.80 s), 1 alone (7.00 s)" in text, text
