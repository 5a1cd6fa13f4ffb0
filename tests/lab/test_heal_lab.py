"""MAPE-K self-healing on real batman-adv (User-Mode Linux), one boot of the 5-node ring.

The scenario, in order, with an agent on every node (BATMAN_IV, 1 s originator interval):

1. **silent loss**: the link n1-n2 drops everything (netem 100 % both ways, carrier up) while n1
   pings n2 every 20 ms. Both ends must open a ``link_suspect`` incident (faster OGMs) and then a
   ``silent_loss`` one, steer traffic off the link and alert the mesh; the other nodes pause OGM
   aggregation while the alert lasts; the route n1 -> n2 moves to n5. Then the link recovers: both
   ends restore the interface (the action is undone and verified) and the route is direct again.
2. **kill -9 mid-incident**: n3-n4 goes silent, n3 steers off, n3's agent is killed with SIGKILL;
   its knowledge store is read while it is dead (``PRAGMA integrity_check``, the incident and its
   actions there); the agent is started again and resumes the incident; the link recovers and the
   incident is closed with the interface restored.
3. **flapping**: n1-n2 is silent for 2 s, fine for 2 s, for 2 minutes. Actions must stay within the
   rate limits, no action storm, and the ping n1 -> n2 keeps getting through most of the time.
   **slow flapping**: then n1-n2 is silent for 1 s and fine for 4 s, ten times: slower than the
   hysteresis (the symptom clears after 2 s of clean probes), so each restore is followed by the
   link failing again within ``restore_verify_after``: the restores fail, and the breaker of
   ``restore_hardif`` on that interface opens, which keeps the link out while it flaps.
4. **link down**: n2-n3 goes down on both ends while n2 pings n3. batman-adv stops using it on
   n2 and n3 by itself; both agents send OGMs faster while it is down, so that the other nodes
   drop their routes through it sooner, and return to the configured interval once it is back.
5. **baseline**: the agents are stopped (SIGTERM) and steps 1 and 4 are repeated: batman-adv alone.

Figures (times to detect, outages, action counts, breaker openings) are printed and written to
``heal-figures.json`` in the run's directory; like every lab test, nothing fails on a duration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from x0tta.lab.runner import LabResult, LabUnavailable, run_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
RING = ROOT / "configs" / "lab" / "ring.toml"
CHECKS = Path(__file__).with_name("heal_checks.py")
NODES = ["n1", "n2", "n3", "n4", "n5"]
FLAP_CYCLES = 30  # 30 x (2 s silent + 2 s fine) = 2 minutes
SLOW_CYCLES = 10  # 10 x (1 s silent + 4 s fine)
OVERRIDES: dict[str, Any] = {}  # the agents' defaults


def _check(label: str, fn: str, nodes: list[str], **kw: Any) -> dict[str, Any]:
    step = {"do": "check", "label": label, "call": f"{CHECKS}:{fn}", "each_node": True, "nodes": nodes}
    if kw.get("args"):
        step["args"] = kw.pop("args")
    return {**step, **kw}


def fault_scenario(prefix: str, fault: str, src: str, dst: str, route_timeout: float) -> list[dict[str, Any]]:
    """``src`` pings ``dst`` every 20 ms; ``fault`` hits their link; the route moves; the link recovers."""
    return [
        {"do": "ping", "from": src, "to": dst, "name": prefix},
        {"do": fault, "label": f"{prefix}-fault", "link": f"{src}-{dst}", "after_s": 2},
        {"do": "wait_route", "label": f"{prefix}-around", "from": src, "to": dst, "not_via": dst,
         "timeout_s": route_timeout},
        {"do": "sleep", "label": f"{prefix}-hold", "seconds": 3},
        {"do": "restore", "label": f"{prefix}-recover", "link": f"{src}-{dst}"},
        {"do": "wait_route", "label": f"{prefix}-direct", "from": src, "to": dst, "via": dst,
         "timeout_s": route_timeout},
        {"do": "ping_stop", "name": prefix, "after_s": 2},
    ]


def silent_loss_scenario(prefix: str, route_timeout: float) -> list[dict[str, Any]]:
    """n1-n2 drops everything (netem 100 % both ways) while its carrier stays up."""
    return fault_scenario(prefix, "silent_loss", "n1", "n2", route_timeout)


def link_down_scenario(prefix: str, route_timeout: float) -> list[dict[str, Any]]:
    """n2-n3 goes down on both ends (ip link set down), as a cable pulled or a radio switched off."""
    return fault_scenario(prefix, "link_down", "n2", "n3", route_timeout)


SCENARIO: list[dict[str, Any]] = [
    {"do": "converge", "label": "converged", "timeout_s": 90},
    *silent_loss_scenario("heal", 30),
    _check("heal-closed", "wait_incidents_closed", NODES, args={"timeout": 60}),
    _check("heal-incidents", "heal_incidents", NODES),
    # kill -9 in the middle of an incident
    {"do": "silent_loss", "label": "kill-fault", "link": "n3-n4", "after_s": 1},
    {"do": "wait_route", "label": "kill-around", "from": "n3", "to": "n4", "not_via": "n4", "timeout_s": 30},
    _check("kill-before", "heal_incidents", ["n3"]),
    _check("kill-probes", "heal_state", ["n3", "n4"]),
    {"do": "kill_agent", "label": "kill", "node": "n3", "signal": "KILL"},
    _check("kill-store", "store_after_kill", ["n3"]),
    {"do": "start_agent", "label": "kill-restart", "node": "n3", "after_s": 0.5},
    {"do": "converge", "label": "kill-agent-back", "timeout_s": 60},
    {"do": "sleep", "label": "kill-resume", "seconds": 2},
    {"do": "restore", "label": "kill-recover", "link": "n3-n4"},
    _check("kill-closed", "wait_incidents_closed", ["n3", "n4"], args={"timeout": 60}),
    _check("kill-after", "heal_incidents", ["n3"]),
    # a link that goes down (no carrier) instead of silently dropping
    *link_down_scenario("down", 30),
    # the faster OGMs (and so the incident that owns them) stay while any symptom of the node still
    # needs them: route flapping after the previous phases can hold them for its flap window
    _check("down-closed", "wait_incidents_closed", ["n2", "n3"], args={"timeout": 150}),
    _check("down-incidents", "heal_incidents", ["n2", "n3"]),
    # a link flapping every 2 s for 2 minutes
    {"do": "ping", "from": "n1", "to": "n2", "name": "flap"},
    *[
        step
        for i in range(FLAP_CYCLES)
        for step in (
            {"do": "silent_loss", "label": f"flap-off-{i}", "link": "n1-n2", "after_s": 2},
            {"do": "restore", "label": f"flap-on-{i}", "link": "n1-n2", "after_s": 2},
        )
    ],
    {"do": "ping_stop", "name": "flap", "after_s": 2},
    _check("flap-state", "heal_state", ["n1", "n2"]),
    _check("flap-closed", "wait_incidents_closed", NODES, args={"timeout": 150}),
    _check("flap-incidents", "heal_incidents", ["n1", "n2"]),
    # a link flapping slower than the hysteresis
    {"do": "ping", "from": "n1", "to": "n2", "name": "slowflap"},
    *[
        step
        for i in range(SLOW_CYCLES)
        for step in (
            {"do": "silent_loss", "label": f"slowflap-off-{i}", "link": "n1-n2", "after_s": 4 if i else 2},
            {"do": "restore", "label": f"slowflap-on-{i}", "link": "n1-n2", "after_s": 1},
        )
    ],
    {"do": "ping_stop", "name": "slowflap", "after_s": 4},
    _check("slowflap-state", "heal_state", ["n1", "n2"]),
    _check("slowflap-closed", "wait_incidents_closed", NODES, args={"timeout": 180}),
    _check("slowflap-incidents", "heal_incidents", ["n1", "n2"]),
    # the baseline: batman-adv alone, same fault
    *[{"do": "kill_agent", "label": f"stop-{n}", "node": n, "signal": "TERM"} for n in NODES],
    _check("stop-settings", "mesh_settings_back", NODES),
    # a re-attached link needs its TQ window to fill before batman-adv prefers it again
    {"do": "wait_route", "label": "base-ready", "from": "n1", "to": "n2", "via": "n2", "timeout_s": 60},
    *silent_loss_scenario("base", 40),
    {"do": "wait_route", "label": "base-down-ready", "from": "n2", "to": "n3", "via": "n3", "timeout_s": 60},
    *link_down_scenario("base-down", 40),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> LabResult:
    out = tmp_path_factory.mktemp("lab-heal")
    try:
        result = run_lab(RING, out, scenario=SCENARIO, agents=True, overrides=OVERRIDES)
    except LabUnavailable as exc:
        pytest.skip(f"the lab cannot run here: {exc}")
    print(result.summary())
    return result


def _per_node(lab: LabResult, label: str) -> dict[str, Any]:
    check = lab.check(label)
    assert check["ok"], check
    return {n: r["result"] for n, r in check["per_node"].items()}


def _incidents(lab: LabResult, label: str, node: str, kind: str | None = None) -> list[dict[str, Any]]:
    rows = _per_node(lab, label)[node]
    return [i for i in rows if kind is None or i["symptom"]["kind"] == kind]


def _wall(lab: LabResult, label: str) -> float:
    """Wall-clock time of a timeline event (the agents record wall-clock times)."""
    t0 = lab.timeline.get("t0_wall")
    assert t0 is not None, "timeline has no t0_wall"
    return float(t0) + float(lab.event(label)["t"])


FIGURES: dict[str, Any] = {}


def _record(lab: LabResult, **kw: Any) -> None:
    FIGURES.update(kw)
    (lab.out_dir / "heal-figures.json").write_text(json.dumps(FIGURES, indent=2, default=str))
    print(json.dumps(kw, default=str))


def test_silent_loss_is_healed_on_both_ends_and_undone_when_the_link_recovers(lab: LabResult) -> None:
    assert lab.event("converged")["ok"], lab.failure_report()
    fault = lab.event("heal-fault")
    figures: dict[str, Any] = {}
    for node, hardif in (("n1", "to-n2"), ("n2", "to-n1")):
        incs = [i for i in _incidents(lab, "heal-incidents", node, "silent_loss")
                if i["symptom"]["target"].startswith(f"link:{hardif}/") and i["opened"] >= _wall(lab, "heal-fault") - 1]
        assert incs, f"{node} opened no silent_loss incident on {hardif}"
        inc = min(incs, key=lambda i: i["opened"])  # the fault's (a later one may follow the recovery)
        assert inc["status"] == "closed" and inc["resolution"].startswith("healed"), inc
        steer = [a for a in inc["actions"] if a["action"]["kind"] == "steer_off" and a["state"] == "effective"]
        assert steer, inc["actions"]
        assert steer[-1]["undo_op"] == "restore" and steer[-1]["undo_state"] == "effective", steer[-1]
        names = [e["name"] for e in inc["events"]]
        assert "decision" in names and "verified" in names and "incident_closed" in names
        decision = next(e for e in inc["events"] if e["name"] == "decision")
        assert decision["data"]["reasons"], "a decision without its reasons"
        suspects = [i for i in _incidents(lab, "heal-incidents", node, "link_suspect")
                    if i["symptom"]["target"].startswith(f"link:{hardif}/")
                    and i["opened"] >= _wall(lab, "heal-fault") - 1]
        tunes = [a["applied"] for i in (*suspects, inc) for a in i["actions"]
                 if a["action"]["kind"] == "tune_orig_interval" and a.get("applied")]
        figures[node] = {
            "suspect_from_fault_s": round(min(i["opened"] for i in suspects) - _wall(lab, "heal-fault"), 3)
            if suspects else None,
            "faster_ogms_after_fault_s": round(min(tunes) - _wall(lab, "heal-fault"), 3) if tunes else None,
            "detect_from_fault_s": round(inc["opened"] - _wall(lab, "heal-fault"), 3),
            "time_to_detect_s": round(inc["opened"] - inc["onset"], 3),
            "steered_off_after_fault_s": round(
                min(a["applied"] for a in inc["actions"] if a["action"]["kind"] == "steer_off")
                - _wall(lab, "heal-fault"), 3),
        }
    # the other nodes heard the alert and forwarded OGMs without aggregating them for a while
    for node in ("n3", "n4", "n5"):
        alerts = [i for i in _incidents(lab, "heal-incidents", node, "mesh_alert")
                  if i["opened"] >= _wall(lab, "heal-fault") - 1]
        assert alerts, f"{node} heard no mesh alert"
        pauses = [a for a in alerts[-1]["actions"] if a["action"]["kind"] == "pause_aggregation" and a.get("applied")]
        assert pauses and pauses[0]["undo_state"] == "effective", alerts[-1]
        figures[node] = {"aggregation_paused_after_fault_s": round(
            min(a["applied"] for i in alerts for a in i["actions"] if a["action"]["kind"] == "pause_aggregation"
                and a.get("applied")) - _wall(lab, "heal-fault"), 3)}
    assert lab.event("heal-around")["ok"] and lab.event("heal-around")["next_hop"] == "n5"
    assert lab.event("heal-direct")["ok"], "traffic did not return to the direct path"
    ttr = lab.time_to_restore("heal", after="heal-fault")
    outages = [o for o in lab.outages("heal") if o.end > fault["t"]]
    _record(lab, silent_loss_with_agents={
        "nodes": figures,
        "route_moved_s": lab.event("heal-around").get("seconds"),
        "traffic_restored_s": ttr,
        "within_1_5_s": ttr is not None and ttr <= 1.5,
        "outage_s": round(outages[0].duration, 3) if outages else 0.0,
        "direct_again_after_recovery_s": lab.event("heal-direct").get("seconds"),
    })


def test_baseline_without_agents_in_the_same_run(lab: LabResult) -> None:
    """batman-adv alone, same fault. In this ring at the default 1 s OGM interval it may not route
    around at all before the link comes back (n5 keeps routing to n2 through n1, so n1 never hears
    n2 another way): then the outage lasts until the recovery, and that is the figure."""
    assert lab.event("base-ready")["ok"], "the direct route did not come back before the baseline"
    # a fair baseline: the stopped agents gave back the faster OGMs and paused aggregation
    assert lab.check("stop-settings")["ok"], lab.check("stop-settings")
    fault, recover = lab.event("base-fault"), lab.event("base-recover")
    moved = lab.event("base-around")
    samples = [s for s in lab.samples("base") if s.sent < fault["t"]]
    # the ping worked before the fault (an echo lost while the stopped agents' settings settle is not
    # a broken baseline)
    assert samples and sum(s.lost for s in samples[5:]) <= 0.05 * len(samples), "the ping did not work before the fault"
    assert any(s.lost for s in lab.samples("base") if s.sent > fault["t"]), "the fault did not hit the ping"
    base_ttr = lab.time_to_restore("base", after="base-fault")
    heal_ttr = lab.time_to_restore("heal", after="heal-fault")
    rerouted = bool(moved["ok"])
    outage = base_ttr if rerouted and base_ttr is not None else recover["t"] - fault["t"]
    _record(lab, baseline_without_agents={
        "rerouted_before_recovery": rerouted,
        "route_moved_s": moved.get("seconds"),
        "traffic_restored_s": round(outage, 3),
        "ratio_agents_vs_batman_alone": round(heal_ttr / outage, 3) if heal_ttr and outage else None,
    })


def test_kill_9_mid_incident_keeps_the_store_and_the_incident_is_resumed_and_closed(lab: LabResult) -> None:
    before = _incidents(lab, "kill-before", "n3", "silent_loss")
    assert before, "n3 had no silent_loss incident before the kill"
    store = _per_node(lab, "kill-store")["n3"]
    assert store["integrity"] == "ok"
    stored_ids = {row[0] for row in store["incidents"]}
    assert {i["id"] for i in _incidents(lab, "kill-before", "n3")} <= stored_ids, "a record was lost"
    killed = before[0]["id"]
    assert any(row[0] == killed and row[1] == "open" for row in store["incidents"])
    assert any(a[1] == killed and a[2] == "steer_off" for a in store["actions"])
    after = {i["id"]: i for i in _incidents(lab, "kill-after", "n3")}
    assert stored_ids <= set(after), "incidents missing after the restart"
    inc = after[killed]
    assert inc["status"] == "closed", inc
    steer = [a for a in inc["actions"] if a["action"]["kind"] == "steer_off"]
    assert steer and steer[-1]["undo_state"] == "effective", "the steered-off interface was not restored"
    assert "incident_resumed" in [e["name"] for e in inc["events"]]
    assert lab.timeline["agent_exits"].get("n3") in (0, None)
    _record(lab, kill_9={"incident": killed, "stored_incidents": len(stored_ids), "events": store["events"],
                         "resolution": inc["resolution"]})


def test_flapping_link_no_action_storm_and_rate_limits_hold(lab: LabResult) -> None:
    start, end = _wall(lab, "flap-off-0"), _wall(lab, f"flap-on-{FLAP_CYCLES - 1}") + 2
    duration = end - start
    counts: dict[str, dict[str, int]] = {}
    breaker_opened: dict[str, int] = {}
    for node in ("n1", "n2"):
        c: dict[str, int] = {}
        for inc in _incidents(lab, "flap-incidents", node):
            for e in inc["events"]:
                if e["name"] != "executed" or not (start <= e["at"] <= end + 10):
                    continue
                key = f"{'undo' if e['data']['id'].endswith('/undo') else 'apply'}:{e['data']['outcome']}"
                c[key] = c.get(key, 0) + 1
        _assert_within_rate_limits(lab, "flap-incidents", node, start, end, slack=10)
        counts[node] = c
        breaker_opened[node] = len(_breaker_openings(lab, node, start, end))
        total = sum(c.values())
        # no storm: far fewer executions than flaps x 2 ends x (apply + undo) would be without limits
        assert total <= 4 * FLAP_CYCLES, (node, c)
    samples = [s for s in lab.samples("flap")]
    lost = sum(1 for s in samples if s.lost)
    _record(lab, flapping={
        "duration_s": round(duration, 1),
        "executions": counts,
        "breaker_openings": breaker_opened,
        "ping_loss_ratio": round(lost / len(samples), 3) if samples else None,
        "pings": len(samples),
    })
    assert samples and lost / len(samples) < 0.5, "the mesh did not stay usable while the link flapped"


def _assert_within_rate_limits(lab: LabResult, label: str, node: str, start: float, end: float,
                               slack: float = 0.0) -> None:
    """Actions applied between ``start`` and ``end + slack``, per kind and target over all of the
    node's incidents (the executor's buckets are per kind and target): at most burst + rate x
    duration (defaults: 3 + 6/min, with 10 s of margin)."""
    applied: dict[tuple[str, str], int] = {}
    for inc in _incidents(lab, label, node):
        for a in inc["actions"]:
            if a.get("applied") and start <= a["applied"] <= end + slack:
                k = (a["action"]["kind"], a["action"]["target"])
                applied[k] = applied.get(k, 0) + 1
    for k, n in applied.items():
        assert n <= 3 + 6 * (end - start + 10) / 60, (node, k, n)


def _breaker_openings(lab: LabResult, node: str, start: float, end: float) -> list[str]:
    """Breakers of ``node`` that opened between two wall-clock times, from its JSON log."""
    from datetime import datetime

    out = []
    for line in lab.agent_log(node).splitlines():
        if '"event": "heal_breaker"' not in line or '"state": "open"' not in line:
            continue
        rec = json.loads(line)
        at = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        if start <= at <= end:
            out.append(rec["breaker"])
    return out


def test_a_link_flapping_slower_than_the_hysteresis_opens_the_restore_breaker(lab: LabResult) -> None:
    start, end = _wall(lab, "slowflap-off-0"), _wall(lab, f"slowflap-on-{SLOW_CYCLES - 1}") + 4
    opened = {n: _breaker_openings(lab, n, start, end) for n in ("n1", "n2")}
    restores: dict[str, dict[str, int]] = {}
    for node in ("n1", "n2"):
        c: dict[str, int] = {}
        for inc in _incidents(lab, "slowflap-incidents", node):
            for a in inc["actions"]:
                if a.get("undo_applied") and start <= a["undo_applied"] <= end and a["undo_op"] == "restore":
                    c[a["undo_state"]] = c.get(a["undo_state"], 0) + 1
        _assert_within_rate_limits(lab, "slowflap-incidents", node, start, end)
        restores[node] = c
    samples = [s for s in lab.samples("slowflap")]
    lost = sum(1 for s in samples if s.lost)
    _record(lab, slow_flapping={
        "duration_s": round(end - start, 1),
        "breakers_opened": opened,
        "restores_by_outcome": restores,
        "ping_loss_ratio": round(lost / len(samples), 3) if samples else None,
        "pings": len(samples),
    })
    # a restore that the link undid within restore_verify_after failed; three such failures open
    # the restore breaker on that interface: the link stays out while it keeps flapping. Since the
    # reattach guard (a second detach within 32 s is a hop penalty instead), some runs instead fail
    # the penalty steer-offs until the steer_off breaker opens and the link stays in (CI of 4dae393:
    # 16 % ping loss): either way the loop stops acting on the flapping link - which of the two is
    # right for a flapping link is open (issue 10's note)
    assert any(any(b.startswith(("restore_hardif", "steer_off")) for b in names) for names in opened.values()), (
        opened, restores)
    assert samples and lost / len(samples) < 0.5, "the mesh did not stay usable while the link flapped"


def test_link_down_gets_faster_ogms_and_the_baseline_in_the_same_run(lab: LabResult) -> None:
    fault = _wall(lab, "down-fault")
    closed = _per_node(lab, "down-closed")  # asserts that every link incident of n2 and n3 closed
    figures: dict[str, Any] = {"waited_for_close_s": {n: r["waited_s"] for n, r in closed.items()}}
    for node, hardif in (("n2", "to-n3"), ("n3", "to-n2")):
        incs = [i for i in _incidents(lab, "down-incidents", node, "link_down")
                if i["symptom"]["target"] == f"hardif:{hardif}" and i["opened"] >= fault - 1]
        assert incs, f"{node} opened no link_down incident on {hardif}"
        inc = incs[0]
        assert inc["status"] == "closed", inc
        assert not [a for a in inc["actions"] if a["action"]["kind"] == "steer_off"], "a single loss is not a flap"
        tune = [a for a in inc["actions"] if a["action"]["kind"] == "tune_orig_interval"]
        if tune:  # faster OGMs for this link, back to the configured interval once it is up again
            assert inc["resolution"] == "healed: tune_orig_interval", inc
            assert tune[0]["state"] == "effective" and tune[0]["undo_state"] == "effective", tune
        else:  # another incident of the node (route flapping, a suspect link) had them in effect,
            # or this one handed its own over to the route flapping that still needed them
            assert "handed over" in inc["resolution"] or any(
                "originator interval is already" in n or "tune_orig_interval in effect" in n for n in inc["notes"]), inc
        figures[node] = {"detect_from_fault_s": round(inc["opened"] - fault, 3),
                         "faster_ogms_after_fault_s": round(tune[0]["applied"] - fault, 3) if tune else "already"}
    assert lab.event("down-around")["ok"] and lab.event("down-direct")["ok"]
    assert lab.event("base-down-around")["ok"], "batman-adv alone did not route around a link that is down"
    with_agents = lab.time_to_restore("down", after="down-fault")
    alone = lab.time_to_restore("base-down", after="base-down-fault")
    assert with_agents is not None and alone is not None
    _record(lab, link_down={
        "nodes": figures,
        "traffic_restored_s": with_agents,
        "batman_alone_traffic_restored_s": alone,
        "ratio_agents_vs_batman_alone": round(with_agents / alone, 3),
        "route_moved_s": lab.event("down-around").get("seconds"),
        "batman_alone_route_moved_s": lab.event("base-down-around").get("seconds"),
        "direct_again_after_recovery_s": lab.event("down-direct").get("seconds"),
        "batman_alone_direct_again_after_recovery_s": lab.event("base-down-direct").get("seconds"),
    })
