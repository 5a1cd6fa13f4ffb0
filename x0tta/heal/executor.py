"""Execute: apply the loop's decisions, idempotently, behind breakers and rate limits.

Every decision goes through, in order:

1. **dry run** - with ``[heal] dry_run`` nothing is changed; the result says ``dry_run``.
2. **circuit breaker** (pybreaker, one per action kind and target, :mod:`x0tta.heal.breakers`):
   an open breaker refuses with the time left. A rollback (undoing an action that did not help)
   skips breakers and rate limits: undoing harm is always allowed.
3. **token bucket** (one per action kind and target, :mod:`x0tta.heal.core.ratelimit`): at most
   ``rate_burst`` at once and ``rate_per_minute`` sustained.
4. the **actuator** - the kernel calls, through the mesh client (generic netlink) and rtnetlink.

The breaker trial stays open after a successful call until the loop has verified the effect
(:meth:`Executor.verified`): an action that ran but did not help is a failure for its breaker.

Actions and what they do (all idempotent: doing one twice leaves the node as doing it once):

=====================  =========================================================================
steer_off             detach the hard interface from the mesh interface (``ip link set IF
                      nomaster``), or set its hop penalty (SET_HARDIF ``hop_penalty``)
restore_hardif        attach it again / set its previous hop penalty. A restore (not a rollback)
                      of a detach attaches it with ``[heal] reattach_hop_penalty`` and lowers
                      that to the previous hop penalty once the link is rated (a *hold*:
                      :meth:`Executor.release_holds`)
reselect_gateway      SET_MESH ``gw_sel_class`` to its current value: batman-adv re-selects
tune_orig_interval    SET_MESH ``orig_interval`` to the unstable-mesh interval
restore_orig_interval SET_MESH ``orig_interval`` back to its previous value
reapply_settings      SET_MESH / SET_HARDIF of the values that drifted from ``[mesh]``
restart_subsystem     ask the agent's supervisor to restart a subsystem
pause_aggregation     SET_MESH ``aggregated_ogms`` off (OGMs forwarded at once)
resume_aggregation    SET_MESH ``aggregated_ogms`` back to its previous value
quarantine            the guard's quarantine (handed over by the wiring): the neighbour's MAC out
                      of the admitted map, its peer sessions closed and refused, for a TTL
=====================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from x0tta.common.errors import PermanentError
from x0tta.heal.breakers import BreakerOpen, Breakers, Clock, Trial
from x0tta.heal.core.loop import Result
from x0tta.heal.core.model import ActionKind, Decision, Op
from x0tta.heal.core.plan import mesh_values, reattach_hold
from x0tta.heal.core.ratelimit import TokenBucket


class Actuator(Protocol):
    """The kernel side of the actions; :class:`MeshActuator` is the real one."""

    async def detach(self, hardif: str) -> None: ...
    async def attach(self, hardif: str) -> None: ...
    async def set_hardif(self, hardif: str, values: Mapping[str, Any]) -> None: ...
    async def set_mesh(self, values: Mapping[str, Any]) -> None: ...
    async def mesh_settings(self) -> dict[str, Any]: ...
    async def desired_drift(self) -> dict[str, Any]: ...
    async def restart_subsystem(self, name: str) -> None: ...
    async def quarantine(self, mac: str, ttl: float, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Hold:
    """A re-attached hard interface's raised hop penalty, due to be lowered."""

    hardif: str
    due: float  # the executor's clock
    value: int  # the hop penalty it holds
    lower_to: int  # its hop penalty before the detach

    def to_json(self) -> dict[str, Any]:
        return {"hardif": self.hardif, "value": self.value, "lower_to": self.lower_to}


class Executor:
    def __init__(
        self,
        actuator: Actuator,
        *,
        dry_run: bool,
        breakers: Breakers,
        rate_burst: int,
        rate_per_minute: float,
        clock: Clock,
        on_breaker: Callable[[str, str], None] | None = None,
        reattach_hop_penalty: int = 0,
        on_holds: Callable[[], None] | None = None,
    ) -> None:
        self.actuator = actuator
        self.dry_run = dry_run
        self.breakers = breakers
        self.rate_burst = rate_burst
        self.rate = rate_per_minute / 60.0
        self.clock = clock
        self.reattach_hop_penalty = reattach_hop_penalty
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.trials: dict[str, Trial] = {}  # decision id -> breaker trial awaiting verification
        self.holds: dict[str, Hold] = {}  # hard interface -> its hold after a re-attach
        # told when ``holds`` changed, before the kernel is: the mesh reconcile must know a held
        # penalty is intended before batman-adv's config event of it (and not after it is lowered)
        self._on_holds = on_holds or (lambda: None)
        # hard interface -> its hop penalty before a hold that a new steer-off cut short (the
        # steer-off saw the held value as its "previous" one; its restore puts back this instead)
        self._before_hold: dict[str, int] = {}

    def resume_holds(self, restored: Mapping[str, int], penalties: Mapping[str, int | None]) -> list[Hold]:
        """After a restart: holds a killed agent left behind. ``restored``: hard interface -> its
        hop penalty before a detach whose restore this agent applied lately (the store's steer-off
        records); ``penalties``: their hop penalty now. One still at ``reattach_hop_penalty`` is
        held again, due at once: the next release lowers it."""
        value = self.reattach_hop_penalty
        resumed = [Hold(hardif, self.clock(), value, lower_to) for hardif, lower_to in sorted(restored.items())
                   if value > lower_to and penalties.get(hardif) == value and hardif not in self.holds]
        for hold in resumed:
            self.holds[hold.hardif] = hold
        if resumed:
            self._on_holds()
        return resumed

    async def release_holds(self, everything: bool = False) -> list[tuple[Hold, str]]:
        """Lower the hop penalty of the re-attached hard interfaces whose hold is due (all of them
        with ``everything``: the agent stops). Returns each with "" or why the kernel refused it;
        a refused one stays held and is tried again on the next call."""
        now = self.clock()
        done: list[tuple[Hold, str]] = []
        for hold in list(self.holds.values()):
            if not everything and now < hold.due:
                continue
            del self.holds[hold.hardif]
            self._on_holds()
            try:
                await self.actuator.set_hardif(hold.hardif, {"hop_penalty": hold.lower_to})
            except Exception as exc:
                self.holds.setdefault(hold.hardif, hold)
                self._on_holds()
                done.append((hold, f"{type(exc).__name__}: {exc}"))
            else:
                done.append((hold, ""))
        return done

    async def execute(self, d: Decision) -> Result:
        a = d.action
        if self.dry_run:
            return Result(d.id, "dry_run", f"would {d.op.value} {a.kind.value} on {a.target}")
        if d.op == Op.ROLLBACK:
            try:
                await self._act(d)
            except Exception as exc:  # the kernel refused; retried next cycle
                return Result(d.id, "error", f"{type(exc).__name__}: {exc}")
            return Result(d.id, "applied")
        key = (a.kind.value, a.target)
        try:
            trial = self.breakers.begin(*key)
        except BreakerOpen as exc:
            return Result(d.id, "breaker_open", str(exc), retry_in=exc.delay or 0.0)
        now = self.clock()
        bucket = self.buckets.get(key) or TokenBucket.full(self.rate_burst, self.rate, now)
        ok, bucket = bucket.take(now)
        self.buckets[key] = bucket
        if not ok:
            trial.success()  # not a failure of the action: it never ran
            wait = bucket.wait(now)
            return Result(d.id, "rate_limited", f"{a.kind.value} on {a.target}: next in {wait:.1f}s", retry_in=wait)
        try:
            await self._act(d)
        except Exception as exc:
            trial.failure(str(exc))
            return Result(d.id, "error", f"{type(exc).__name__}: {exc}")
        self.trials[d.id] = trial
        return Result(d.id, "applied")

    def verified(self, decision_id: str, ok: bool, reason: str) -> None:
        """The loop judged an applied action: close its breaker trial accordingly."""
        trial = self.trials.pop(decision_id, None)
        if trial is None:
            return
        if ok:
            trial.success()
        else:
            trial.failure(reason)

    def forget(self, decision_ids: list[str]) -> None:
        """Decisions that will never be verified (their incident closed): count as success."""
        for i in decision_ids:
            self.verified(i, True, "")

    async def _act(self, d: Decision) -> None:
        a = d.action
        kind = a.kind
        hardif = a.param("hardif")
        if kind == ActionKind.STEER_OFF:
            if a.param("method") == "detach":
                await self.actuator.detach(hardif)
            else:
                await self.actuator.set_hardif(hardif, {"hop_penalty": a.param("hop_penalty")})
            # a hold this steer-off cut short: nothing lowers it now, the steer-off's undo does
            # (a steer-off the kernel refused leaves the hold to end as planned)
            hold = self.holds.pop(hardif, None)
            if hold is not None:
                self._before_hold[hardif] = hold.lower_to
                self._on_holds()
        elif kind == ActionKind.RESTORE_HARDIF:
            before = self._before_hold.get(hardif)
            previous = before if before is not None else a.param("previous_hop_penalty")
            previous = 0 if previous is None else previous
            if a.param("method") == "detach":
                await self._attach(hardif, previous, hold=d.op == Op.RESTORE, reset=before is not None)
            else:
                await self.actuator.set_hardif(hardif, {"hop_penalty": previous})
            self._before_hold.pop(hardif, None)  # kept until done: a failed undo is tried again
        elif kind in (ActionKind.TUNE_ORIG_INTERVAL, ActionKind.RESTORE_ORIG_INTERVAL,
                      ActionKind.PAUSE_AGGREGATION, ActionKind.RESUME_AGGREGATION):
            values = mesh_values(a)
            if values:
                await self.actuator.set_mesh(values)
        elif kind == ActionKind.RESELECT_GATEWAY:
            current = await self.actuator.mesh_settings()
            await self.actuator.set_mesh({"gw_sel_class": current.get("gw_sel_class") or 20})
        elif kind == ActionKind.REAPPLY_SETTINGS:
            drift = await self.actuator.desired_drift()
            if drift:
                await self.actuator.set_mesh(drift)
        elif kind == ActionKind.RESTART_SUBSYSTEM:
            await self.actuator.restart_subsystem(a.param("subsystem"))
        elif kind == ActionKind.QUARANTINE:
            await self.actuator.quarantine(a.param("mac"), a.param("ttl"), a.param("reason"))
        else:  # pragma: no cover - every kind is handled above
            raise ValueError(f"unknown action {kind}")

    async def _attach(self, hardif: str, previous: int, hold: bool, reset: bool = False) -> None:
        """Attach ``hardif`` again; with ``hold`` (a restore, not the rollback of a harmful detach,
        which must give the link back at once) at ``reattach_hop_penalty`` until it is rated.
        ``reset``: the detach cut a hold short, so the kernel still has the held penalty."""
        value = self.reattach_hop_penalty
        if not hold or value <= previous:
            await self.actuator.attach(hardif)
            if reset:
                await self.actuator.set_hardif(hardif, {"hop_penalty": previous})
            return
        # batman-adv takes a hard interface's settings only while it is attached: at once after
        # (its neighbours need a few OGMs to rate it at all). A refused penalty fails the restore,
        # which the loop tries again: the attach is then already done
        interval = (await self.actuator.mesh_settings()).get("orig_interval")
        await self.actuator.attach(hardif)
        self.holds[hardif] = Hold(hardif, self.clock() + reattach_hold(interval), value, previous)
        self._on_holds()
        try:
            await self.actuator.set_hardif(hardif, {"hop_penalty": value})
        except Exception:
            del self.holds[hardif]
            self._on_holds()
            raise


class MeshActuator:
    """The real actuator: the mesh client (generic netlink) and link control (rtnetlink)."""

    def __init__(
        self,
        mesh: Any,
        links: Any,
        meshif: str,
        desired: Callable[[], Mapping[str, Any]] | None = None,
        restart: Callable[[str], Awaitable[None]] | None = None,
        quarantine: Callable[[str, float, str], str] | None = None,
    ) -> None:
        self.mesh = mesh  # x0tta.mesh.client.MeshClient
        self.links = links  # x0tta.heal.links.Links
        self.meshif = meshif
        self._desired = desired
        self._restart = restart
        self._quarantine = quarantine  # the guard's (mac, ttl, reason) -> "" or why not

    async def _attached(self, hardif: str) -> bool:
        state = await self.links.state(fresh=True)
        mesh, hard = state.get(self.meshif), state.get(hardif)
        return mesh is not None and hard is not None and hard.master == mesh.index

    async def detach(self, hardif: str) -> None:
        if await self._attached(hardif):
            await self.links.detach(hardif)

    async def attach(self, hardif: str) -> None:
        if not await self._attached(hardif):
            await self.links.attach(self.meshif, hardif)

    async def set_hardif(self, hardif: str, values: Mapping[str, Any]) -> None:
        await self.mesh.set_hardif(self.meshif, hardif, values)

    async def set_mesh(self, values: Mapping[str, Any]) -> None:
        await self.mesh.set_mesh(self.meshif, values)

    async def mesh_settings(self) -> dict[str, Any]:
        return dict((await self.mesh.mesh_info(self.meshif)).settings())

    async def desired_drift(self) -> dict[str, Any]:
        if self._desired is None:
            return {}
        current = await self.mesh_settings()
        return {k: v for k, v in self._desired().items() if k in current and current[k] != v}

    async def restart_subsystem(self, name: str) -> None:
        if self._restart is None:
            raise RuntimeError("this agent offers no way to restart a subsystem")
        await self._restart(name)

    async def quarantine(self, mac: str, ttl: float, reason: str) -> None:
        if self._quarantine is None:
            raise QuarantineRefused("this agent runs no guard to quarantine through")
        why = self._quarantine(mac, ttl, reason)  # a few map updates: microseconds, on the loop
        if why:
            raise QuarantineRefused(why)


class QuarantineRefused(PermanentError):
    """The guard would not quarantine a neighbour (its share cap, a MAC the config admits)."""
