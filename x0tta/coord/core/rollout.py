"""The rollout as data: what is changed, where, how fast, when to stop; its state machine.

A :class:`Rollout` is the operator's signed document: a :class:`Change` (a setting and its new
value, or an artefact), a target selector, a wave size (at most that many nodes changing at once,
and with ``per_segment`` at most one per mesh segment),
a soak time and :class:`AbortCriteria`. :func:`signed_bytes` is the exact byte string the operator
signs and every node verifies before it acts.

Its progress is a :class:`RolloutState` (kept in etcd as JSON, changed by compare-and-swap on its
revision). Rollout phases::

    pending --start--> applying --(every target applied)--> soaking --(every target soaked)--> done
    applying|soaking --pause--> paused --resume--> applying|soaking
    applying|soaking|paused --abort / criteria--> aborting --(last changed node back)--> rolled_back

and each target's step: (none) -> applying -> soaking -> done | worse, then rolled_back on an
abort; a node whose turn was lost (lease expired before it reported) goes back to none and
takes a turn again later - at most ``MAX_LOST_TURNS`` times: a change that cuts its node off from
etcd (its mesh links, over which it reaches the members) loses every turn, is undone every time
and would be tried again without end, so losing that many aborts the rollout. Rollback goes in
reverse order of applying: a node rolls back only once every node that applied after it has.

Every function takes the state and ``now`` and returns a new state, or raises
:class:`TransitionError` for a move not in the table. No I/O (import-linter: pure cores).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from x0tta.common.errors import DecodeError, PermanentError

SIGNING_CONTEXT = b"x0tta-rollout/1\n"
MAX_LOST_TURNS = 2  # turns one node may lose in a rollout before it is aborted (one: a nemesis, a leader election)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SETTING = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")


class TransitionError(PermanentError):
    """A move the rollout's state machine does not allow from where it is."""


class Phase(enum.StrEnum):
    PENDING = "pending"
    APPLYING = "applying"
    SOAKING = "soaking"
    PAUSED = "paused"
    DONE = "done"
    ABORTING = "aborting"
    ROLLED_BACK = "rolled_back"


class Step(enum.StrEnum):
    APPLYING = "applying"
    SOAKING = "soaking"
    DONE = "done"
    WORSE = "worse"
    ROLLED_BACK = "rolled_back"


FINAL = frozenset({Phase.DONE, Phase.ROLLED_BACK})


@dataclass(frozen=True)
class Change:
    """``setting`` (dotted, e.g. ``mesh.orig_interval``) takes ``value``; ``artefact`` names a
    file by its digest instead, for changes that are not one setting."""

    setting: str
    value: Any = None
    artefact: str = ""


@dataclass(frozen=True)
class AbortCriteria:
    """Abort when, among the nodes that reported, the share whose health got worse reaches
    ``worse_share``; or when more than ``heal_harm`` harmful heal actions, or more than
    ``lost_originators`` originators lost, were seen over the soaks."""

    worse_share: float = 0.2
    heal_harm: int = 0
    lost_originators: int = 0

    def __post_init__(self) -> None:  # a float, as from_json reads it, so the signed bytes are the same
        object.__setattr__(self, "worse_share", float(self.worse_share))


@dataclass(frozen=True)
class Rollout:
    id: str
    change: Change
    targets: tuple[str, ...]  # node ids, or prefixes ending in "*" ("gw-*"); "*" is every node
    wave: int = 1
    soak: float = 60.0
    abort: AbortCriteria = field(default_factory=AbortCriteria)
    operator: str = ""
    per_segment: bool = False  # at most one node of each mesh segment in turn at once

    def __post_init__(self) -> None:
        # soak as from_json reads it (a float): a document built with ``soak=60`` signs the bytes
        # every node computes from the stored ``60.0``
        object.__setattr__(self, "soak", float(self.soak))
        if not _ID.fullmatch(self.id):
            raise DecodeError(f"rollout id {self.id!r}: letters, digits, '_', '.', '-', at most 64")
        if not _SETTING.fullmatch(self.change.setting):
            raise DecodeError(f"setting {self.change.setting!r} is not a dotted setting name")
        if not self.targets:
            raise DecodeError("a rollout needs at least one target")
        if self.wave < 1:
            raise DecodeError(f"wave size {self.wave} < 1")
        if not 0 <= self.soak <= 86400:
            raise DecodeError(f"soak {self.soak} s outside 0..86400")
        if not 0 < self.abort.worse_share <= 1:
            raise DecodeError(f"abort worse_share {self.abort.worse_share} outside (0, 1]")

    def selects(self, node: str) -> bool:
        return any(t == node or (t.endswith("*") and node.startswith(t[:-1])) for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "change": {"setting": self.change.setting, "value": self.change.value,
                                      "artefact": self.change.artefact},
            "targets": list(self.targets), "wave": self.wave, "soak": self.soak,
            "abort": {"worse_share": self.abort.worse_share, "heal_harm": self.abort.heal_harm,
                      "lost_originators": self.abort.lost_originators},
            "operator": self.operator, "per_segment": self.per_segment,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Rollout:
        try:
            ch, ab = d["change"], d.get("abort", {})
            return cls(str(d["id"]), Change(str(ch["setting"]), ch.get("value"), str(ch.get("artefact", ""))),
                       tuple(str(t) for t in d["targets"]), int(d.get("wave", 1)), float(d.get("soak", 60.0)),
                       AbortCriteria(float(ab.get("worse_share", 0.2)), int(ab.get("heal_harm", 0)),
                                     int(ab.get("lost_originators", 0))), str(d.get("operator", "")),
                       bool(d.get("per_segment", False)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError(f"rollout document: {exc!r}") from exc


def signed_bytes(rollout: Rollout) -> bytes:
    """What the operator signs: a context string, then the document as canonical JSON (keys
    sorted, no whitespace, UTF-8). Any change to any field changes these bytes."""
    body = json.dumps(rollout.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return SIGNING_CONTEXT + body.encode()


@dataclass(frozen=True)
class Sample:
    """A node's health as the rollout compares it: unhealthy subsystems, harmful heal actions
    so far, originators it sees."""

    unhealthy: int = 0
    heal_harm: int = 0
    originators: int = 0


@dataclass(frozen=True)
class Report:
    worse: bool
    heal_harm: int = 0
    lost_originators: int = 0
    detail: str = ""


def judge(before: Sample, after: Sample) -> Report:
    """Did the change make this node worse? More unhealthy subsystems, new heal harm, or fewer
    originators than before the change."""
    harm = max(0, after.heal_harm - before.heal_harm)
    lost = max(0, before.originators - after.originators)
    worse = after.unhealthy > before.unhealthy or harm > 0 or lost > 0
    detail = (f"unhealthy {before.unhealthy}->{after.unhealthy}, heal harm +{harm}, "
              f"originators {before.originators}->{after.originators}")
    return Report(worse, harm, lost, detail)


@dataclass(frozen=True)
class NodeRecord:
    step: Step
    applied_at: float = 0.0
    reported_at: float = 0.0
    worse: bool = False
    heal_harm: int = 0
    lost_originators: int = 0
    detail: str = ""


@dataclass(frozen=True)
class RolloutState:
    phase: Phase = Phase.PENDING
    targets: tuple[str, ...] = ()  # the selector resolved against the nodes registered at start
    nodes: Mapping[str, NodeRecord] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # nodes in the order they applied (rollback goes backwards)
    resume_to: Phase = Phase.APPLYING  # where a paused rollout resumes
    reason: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    segments: Mapping[str, str] = field(default_factory=dict)  # target -> its mesh segment, at start
    lost_turns: Mapping[str, int] = field(default_factory=dict)  # node -> turns it lost so far

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value, "targets": list(self.targets), "order": list(self.order),
            "resume_to": self.resume_to.value, "reason": self.reason, "started_at": self.started_at,
            "finished_at": self.finished_at, "segments": dict(self.segments),
            "lost_turns": dict(self.lost_turns),
            "nodes": {n: {"step": r.step.value, "applied_at": r.applied_at, "reported_at": r.reported_at,
                          "worse": r.worse, "heal_harm": r.heal_harm, "lost_originators": r.lost_originators,
                          "detail": r.detail} for n, r in self.nodes.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutState:
        try:
            nodes = {str(n): NodeRecord(Step(r["step"]), float(r.get("applied_at", 0)), float(r.get("reported_at", 0)),
                                        bool(r.get("worse", False)), int(r.get("heal_harm", 0)),
                                        int(r.get("lost_originators", 0)), str(r.get("detail", "")))
                     for n, r in d.get("nodes", {}).items()}
            return cls(Phase(d["phase"]), tuple(d.get("targets", ())), nodes, tuple(d.get("order", ())),
                       Phase(d.get("resume_to", "applying")), str(d.get("reason", "")),
                       float(d.get("started_at", 0)), float(d.get("finished_at", 0)),
                       {str(k): str(v) for k, v in d.get("segments", {}).items()},
                       {str(k): int(v) for k, v in d.get("lost_turns", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError(f"rollout state: {exc!r}") from exc

    # -- views ------------------------------------------------------------------------------------

    def in_turn(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.step in (Step.APPLYING, Step.SOAKING)]

    def changed(self) -> list[str]:
        """Nodes that carry the change now, in the order they applied."""
        return [n for n in self.order if n in self.nodes and self.nodes[n].step != Step.ROLLED_BACK]


def _with(state: RolloutState, node: str, rec: NodeRecord | None) -> RolloutState:
    nodes = dict(state.nodes)
    if rec is None:
        nodes.pop(node, None)
    else:
        nodes[node] = rec
    return replace(state, nodes=nodes)


def start(rollout: Rollout, registered: Mapping[str, str] | list[str], now: float) -> RolloutState:
    """A new rollout's state: the selector resolved against the registered nodes (a mapping gives
    each node's mesh segment, "" for none)."""
    segs = dict(registered) if isinstance(registered, Mapping) else dict.fromkeys(registered, "")
    targets = tuple(sorted(n for n in segs if rollout.selects(n)))
    if not targets:
        raise TransitionError(f"rollout {rollout.id}: no registered node matches {list(rollout.targets)}")
    return RolloutState(Phase.APPLYING, targets, {}, (), Phase.APPLYING, "", now,
                        segments={n: segs[n] for n in targets if segs[n]})


def pause(state: RolloutState, now: float) -> RolloutState:
    if state.phase not in (Phase.APPLYING, Phase.SOAKING):
        raise TransitionError(f"cannot pause a rollout that is {state.phase}")
    return replace(state, phase=Phase.PAUSED, resume_to=state.phase)


def resume(state: RolloutState, now: float) -> RolloutState:
    if state.phase != Phase.PAUSED:
        raise TransitionError(f"cannot resume a rollout that is {state.phase}")
    return _settle(replace(state, phase=state.resume_to), now)


def abort(state: RolloutState, reason: str, now: float) -> RolloutState:
    if state.phase not in (Phase.APPLYING, Phase.SOAKING, Phase.PAUSED):
        raise TransitionError(f"cannot abort a rollout that is {state.phase}")
    return _settle(replace(state, phase=Phase.ABORTING, reason=reason), now)


def may_take_turn(state: RolloutState, rollout: Rollout, node: str) -> bool:
    """Rollout applying, ``node`` a target not done, fewer than ``wave`` nodes in turn, and with
    ``per_segment`` no node of its segment in turn (a node without a segment is its own)."""
    if not (state.phase == Phase.APPLYING and node in state.targets and node not in state.nodes
            and len(state.in_turn()) < rollout.wave):
        return False
    seg = state.segments.get(node, "")
    return not (rollout.per_segment and seg and any(state.segments.get(n) == seg for n in state.in_turn()))


def applying(state: RolloutState, rollout: Rollout, node: str, now: float) -> RolloutState:
    """``node`` holds a turn and is about to apply."""
    if not may_take_turn(state, rollout, node):
        raise TransitionError(f"{node} may not take a turn: rollout {state.phase}, "
                              f"in turn {state.in_turn()}, wave {rollout.wave}")
    order = state.order if node in state.order else (*state.order, node)
    return replace(_with(state, node, NodeRecord(Step.APPLYING, applied_at=now)), order=order)


def soaking(state: RolloutState, node: str, now: float) -> RolloutState:
    rec = state.nodes.get(node)
    if rec is None or rec.step != Step.APPLYING:
        raise TransitionError(f"{node} is not applying")
    return _settle(_with(state, node, replace(rec, step=Step.SOAKING)), now)


def turn_lost(state: RolloutState, node: str, now: float) -> RolloutState:
    """``node``'s turn ended before it reported (its lease expired): it has undone its change
    and will take a turn again - unless that was its ``MAX_LOST_TURNS``-th: then the rollout is
    aborted (a change that cuts a node off from etcd would be applied and undone without end)."""
    rec = state.nodes.get(node)
    if rec is None or rec.step not in (Step.APPLYING, Step.SOAKING):
        return state
    order = tuple(n for n in state.order if n != node)
    lost = {**state.lost_turns, node: state.lost_turns.get(node, 0) + 1}
    state = replace(_with(state, node, None), order=order, lost_turns=lost)
    if lost[node] >= MAX_LOST_TURNS and state.phase in (Phase.APPLYING, Phase.SOAKING, Phase.PAUSED):
        state = replace(state, phase=Phase.ABORTING,
                        reason=f"{node} lost its turn {lost[node]} times with the change applied: it may cut the "
                        f"node off from etcd")
    return _settle(state, now)


def reported(state: RolloutState, rollout: Rollout, node: str, report: Report, now: float) -> RolloutState:
    """``node`` soaked and judged its health; the abort criteria are checked on every report."""
    rec = state.nodes.get(node)
    if rec is None or rec.step != Step.SOAKING:
        raise TransitionError(f"{node} is not soaking")
    step = Step.WORSE if report.worse else Step.DONE
    state = _with(state, node, replace(rec, step=step, reported_at=now, worse=report.worse,
                                       heal_harm=report.heal_harm, lost_originators=report.lost_originators,
                                       detail=report.detail))
    why = verdict(state, rollout)
    if why and state.phase in (Phase.APPLYING, Phase.SOAKING, Phase.PAUSED):
        state = replace(state, phase=Phase.ABORTING, reason=why)
    return _settle(state, now)


def verdict(state: RolloutState, rollout: Rollout) -> str:
    """Why the rollout must stop, or "" while its criteria hold."""
    done = [r for r in state.nodes.values() if r.step in (Step.DONE, Step.WORSE)]
    if not done:
        return ""
    worse = sum(r.worse for r in done)
    share = worse / len(done)
    if worse and share >= rollout.abort.worse_share:
        return f"health got worse on {worse} of {len(done)} nodes ({share:.0%} >= {rollout.abort.worse_share:.0%})"
    harm = sum(r.heal_harm for r in done)
    if harm > rollout.abort.heal_harm:
        return f"{harm} harmful heal actions during the soaks (> {rollout.abort.heal_harm})"
    lost = sum(r.lost_originators for r in done)
    if lost > rollout.abort.lost_originators:
        return f"{lost} originators lost during the soaks (> {rollout.abort.lost_originators})"
    return ""


def next_to_roll_back(state: RolloutState) -> str | None:
    """While aborting: the node that applied last among those still changed (reverse order)."""
    if state.phase != Phase.ABORTING:
        return None
    changed = state.changed()
    return changed[-1] if changed else None


def rolled_back(state: RolloutState, node: str, now: float) -> RolloutState:
    if next_to_roll_back(state) != node:
        raise TransitionError(f"{node} may not roll back now (next: {next_to_roll_back(state)})")
    return _settle(_with(state, node, replace(state.nodes[node], step=Step.ROLLED_BACK)), now)


def _settle(state: RolloutState, now: float) -> RolloutState:
    """The phase that follows from the nodes' steps."""
    if state.phase == Phase.ABORTING and not state.changed() and not state.in_turn():
        return replace(state, phase=Phase.ROLLED_BACK, finished_at=now)
    if state.phase in (Phase.APPLYING, Phase.SOAKING):
        steps = [state.nodes[n].step if n in state.nodes else None for n in state.targets]
        if all(s in (Step.DONE, Step.WORSE) for s in steps):  # worse ones below the criteria are accepted
            return replace(state, phase=Phase.DONE, finished_at=now)
        if all(s is not None for s in steps):
            return replace(state, phase=Phase.SOAKING)
    return state

