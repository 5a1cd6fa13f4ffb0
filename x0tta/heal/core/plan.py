"""Plan: policies map a symptom to candidate actions, each with its preconditions, and rank them.

A candidate is an :class:`~x0tta.heal.core.model.Action` with its expected effect, blast radius
(how many neighbours or originators may see their path change) and cost. A candidate whose
precondition fails is kept with the reason, so the decision log says why it was not taken.
Ranking uses what this node has seen work: the success rate of the action kind for the symptom
kind, starting from a neutral prior of 50 % weighted by ``prior_weight``, divided by the cost
and, mildly, by the blast radius:

    score = (successes + prior_weight / 2) / (successes + failures + prior_weight)
            / (cost * (1 + 0.1 * blast_radius))

Policies (symptom -> candidates):

* ``silent_loss`` -> ``steer_off`` the hard interface (for partial loss - the ratio without a run of
  lost probes, or a run after probes lost at random before it (:func:`still_carries`) - a steer-off
  by hop penalty competes with the detach), if every probed neighbour on
  it is lossy and another attached, running hard interface has neighbours (never cut the node
  off); for partial loss a detach also needs every originator routed through it to have another
  router on such an interface in the full originator table (a link that still carries traffic is
  never taken from a node that has no other way: the hop penalty, which keeps it, is then the
  steer-off; with no steer-off at all, the faster OGMs alone, unless the link is the only way).
* ``link_suspect`` -> ``tune_orig_interval`` at once: batman-adv applies a new originator interval
  only after sending the OGM it already scheduled at the old one (up to a whole interval later), so
  starting before the loss is confirmed saves up to that much. Cheap and undone when probes return.
  Not for a link that is the only way to what it carries (:func:`no_way_round`; neither is the
  silent-loss fallback below): nobody can route around it, and faster OGMs empty its TQ window.
* ``link_down`` -> ``tune_orig_interval`` while it is down: batman-adv stops using a link that is
  down on this node by itself, but the other nodes keep routing towards this node through it until
  newer OGMs of this node reach them another way (a 5-node ring: ~6 s at 1 s OGMs); ``steer_off``
  (with the faster OGMs as its companion) instead when the link flaps (``flap_count`` carrier
  losses in the flap window), because batman-adv takes a flapping link back each time it comes up.
* ``link_degraded`` -> ``steer_off`` by hop penalty (never detach for a merely worse link).
* ``gateway_lost`` -> ``reselect_gateway`` (gateway client mode only).
* ``route_flapping``, ``partition`` -> ``tune_orig_interval`` (faster OGMs reconverge faster).
* ``config_drift`` -> ``reapply_settings``.
* ``subsystem_unhealthy`` -> ``restart_subsystem`` (never the heal subsystem itself).
* ``mesh_alert`` -> ``pause_aggregation``: forward OGMs at once instead of holding each up to
  100 ms for aggregation, while another node's far end needs its OGMs to reach the mesh around a
  dead link (undone when the alert's hold ends); with faster OGMs of this node as its companion
  (``alert_fast_ogms``, see :func:`~x0tta.heal.core.loop._companion`), so the routes towards it
  that ran through the dead link move off it too.
* ``threat`` -> ``quarantine`` the neighbour for ``quarantine_ttl`` through the guard (out of its
  admitted MACs, its peer sessions refused), unless it is quarantined already. The guard refuses a
  quarantine beyond its ``quarantine_share`` of the neighbours, or of a MAC the config admits (the
  action then ends in error, with that reason); the TTL or an operator ends it, not the loop.
* ``neighbour_lost``, ``gateway_changed`` -> nothing: recorded, batman-adv handles them.

The two remedies that raise every node's load, ``tune_orig_interval`` and ``pause_aggregation``,
are refused once their load budget is spent (:mod:`~x0tta.heal.core.budget`), like a failed
precondition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from x0tta.config.heal import HealSettings
from x0tta.heal.core.budget import refusal
from x0tta.heal.core.model import (
    Action,
    ActionKind,
    Candidate,
    Observation,
    Originator,
    Symptom,
    SymptomKind,
    evidence,
)

Stats = Mapping[tuple[str, str], tuple[int, int]]

UNDO = {
    ActionKind.STEER_OFF: ActionKind.RESTORE_HARDIF,
    ActionKind.TUNE_ORIG_INTERVAL: ActionKind.RESTORE_ORIG_INTERVAL,
    ActionKind.PAUSE_AGGREGATION: ActionKind.RESUME_AGGREGATION,
}

NO_ACTION = {
    SymptomKind.NEIGHBOUR_LOST: "recorded only: batman-adv purges a lost neighbour and reroutes by itself",
    SymptomKind.GATEWAY_CHANGED: "recorded only: a gateway change is batman-adv's own choice",
}


def mesh_values(action: Action) -> dict[str, Any]:
    """The batman-adv mesh settings (SET_MESH attributes) ``action`` sets; {} for kinds that set
    none. Undo actions carry their original's params (``previous_ms``, ``previous``)."""
    kind = action.kind
    if kind == ActionKind.TUNE_ORIG_INTERVAL:
        return {"orig_interval": action.param("interval_ms")}
    if kind == ActionKind.RESTORE_ORIG_INTERVAL:
        previous = action.param("previous_ms")
        return {} if previous is None else {"orig_interval": previous}
    if kind == ActionKind.PAUSE_AGGREGATION:
        return {"aggregated_ogms_enabled": False}
    if kind == ActionKind.RESUME_AGGREGATION:
        previous = action.param("previous")
        return {"aggregated_ogms_enabled": True if previous is None else bool(previous)}
    return {}


def success_rate(stats: Stats, symptom: str, action: str, prior_weight: float) -> float:
    ok, bad = stats.get((symptom, action), (0, 0))
    return (ok + prior_weight / 2) / (ok + bad + prior_weight)


def score(action: Action, symptom: str, stats: Stats, s: HealSettings) -> float:
    rate = success_rate(stats, symptom, action.remedy, s.prior_weight)
    return rate / (action.cost * (1.0 + 0.1 * action.blast_radius))


def _link_of(target: str) -> tuple[str, str]:
    """``link:eth1/aa:..`` -> ``("eth1", "aa:..")``."""
    hardif, _, peer = target.split(":", 1)[1].partition("/")
    return hardif, peer


def _hardif_of(target: str) -> str:
    """``link:eth1/aa:..`` or ``hardif:eth1`` -> ``eth1``."""
    return target.split(":", 1)[1].split("/", 1)[0]


# A steer-off by hop penalty is judged after this many originator intervals (at most
# PENALTY_VERIFY_MAX seconds). BATMAN_IV moves a route only when an OGM through another neighbour
# beats the average of the last five TQs the route received (BATADV_TQ_GLOBAL_WINDOW_SIZE). At a hop
# penalty of 255 an OGM that still arrives through the link scores 0, is dropped as not
# bidirectional and leaves that average as it was; the average falls only when the link loses an
# OGM whose copy then arrives another way first (a zero is written for the route through the
# link), five times. The other way's copy exists only once the node forwarding it routes off the
# link itself: one more such round. In the 5-node lab ring at 50 ms OGMs and 41 % loss both ways,
# the routes left the link 0.6-1.1 s after the penalty, the neighbour's own last: a 1 s verification
# failed such penalties, rolled them back and detached the link instead, whose restore then rebuilds
# its TQ windows from nothing (a CI chaos run: routes swinging after the re-attach, and an outage
# batman-adv alone did not have). 40 intervals is 2 s at 50 ms.
PENALTY_OGMS = 40
PENALTY_VERIFY_MAX = 10.0


# A hard interface attached again after a detach holds ``reattach_hop_penalty`` for this many of
# the node's originator intervals (at most REATTACH_HOLD_MAX seconds): BATMAN_IV rates a neighbour
# by the node's last 64 own OGMs it echoed (BATADV_TQ_LOCAL_WINDOW_SIZE), empty after a re-attach,
# and 80 fills it with some to spare. In the 5-node lab ring at 50 ms OGMs (4 s), the routes stayed
# off the re-attached link while it held and came back within a second of its lowering.
REATTACH_HOLD_OGMS = 80
REATTACH_HOLD_MAX = 10.0


def reattach_hold(orig_interval_ms: int | None) -> float:
    """Seconds a re-attached hard interface keeps its raised hop penalty, at this node's
    originator interval (None: not known, batman-adv's default of 1 s)."""
    return min(REATTACH_HOLD_OGMS * (orig_interval_ms or 1000) / 1000.0, REATTACH_HOLD_MAX)


def steer_off(
    hardif: str, obs: Observation, s: HealSettings, method: str, steered: frozenset[str] = frozenset(),
    carries: bool = False, attached_ago: float | None = None, moved_off: frozenset[str] = frozenset(),
) -> tuple[Action, str]:
    """``carries``: the link still carries traffic (partial loss), so detaching it must not strand
    an originator routed through it (see :func:`without_other_route`). ``attached_ago``: seconds
    since ``hardif`` was seen joining the mesh interface again after a detach (None: not lately).
    ``moved_off``: originators whose route left ``hardif`` since the fault began (see
    :func:`carried`)."""
    h = obs.hardif(hardif)
    neighbours = sum(1 for n in obs.neighbours if n.hardif == hardif)
    params = evidence(
        hardif=hardif,
        method=method,
        hop_penalty=s.steer_hop_penalty if method == "penalty" else None,
        previous_hop_penalty=h.hop_penalty if h else None,
    )
    # originators heard only through this link come back through others with their next OGMs:
    # judge a detach after a few originator intervals (4: measured in a 5-node ring), not before.
    # A hop penalty is slower (see PENALTY_OGMS)
    ogm = (obs.orig_interval_ms or 1000) / 1000.0
    wait = 4.0 * ogm if method == "detach" else min(PENALTY_OGMS * ogm, PENALTY_VERIFY_MAX)
    action = Action(
        kind=ActionKind.STEER_OFF,
        target=f"hardif:{hardif}",
        params=params,
        disruptive=True,
        blast_radius=neighbours,
        cost=2.0 if method == "detach" else 1.5,
        expected=f"no originator routed through {hardif}, and no originators lost",
        verify_after=max(s.verify_after, wait),
    )
    if h is None:
        return action, f"{hardif} is not a hard interface of the mesh"
    if method == "detach" and not h.attached:
        return action, f"{hardif} is already detached"
    if method == "detach" and attached_ago is not None and attached_ago < s.reattach_guard:
        return action, (f"{hardif} joined the mesh interface again {attached_ago:.1f} s ago: its neighbours "
                        f"ignore another new OGM sequence number for 30 s after taking one, so a detach "
                        f"now would keep the link out after its restore (reattach_guard {s.reattach_guard:g} s)")
    alt = other_ways(hardif, obs, steered)
    if not alt:
        return action, (f"no other running hard interface with neighbours (not steered off or silent): "
                        f"steering off "
                        f"{hardif} would isolate the node")
    why = only_way(hardif, obs, alt, moved_off)
    if why:
        # a link that is the only way to everything behind it (a line, a ring after another cut):
        # steering it off helps no one while it fails, and when it comes back batman-adv alone routes
        # over it again at once, while a steered-off link waits for its restore - the chaos
        # benchmark measured that as twice the outage (10.4 s against 5.1 s alone on a line). The
        # hop penalty is no way out: at steer_hop_penalty 255 it takes the link's routes to 0 as a
        # detach does (the same line, run again with detaches refused, steered by penalty instead)
        return action, f"{why}: steering off would only delay its own recovery"
    if carries:
        stranded = without_other_route(hardif, obs, alt)
        if stranded:
            return action, (f"{len(stranded)} originators routed through {hardif} have no other router on "
                            f"another interface ({', '.join(stranded[:3])}): steering off would cut them off")
    return action, ""


# probes lost within the window before the current run of lost ones that make a link's loss partial
# (one is a stray drop before the link went quiet; two or more are a link that loses at random)
SCATTERED_LOST = 2


def still_carries(evidence: Any, s: HealSettings) -> bool:
    """Whether a link with ``silent_loss`` still carries traffic - partial loss - from its symptom's
    evidence: its run of lost probes is shorter than ``silent_loss_run`` (the ratio raised it), or
    :data:`SCATTERED_LOST` or more probes were missing before that run within the window
    (``scattered``, counted on the receive side by the prober). A link that loses half its probes
    at random has runs of three or four now and then: judged by the run alone it read as silent
    and was detached without the other-route check a link that carries traffic gets (the chaos
    lab: a 54 % loss, detached with its detour through a link attached again 10 s before and not
    yet routable, cut two paths for 6.2 s where batman-adv alone lost none of them)."""
    ev = dict(evidence)
    if int(ev.get("lost_run", 0)) < s.silent_loss_run:
        return True
    return int(ev.get("scattered", 0)) >= SCATTERED_LOST


def other_ways(hardif: str, obs: Observation, steered: frozenset[str] = frozenset()) -> set[str]:
    """This node's other usable hard interfaces: attached, running, with neighbours, and neither
    steered off nor confirmed silent (``steered``)."""
    return {
        x.name for x in obs.hardifs
        if x.name != hardif and x.name not in steered and x.oper_up and x.attached and x.active
    } & {n.hardif for n in obs.neighbours}


def only_way(hardif: str, obs: Observation, alt: set[str], moved_off: frozenset[str] = frozenset()) -> str:
    """Why ``hardif`` is the only way to everything it carries ("" when something it carries -
    routed through it, moved off it since the fault began (``moved_off``), or heard through it with
    a quality above zero - is reachable through another usable interface ``alt``). A link that
    carries nothing at all is not judged here (""): nothing depends on it."""
    served = {o.orig for o in obs.originators if o.hardif == hardif}
    if not served:
        return ""
    if (served | moved_off | heard_live(hardif, obs)) & reachable_elsewhere(obs, alt):
        return ""
    return (f"no originator the link carried ({', '.join(sorted(served | moved_off)[:3])}) has another "
            f"router on another interface")


def reachable_elsewhere(obs: Observation, alt: set[str]) -> set[str]:
    """Originators the full originator table has an entry for through another usable interface
    (``alt``) with a link quality above zero."""
    return {
        o.orig for o in (*obs.originators, *obs.other_routes)
        if o.hardif in alt and _live(o)
    }


def heard_live(hardif: str, obs: Observation) -> set[str]:
    """Originators with an entry through ``hardif`` that still has a link quality above zero, best
    or not. One heard live through the link and through another interface too is on a cycle: the
    link is not the only way (BATMAN_IV hides the far end's other way - it drops the echo of an OGM
    a node forwarded itself - but not a node the neighbours reach both ways round). An entry left
    by a ring cut elsewhere reads zero a few of its originator's OGMs after the cut."""
    return {o.orig for o in (*obs.originators, *obs.other_routes)
            if o.hardif == hardif and _live(o)}


def carried(hardif: str, moved_off: Mapping[str, tuple[str, float]], since: float) -> frozenset[str]:
    """Originators whose best route left ``hardif`` at or after ``since`` (a fault's onset).

    The question "is this link the only way?" cannot be asked of the best routes alone: BATMAN_IV
    drops the echo of an OGM a node forwarded itself, so the neighbour across the link has no other
    entry while the link is best, and once the link goes silent (faster OGMs make it quick) the
    originators that do have another way move to it first, leaving the neighbour as the only one
    routed through the link - in a ring, exactly as in a line (the heal lab's kill -9 step found
    the race: both ends of a silent link in the 5-node ring refused to steer off). What moved since
    the fault began was carried by the link, and shows whether anything behind it has another
    way. Old entries through the link cannot tell it: a ring cut elsewhere earlier leaves them too,
    for up to 200 s, on what is now a line."""
    return frozenset(o for o, (h, t) in moved_off.items() if h == hardif and t >= since)


def without_other_route(hardif: str, obs: Observation, alt: set[str]) -> list[str]:
    """Originators routed through ``hardif`` for which the full originator table has no entry
    through another usable interface (``alt``) with a link quality above zero. A neighbour's own
    interface entry (its address is its next hop: one hop, only over this link) is left out.

    Asked only of a link that still carries traffic (partial loss): detaching a link that carries
    nothing strands nobody it was not stranding already, and BATMAN_IV's table cannot answer for it
    anyway - a node drops the echo of an OGM it forwarded itself, so while the direct link is best
    the far end and the nodes whose best path runs through this one have no other entry at all
    (in the 5-node ring, the neighbour itself), whatever the topology offers."""
    through = {o.orig for o in obs.originators if o.hardif == hardif and o.orig != o.router}
    if not through:
        return []
    return sorted(through - reachable_elsewhere(obs, alt))


def tune_orig_interval(obs: Observation, s: HealSettings) -> tuple[Action, str]:
    action = Action(
        kind=ActionKind.TUNE_ORIG_INTERVAL,
        target="mesh",
        params=evidence(interval_ms=s.unstable_orig_interval, previous_ms=obs.orig_interval_ms),
        cost=1.0,
        expected=f"originator interval {s.unstable_orig_interval} ms until the mesh is stable",
        verify_after=s.verify_after,
    )
    if obs.orig_interval_ms is None:
        return action, "the originator interval is unknown"
    if obs.orig_interval_ms <= s.unstable_orig_interval:
        return action, f"the originator interval is already {obs.orig_interval_ms} ms"
    return action, ""


def no_way_round(tune: tuple[Action, str], target: str, obs: Observation, steered: frozenset[str],
                 moved_off: frozenset[str] = frozenset(),
                 silent: frozenset[tuple[str, str]] = frozenset()) -> tuple[Action, str]:
    """Refuse faster OGMs for a failing link (``link:IF/PEER``) that is the only way to what it
    carries (:func:`only_way_via`): nobody can route around it, and the faster OGMs only empty its
    TQ window sooner - batman-adv's window is 64 OGMs, which 50 ms OGMs pass in 3 s where 1 s OGMs
    lose five, so the link's quality starts from zero when the loss ends (the chaos benchmark's
    line: silent loss 5.20 s p95 against 5.16 s alone). A link down is not refused here: there the
    faster OGMs carry the news of the carrier coming back."""
    action, why = tune
    if why:
        return tune
    way = only_way_via(target, obs, steered, moved_off, silent)
    return action, (f"{way}: faster OGMs would help no one route around the link" if way else "")


def only_way_via(target: str, obs: Observation, steered: frozenset[str] = frozenset(),
                 moved_off: frozenset[str] = frozenset(), silent: frozenset[tuple[str, str]] = frozenset()) -> str:
    """Why the link ``link:IF/PEER`` is the only way to everything it carries ("" when it is not,
    when it carries nothing, or for a target without a neighbour). Judged per neighbour, not per
    interface: on a radio, the other neighbours on the same interface are ways round. Carried:
    routed through PEER now, moved off it since the fault began (``moved_off``), or heard through
    it with a quality above zero; another way: an entry through another neighbour, with a quality
    above zero, on an interface not steered off (``steered``) and not through a neighbour whose
    link is silent too (``silent``: (interface, neighbour) pairs)."""
    peer = _link_of(target)[1].lower() if target.startswith("link:") and "/" in target else ""
    routes = (*obs.originators, *obs.other_routes)
    served = {o.orig for o in obs.originators if o.router.lower() == peer}
    if not peer or not served:
        return ""
    through = served | moved_off | {o.orig for o in routes if o.router.lower() == peer and _live(o)}
    quiet = {(h, m.lower()) for h, m in silent}
    around = {o.orig for o in routes if o.router.lower() != peer and o.hardif not in steered
              and (o.hardif, o.router.lower()) not in quiet and _live(o)}
    if through & around:
        return ""
    return f"no originator {peer} carried ({', '.join(sorted(served | moved_off)[:3])}) has another router"


def only_way_since(target: str, obs: Observation, moved_off: Mapping[str, tuple[str, float]], onset: float) -> str:
    """:func:`only_way_via` for a failing link whose fault began at ``onset``: what moved off its
    interface since then (:func:`carried`) counts as carried by it, as the plan counts it."""
    if not target.startswith("link:"):
        return ""
    return only_way_via(target, obs, moved_off=carried(_hardif_of(target), moved_off, onset))


def _live(o: Originator) -> bool:
    return (o.tq or 0) > 0 or (o.throughput or 0) > 0


def alert_wants_fast_ogms(obs: Observation, s: HealSettings) -> bool:
    """Whether the mesh alerts in force ask this node for faster OGMs (the pause's companion):
    ``alert_fast_ogms`` on, one of them keyed (a forged alert must not spend the budget this
    node's own faults need), and this agent not short of CPU."""
    return s.alert_fast_ogms and not obs.strained and any(a.keyed for a in obs.alerts)


def pause_aggregation(obs: Observation, s: HealSettings) -> tuple[Action, str]:
    action = Action(
        kind=ActionKind.PAUSE_AGGREGATION,
        target="mesh",
        params=evidence(previous=obs.aggregation),
        cost=1.0,
        expected="OGMs forwarded without waiting for aggregation while the alert lasts",
        verify_after=s.verify_after,
    )
    if obs.aggregation is None:
        return action, "OGM aggregation state is unknown"
    if not obs.aggregation:
        return action, "OGM aggregation is already off"
    return action, ""


def quarantine(sym: Symptom, obs: Observation, s: HealSettings) -> tuple[Action, str]:
    ev = dict(sym.evidence)
    mac = str(ev.get("mac", sym.target.split(":", 1)[1]))
    signatures = tuple(ev.get("signatures", ()))
    action = Action(
        kind=ActionKind.QUARANTINE,
        target=sym.target,
        params=evidence(mac=mac, ttl=s.quarantine_ttl, reason=",".join(signatures) or "threat"),
        disruptive=True,
        blast_radius=1,
        cost=2.0,
        expected=f"{mac} quarantined for {s.quarantine_ttl:g} s, no originators lost",
        verify_after=s.verify_after,
    )
    return action, (f"{mac} is quarantined already" if mac in obs.quarantined else "")


def candidates(
    sym: Symptom,
    obs: Observation,
    s: HealSettings,
    lossy_links: frozenset[str],
    stats: Stats,
    steered: frozenset[str] = frozenset(),
    load_spent: Mapping[ActionKind, float] | None = None,
    attached_ago: Mapping[str, float] | None = None,
    moved_off: Mapping[str, tuple[str, float]] | None = None,
) -> list[Candidate]:
    """Every action that could help ``sym``, scored; rejected ones carry their reason.

    ``load_spent``: seconds of each load-raising kind's budget spent in its window; a remedy of a
    kind with too little left is refused (:func:`~x0tta.heal.core.budget.refusal`).
    ``attached_ago``: hard interface -> seconds since it was last seen joining the mesh interface
    again after a detach (only those of the last ``reattach_guard``). ``moved_off``: originator ->
    the hard interface its best route left, and when (:func:`carried`)."""
    raw: list[tuple[Action, str]] = []
    kind = sym.kind
    # a link confirmed silent is no way round either: for a steer-off, its whole interface; for
    # the faster OGMs (judged per neighbour), that neighbour on it
    silent = frozenset(_link_of(t) for t in lossy_links if t.startswith("link:"))
    in_effect, steered = steered, steered | {_hardif_of(t) for t in lossy_links}
    if kind == SymptomKind.SILENT_LOSS:
        hardif = _hardif_of(sym.target)
        partial = still_carries(sym.evidence, s)
        ago = (attached_ago or {}).get(hardif)
        moved = carried(hardif, moved_off or {}, sym.onset)
        action, why = steer_off(hardif, obs, s, s.steer_method, steered, carries=partial, attached_ago=ago,
                                moved_off=moved)
        guarded = ago is not None and ago < s.reattach_guard
        probed = {f"link:{p.hardif}/{p.peer}" for p in obs.probes if p.hardif == hardif}
        healthy = sorted(probed - lossy_links)
        if not why and healthy:
            why = f"other probed neighbours on {hardif} are fine ({', '.join(healthy)})"
        raw.append((action, why))
        if s.steer_method == "detach" and (partial or guarded) and not healthy:
            # partial loss (the ratio, or a run after losses scattered before it): the link still carries most
            # traffic, so a raised hop penalty - batman-adv prefers other paths, keeps this one - is
            # a real alternative; the knowledge base's record of both decides between them (not
            # when it would strand someone: at 255 the penalty takes the link's routes to 0). So
            # is it for a link just attached again, which a detach would keep out (reattach_guard)
            raw.append(steer_off(hardif, obs, s, "penalty", steered, carries=partial, moved_off=moved))
        if all(reason for _a, reason in raw):  # no steer-off: the faster OGMs alone still shorten
            raw.append(no_way_round(tune_orig_interval(obs, s), sym.target, obs, in_effect, moved,
                                    silent))  # the others' reconvergence, where they have another way
    elif kind == SymptomKind.LINK_DOWN:
        hardif = _hardif_of(sym.target)
        action, why = steer_off(hardif, obs, s, s.steer_method, steered, attached_ago=(attached_ago or {}).get(hardif))
        flaps = int(dict(sym.evidence).get("flaps", 0))
        flapping = flaps >= s.flap_count
        if not why and not flapping:
            why = f"not flapping ({flaps} carrier losses < {s.flap_count}): batman-adv stops using it by itself"
        raw.append((action, why))
        # the other nodes keep routing towards this one through the dead link until newer OGMs of
        # this node reach them another way: faster OGMs shorten that (steer_off's companion when
        # it flaps)
        tune, why = tune_orig_interval(obs, s)
        if not why and flapping:
            why = "flapping: steer_off takes the link out, with faster OGMs as its companion"
        raw.append((tune, why))
    elif kind == SymptomKind.LINK_SUSPECT:
        raw.append(no_way_round(tune_orig_interval(obs, s), sym.target, obs, in_effect, silent=silent))
    elif kind == SymptomKind.MESH_ALERT:
        raw.append(pause_aggregation(obs, s))
    elif kind == SymptomKind.LINK_DEGRADED:
        raw.append(steer_off(_hardif_of(sym.target), obs, s, "penalty", steered))
    elif kind == SymptomKind.GATEWAY_LOST:
        action = Action(
            kind=ActionKind.RESELECT_GATEWAY,
            target="gw",
            disruptive=True,
            blast_radius=1,
            cost=1.0,
            expected="a gateway is selected",
            verify_after=s.verify_after,
        )
        why = "" if obs.gw_mode == "client" else f"gateway mode is {obs.gw_mode}, not client"
        if not why and not obs.gateways:
            why = "no gateway is announced in the mesh"
        raw.append((action, why))
    elif kind == SymptomKind.ROUTE_FLAPPING:
        tune, why = tune_orig_interval(obs, s)
        if not why and obs.strained:
            # routes that alternate lose no traffic; faster OGMs on a node short of CPU load it
            # more, and a busier mesh flaps more (a 20-node lab guest at 96 %: every node at 50 ms)
            why = "this agent is strained: faster OGMs for flapping routes would load a node already short of CPU"
        raw.append((tune, why))
    elif kind == SymptomKind.PARTITION:
        raw.append(tune_orig_interval(obs, s))
    elif kind == SymptomKind.CONFIG_DRIFT:
        keys = sorted(dict(dict(sym.evidence).get("settings", {})))
        raw.append(
            (
                Action(
                    kind=ActionKind.REAPPLY_SETTINGS,
                    target="mesh",
                    params=evidence(keys=tuple(keys)),
                    cost=1.0,
                    expected="mesh settings equal the desired ones",
                    verify_after=s.verify_after,
                ),
                "",
            )
        )
    elif kind == SymptomKind.THREAT:
        raw.append(quarantine(sym, obs, s))
    elif kind == SymptomKind.SUBSYSTEM_UNHEALTHY:
        name = sym.target.split(":", 1)[1]
        raw.append(
            (
                Action(
                    kind=ActionKind.RESTART_SUBSYSTEM,
                    target=sym.target,
                    params=evidence(subsystem=name),
                    disruptive=True,
                    cost=3.0,
                    expected=f"subsystem {name} is no longer failing",
                    verify_after=max(s.verify_after, 5.0),
                ),
                "the heal loop does not restart itself" if name == "heal" else "",
            )
        )
    disabled = set(s.disabled_actions)
    out = []
    for action, why in raw:
        if not why and action.kind.value in disabled:
            why = f"action {action.kind.value} is disabled in [heal] disabled_actions"
        if not why and load_spent is not None:
            why = refusal(action.kind, action.verify_after, load_spent.get(action.kind, 0.0), s)
        out.append(Candidate(action=action, score=score(action, kind.value, stats, s), rejected=why))
    out.sort(key=lambda c: (c.rejected != "", -c.score))
    return out
