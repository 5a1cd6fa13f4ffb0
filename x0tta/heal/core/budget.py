"""The load budget: how long a remedy that raises every node's load may be in force.

Two remedies cost the whole mesh more for as long as they last, not only this node:
``tune_orig_interval`` (this node's OGMs every ``unstable_orig_interval``, 50 ms instead of 1 s:
~20x the OGMs it originates, and every node forwards them) and ``pause_aggregation`` (every OGM
forwarded in a frame of its own). Each kind may be in force at most ``load_budget`` seconds within
any ``load_budget_window``: the planner refuses one whose budget is spent (the reason is kept in
the decision, like a failed precondition), and the undo step takes back one in force past it,
whatever symptom still asks for it. Steer-offs and the other remedies have no budget of their
own, but a steer-off of a failing link goes with its faster OGMs or not at all: one whose
companion the budget refuses is not taken, and one whose companion the budget takes back goes
with it (without them the other nodes keep routing towards this node through the link for
seconds: the chaos lab measured a 7.5 s outage two hops away on a partial loss that batman-adv
alone did not have).

Accounting (:class:`LoadUse`, one per kind, in the knowledge): the spans of time a kind was in
force and the start of the running one, sampled at every step, settle and resume from the records
(a kind is in force while a record of it holds its target: decided, applied, or waiting for its
undo). Sampling at those times makes the account exact to within one cycle. Pure: ``now`` is
always the caller's.

A planned remedy is admitted only if the budget left covers its verification (``verify_after``):
an action is undone only once verified (the lifecycle has no undo of an applied, unjudged one),
so an admitted remedy never outlives its budget by more than the cycle that sees it spent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from x0tta.config.heal import HealSettings
from x0tta.heal.core.model import ActionKind

LOAD_RAISING = (ActionKind.TUNE_ORIG_INTERVAL, ActionKind.PAUSE_AGGREGATION)

_SPENT = "load budget spent"


@dataclass(frozen=True, slots=True)
class LoadUse:
    """When one load-raising kind was in force: closed ``(start, end)`` spans that may still
    reach into the window, and the start of the span running now (``None``: not in force)."""

    spans: tuple[tuple[float, float], ...] = ()
    since: float | None = None

    def spent(self, now: float, window: float) -> float:
        """Seconds in force within ``[now - window, now]``."""
        start = now - window
        total = sum(max(0.0, min(b, now) - max(a, start)) for a, b in self.spans)
        if self.since is not None:
            total += max(0.0, now - max(self.since, start))
        return total

    def advance(self, now: float, on: bool, window: float) -> LoadUse:
        """The account at ``now``, the kind being in force from now on (``on``) or not."""
        spans = tuple(sp for sp in self.spans if sp[1] > now - window)
        since = self.since
        if on and since is None:
            since = now
        elif not on and since is not None:
            spans, since = (*spans, (since, max(since, now))), None
        if spans == self.spans and since == self.since:
            return self
        return LoadUse(spans, since)


def spent(load: dict[ActionKind, LoadUse], kind: ActionKind, now: float, s: HealSettings) -> float:
    use = load.get(kind)
    return 0.0 if use is None else use.spent(now, s.load_budget_window)


def refusal(kind: ActionKind, verify_after: float, used: float, s: HealSettings) -> str:
    """Why a remedy of ``kind`` may not be taken now, with ``used`` seconds of its budget spent
    (``""``: it may, or it has no budget). It must have time left to be verified."""
    if kind not in LOAD_RAISING or used + verify_after <= s.load_budget:
        return ""
    return (f"{_SPENT}: {kind.value} in force {used:.1f} s of the last {s.load_budget_window:g} s "
            f"(load_budget {s.load_budget:g} s, {verify_after:g} s needed to verify it)")


def reserved(kind: ActionKind, used: float, s: HealSettings, verify_after: float = 0.0) -> str:
    """Why a remedy of ``kind`` asked for by another node (a mesh alert's faster OGMs) may not be
    taken (with ``verify_after`` to run), or kept: half of the budget is kept for this node's own
    faults (``""``: it may)."""
    if kind not in LOAD_RAISING or used + verify_after <= s.load_budget / 2:
        return ""
    return (f"{_SPENT} for others: {kind.value} in force {used:.1f} s of the last {s.load_budget_window:g} s, "
            f"half of load_budget ({s.load_budget:g} s) is kept for this node's own faults")


def overrun(kind: ActionKind, used: float, s: HealSettings) -> str:
    """Why a remedy of ``kind`` in force must be undone now (``""``: it need not)."""
    if kind not in LOAD_RAISING or used < s.load_budget:
        return ""
    return (f"{_SPENT}: {kind.value} in force {used:.1f} s of the last {s.load_budget_window:g} s "
            f"(load_budget {s.load_budget:g} s)")


def by_budget(reason: str) -> bool:
    """``reason`` (a refusal, or an undo's reason) is the budget's."""
    return reason.startswith(_SPENT)


def advance(load: dict[ActionKind, LoadUse], on: Iterable[ActionKind], now: float,
            s: HealSettings) -> dict[ActionKind, LoadUse]:
    """Every kind's account at ``now``, the kinds in ``on`` in force from now on."""
    live = set(on)
    out = {}
    for kind in LOAD_RAISING:
        use = load.get(kind, LoadUse()).advance(now, kind in live, s.load_budget_window)
        if use.spans or use.since is not None:
            out[kind] = use
    return out


def rebuilt(uses: Iterable[tuple[ActionKind, float, float | None]], now: float,
            s: HealSettings) -> dict[ActionKind, LoadUse]:
    """Accounts from what records say: ``(kind, start, end)`` per record of a load-raising kind,
    ``end`` ``None`` while it is still in force. Overlapping spans of one kind count once."""
    start = now - s.load_budget_window
    per: dict[ActionKind, list[tuple[float, float | None]]] = {}
    for kind, a, b in uses:
        if kind in LOAD_RAISING and (b is None or b > start):
            per.setdefault(kind, []).append((a, b))
    out = {}
    for kind, spans in per.items():
        merged: list[tuple[float, float]] = []  # an open span ends at infinity
        for a, b in sorted((a, math.inf if b is None else b) for a, b in spans):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        since = merged.pop()[0] if merged[-1][1] == math.inf else None
        out[kind] = LoadUse(tuple(merged), since)
    return out
