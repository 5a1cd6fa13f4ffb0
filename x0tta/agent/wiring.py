"""Which subsystems this agent runs, built from settings.

Each entry is ``name -> factory(settings) -> Subsystem``; a factory imports its package only
when called, so a node that disables a subsystem never pays for importing it. Order matters:
subsystems start in this order (identity before peer, the fleet plane before the heal loop that
hands it events, mesh before heal, guard before the peer sessions that admit through it and the
probes that load its maps).

The guard and the probes share one eBPF object: the probes load it, and this module hands the
guard its two maps (:func:`guard_maps`) each time they do; the guard never imports the probes.
Heal's liveness prober corroborates a late neighbour's silence with the probes' per-neighbour
counters: this module hands it ``probes.last_rx``; heal and the probes never import each other.

The coord subsystem (coordinated rollouts, when ``[coord] endpoints`` is set) applies a change of
``mesh.<name>`` to the running mesh subsystem through :class:`MeshHold`, the path the fleet's
``set_mesh`` command takes too (other settings go to a file of settings), and judges it by the
agent's health, the heal loop's harm events (:func:`harm_counter`) and the mesh's originators
(:func:`coord_sample`).

The replicated mesh state (``meshstate``) signs with the identity's SVID and registers its sync
methods with the peer subsystem, which carries them; neither knows the other. It hears the heal
loop's incidents opened and closed (a heal listener) and the guard's quarantines and releases
(:func:`quarantine_claims`), and writes them as this node's entries without blocking either. On
the CA node it writes the built-in CA's revocations too (:func:`ca_revocations`); on every node
the revocations in force (written by one of the mesh's revokers) become the peer subsystem's
deny-list (:func:`revocation_denier`): the revoked node's sessions are sent away and refused, and
the guard, which hears them end as ``revoked``, ends its admission at once; it also ends the
bindings of the revoked identity whose sessions had gone already (:func:`revocation_unbinder`).

The guard's detectors see the mesh through :func:`guard_observer`: the probes' last poll and the
mesh subsystem's last table dump, as the guard's own observation types.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from x0tta.common.subsystem import Subsystem
from x0tta.config.schema import AgentSettings

Factory = Callable[[AgentSettings], Subsystem]


@dataclass(frozen=True)
class AgentHooks:
    """What the agent itself offers to subsystems that act on other subsystems (the heal loop)."""

    subsystem_health: Callable[[], list[dict[str, Any]]] | None = None  # status()["subsystems"]
    restart_subsystem: Callable[[str], Awaitable[None]] | None = None  # the supervisor's restart


def factories(settings: AgentSettings, hooks: AgentHooks | None = None) -> dict[str, Factory]:
    """The subsystems enabled by ``settings``, in start order."""
    hooks = hooks or AgentHooks()
    # Subsystems that others consume (the peer transport takes the identity service's SVID
    # source) are built once per agent and shared through this dict.
    shared: dict[str, Subsystem] = {}

    def once(name: str, build: Callable[[], Subsystem]) -> Subsystem:
        if name not in shared:
            shared[name] = build()
        return shared[name]

    def identity(s: AgentSettings) -> Subsystem:
        return once("identity", lambda: _identity(s))

    # Handshake outcomes on their way from the peer subsystem to the guard's detectors (drained at
    # every look; bounded, so that a handshake flood between two looks cannot grow it without end).
    handshakes: deque[Any] = deque(maxlen=HANDSHAKES_KEPT)

    def peer(s: AgentSettings) -> Subsystem:
        def build() -> Subsystem:
            neighbours = _mesh_neighbours(shared) if s.mesh.enabled and s.peer.dial_neighbors else None
            service = _peer(s, identity(s) if s.identity.enabled else None, neighbours)
            if s.identity.enabled:
                # SVID renewal through the mesh: CSRs to CA nodes over the peer sessions, and the
                # CA node's answers to its peers' (docs/identity.md, "Renewal through the mesh")
                wire_renewal(identity(s), service, s.identity)
            if s.guard.enabled:
                # An authenticated session binds the neighbour's MAC to its SPIFFE ID and admits it
                # into the eBPF guard; a revocation, or its last session gone for longer than the
                # guard's session_grace, ends that (docs/guard.md, "Admission"). A quarantined
                # neighbour's sessions are closed and refused.
                from x0tta.guard.enforce import PeerAdmission

                gsvc = guard(s)
                admission = PeerAdmission(gsvc.guard)  # type: ignore[attr-defined]
                service.subscribe(admission)  # type: ignore[attr-defined]
                service.gate = admission.refusal  # type: ignore[attr-defined]
                gsvc.on_quarantine.append(quarantine_closer(service, admission))  # type: ignore[attr-defined]
                service.on_handshake(handshake_recorder(  # type: ignore[attr-defined]
                    handshakes, on_refused=gsvc.look_soon))  # type: ignore[attr-defined]
            return service

        return once("peer", build)

    # What the healing loop changed on purpose (a detached hard interface, a tuned OGM interval),
    # shared with the mesh reconcile so that it does not undo it as drift.
    overrides: dict[str, Any] = {}

    def mesh(s: AgentSettings) -> Subsystem:
        return once("mesh", lambda: _mesh(s, overrides))

    # The fleet plane publishes what the others hand it (docs/fleet.md): the heal loop's events; and
    # runs operators' signed commands through the handlers registered here (fleet_actions).
    def fleet(s: AgentSettings) -> Subsystem:
        def build() -> Subsystem:
            service = _fleet(s, hooks)
            fleet_actions(service.actions, shared, hooks)  # type: ignore[attr-defined]
            return service

        return once("fleet", build)

    # Harmful heal actions seen so far: the coord subsystem's rollouts compare them before and after
    # a change (docs/coordination.md).
    heal_harm = [0]

    def heal(s: AgentSettings) -> Subsystem:
        service = _heal(s, overrides, hooks)
        if s.fleet.active:
            service.listeners.append(fleet(s).heal_event)  # type: ignore[attr-defined]
        if meshstate_on(s):
            # incidents opened and closed become this node's summaries in the replicated state
            service.listeners.append(meshstate(s).heal_event)  # type: ignore[attr-defined]
        if s.coord.active:
            service.listeners.append(harm_counter(heal_harm))  # type: ignore[attr-defined]
        if s.peer.enabled and s.identity.enabled:
            # Once this node has an identity, liveness probes are keyed by the neighbours' sessions,
            # and only those keys are taken (docs/heal.md, "authenticated probes").
            ident = identity(s)
            service.identity_ready = lambda: bool(getattr(ident, "ready", False))  # type: ignore[attr-defined]
            peer(s).subscribe(service.peer_changed)  # type: ignore[attr-defined]
        if s.mesh.enabled:
            # settings operators hold by fleet command are what is desired, not drift to put back
            msvc = mesh(s)
            service.operator_mesh = lambda: dict(msvc.operator["mesh"])  # type: ignore[attr-defined]
        if s.probes.enabled:
            # batman-adv frames still arriving from a late neighbour mean that direction is alive
            # (docs/heal.md, "Liveness probes"); None until the eBPF object is loaded
            service.neighbour_rx = probes(s).last_rx  # type: ignore[attr-defined]
        if s.guard.enabled:
            # the guard's detectors' findings become `threat` symptoms, answered by quarantining
            # the neighbour through the guard (docs/heal.md, "Quarantine")
            gsvc = guard(s)
            service.threats = gsvc.active_threats  # type: ignore[attr-defined]
            service.quarantined = gsvc.quarantined_macs  # type: ignore[attr-defined]
            service.quarantine = gsvc.quarantine  # type: ignore[attr-defined]
        return service

    # The peer subsystem admits and revokes MACs through ``guard.guard`` (docs/ebpf.md); the
    # guard's detectors look at what the probes and the mesh subsystem last saw (docs/guard.md).
    def guard(s: AgentSettings) -> Subsystem:
        def build() -> Subsystem:
            service = _guard(s)
            service.observe = guard_observer(shared, handshakes)  # type: ignore[attr-defined]
            if s.identity.enabled:
                # mode auto enforces only once this node has an identity (docs/guard.md)
                ident = identity(s)
                service.identity_ready = lambda: bool(getattr(ident, "ready", False))  # type: ignore[attr-defined]
            # the peer subsystem admits by handshake: without it an identity admits nobody
            service.handshakes_admit = s.peer.enabled  # type: ignore[attr-defined]
            return service

        return once("guard", build)

    # The probes are shared too: they load the guard's maps and the MAPE-K monitor reads
    # ``probes.neighbors_seen()`` (docs/ebpf.md).
    def probes(s: AgentSettings) -> Subsystem:
        def build() -> Subsystem:
            service = _probes(s)
            if s.guard.enabled:
                attach = guard(s).kernel_maps  # type: ignore[attr-defined]
            else:
                # Nothing would admit a neighbour, so nothing may be dropped: the maps are held in
                # observe by a guard of no subsystem (static MACs leave, dynamic ones stay pinned).
                from x0tta.guard.enforce import Guard

                attach = Guard("observe").attach
            service.share_maps(guard_maps(attach))  # type: ignore[attr-defined]
            return service

        return once("probes", build)

    # Coordinated rollouts apply a mesh setting through the running mesh subsystem (other settings
    # through a file) and judge it by the agent's health, heal harm and the originators the mesh
    # sees (docs/coordination.md).
    def coord(s: AgentSettings) -> Subsystem:
        return once("coord", lambda: _coord(s, hooks, shared, heal_harm))

    # The replicated mesh state signs with the identity's SVID and syncs over the peer sessions
    # (docs/fleet.md, "Replicated mesh state").
    def meshstate(s: AgentSettings) -> Subsystem:
        def build() -> Subsystem:
            service = _meshstate(identity(s), peer(s), s.mesh.hard_interfaces)
            from x0tta.fleet.stateservice import holds_ca

            if holds_ca(s):
                # the CA node: what `x0tta ca revoke` revoked enters the state, once it is one of
                # the mesh's revokers (docs/fleet.md, "Revocations")
                service.ca_revocations = ca_revocations(s.identity.ca_dir)  # type: ignore[attr-defined]
            # every node: the revocations in force close and refuse the revoked node's sessions,
            # and end the guard's binding of it even where no session is up
            service.on_revocations.append(revocation_denier(peer(s)))  # type: ignore[attr-defined]
            if s.guard.enabled:
                service.on_revocations.append(revocation_unbinder(guard(s)))  # type: ignore[attr-defined]
            if s.guard.enabled:
                # this node's quarantines, as its claims in the state: written when the guard
                # quarantines or releases, and looked at every round (a TTL runs out)
                gsvc = guard(s)
                service.quarantines = quarantine_claims(gsvc)  # type: ignore[attr-defined]
                gsvc.on_quarantine.append(service.quarantine_changed)  # type: ignore[attr-defined]
                gsvc.on_release.append(service.quarantine_changed)  # type: ignore[attr-defined]
            return service

        return once("meshstate", build)

    table: dict[str, tuple[bool, Factory]] = {
        "identity": (settings.identity.enabled, identity),
        "fleet": (settings.fleet.active, fleet),
        "coord": (settings.coord.active, coord),
        "mesh": (settings.mesh.enabled, mesh),
        "heal": (settings.heal.enabled, heal),
        "guard": (settings.guard.enabled, guard),
        "peer": (settings.peer.enabled, peer),
        "meshstate": (meshstate_on(settings), meshstate),
        "probes": (settings.probes.enabled, probes),
    }
    return {name: factory for name, (enabled, factory) in table.items() if enabled}


def meshstate_on(settings: AgentSettings) -> bool:
    """The replicated state runs when turned on, with the identity it signs with and the peer
    sessions that carry it."""
    return settings.meshstate.enabled and settings.identity.enabled and settings.peer.enabled


def quarantine_claims(guard: Subsystem) -> Callable[[], list[dict[str, Any]]]:
    """The guard's quarantines in force as this node's claims in the replicated state: one per
    SPIFFE ID (every MAC quarantined with it; the latest end) or, for a neighbour that never
    authenticated, per MAC."""

    def claims() -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for q in guard.quarantines_held():  # type: ignore[attr-defined]
            target = q["spiffe_id"] or q["mac"]
            c = out.setdefault(target, {"target": target, "macs": [], "reason": q["reason"], "until": q["until"]})
            c["macs"].append(q["mac"])
            c["until"] = max(c["until"], q["until"])
        return list(out.values())

    return claims


def ca_revocations(ca_dir: str) -> Callable[[], list[dict[str, Any]]]:
    """The built-in CA's revoked certificates, read from its directory (blocking: the meshstate
    subsystem calls it in a thread)."""
    from x0tta.identity.ca import revocation_records

    return lambda: revocation_records(ca_dir)


def revocation_denier(peer: Subsystem) -> Callable[[Mapping[str, Mapping[str, Any]]], None]:
    """A listener for ``MeshStateService.on_revocations``: the revocations in force (revoked SPIFFE
    ID -> ``by``, ``reason``, ``serials``) as the peer subsystem's deny-list, by ID and by serial."""
    from x0tta.peer.core.deny import DenyList

    def deny(revoked: Mapping[str, Mapping[str, Any]]) -> None:
        ids = {sid: f"{v['reason']} (by {v['by']})" for sid, v in revoked.items()}
        serials = {int(x, 16): f"{v['reason']} ({sid}, by {v['by']})" for sid, v in revoked.items()
                   for x in v.get("serials", ())}
        peer.deny(DenyList(ids, serials))  # type: ignore[attr-defined]

    return deny


def revocation_unbinder(guard: Subsystem) -> Callable[[Mapping[str, Any]], None]:
    """A listener for ``MeshStateService.on_revocations``: the guard ends the bindings and
    admissions of every revoked SPIFFE ID at once (a binding whose sessions closed otherwise would
    outlive them by ``session_grace``)."""

    def unbind(revoked: Mapping[str, Any]) -> None:
        for spiffe_id in revoked:
            guard.revoked(spiffe_id)  # type: ignore[attr-defined]

    return unbind


def _meshstate(identity: Subsystem, peer: Subsystem, hard_interfaces: tuple[str, ...]) -> Subsystem:
    from x0tta.fleet.stateservice import MeshStateService

    return MeshStateService(identity, peer, macs=lambda: interface_macs(hard_interfaces))  # type: ignore[arg-type]


def interface_macs(names: tuple[str, ...], sysfs: str = "/sys/class/net") -> list[str]:
    """The MAC addresses of the mesh's hard interfaces that exist (the node's registry entry lists
    them). Reads sysfs: call it off the event loop."""
    out = []
    for name in names:
        try:
            with open(f"{sysfs}/{name}/address") as f:
                out.append(f.read().strip().lower())
        except OSError:
            continue
    return out


def wire_renewal(identity: Any, peer: Any, settings: Any) -> None:
    """Let ``identity`` (an IdentityService) renew through ``peer``'s sessions, and serve renewals
    to peers when this node is a CA node (``[identity] ca_dir``): the request method, the Hello
    capability, and the transport to the CA nodes ``[identity] ca_ids`` names or that advertise it."""
    from x0tta.common.spiffe_id import SpiffeId
    from x0tta.identity.core import renewal

    async def handle(session: Any, body: bytes) -> bytes:
        return await identity.serve_renewal(session.peer.spiffe_id, session.peer.serial, body)  # type: ignore[no-any-return]

    peer.register_method(renewal.METHOD, handle)
    if identity.serves_renewals(settings):
        peer.capabilities = (*peer.capabilities, renewal.CAPABILITY)
    named = frozenset(str(SpiffeId.parse(x)) for x in settings.ca_ids)

    def is_ca(spiffe_id: str, capabilities: tuple[str, ...]) -> bool:
        return spiffe_id in named if named else renewal.CAPABILITY in capabilities

    async def transport(body: bytes, timeout: float) -> tuple[str, bytes]:
        from x0tta.identity.renewal import NoCaNode
        from x0tta.peer.service import NoSession

        try:
            return await peer.request_any(renewal.METHOD, body, is_ca, timeout=timeout)  # type: ignore[no-any-return]
        except NoSession as exc:
            raise NoCaNode(str(exc)) from None

    identity.renewal_transport = transport


def _identity(settings: AgentSettings) -> Subsystem:
    from x0tta.identity.service import IdentityService

    return IdentityService()


def _peer(
    settings: AgentSettings, identity: Subsystem | None, neighbours: Callable[[], list[str]] | None
) -> Subsystem:
    from x0tta.peer.service import PeerService

    return PeerService(identity, neighbours=neighbours)  # type: ignore[arg-type]


def _mesh_neighbours(shared: dict[str, Subsystem]) -> Callable[[], list[str]]:
    """batman-adv's neighbour table, as the link-local addresses the peer subsystem dials."""
    from x0tta.guard.core import link_local_from_mac

    def addresses() -> list[str]:
        mesh = shared.get("mesh")
        seen = getattr(mesh, "last_observation", None)
        if seen is None:
            return []
        return sorted(
            {f"[{link_local_from_mac(n.neigh_address, n.hard_ifname)}]" for n in seen.neighbors if n.hard_ifname}
        )

    return addresses


def _fleet(settings: AgentSettings, hooks: AgentHooks) -> Subsystem:
    from x0tta.fleet.service import FleetService

    return FleetService(settings.fleet, subsystem_health=hooks.subsystem_health)


def fleet_actions(actions: Any, shared: Mapping[str, Subsystem], hooks: AgentHooks) -> None:
    """Register a handler per operator command action with what this agent runs (docs/fleet.md).
    Each looks its subsystem up when a command comes, so the order the subsystems are built in does
    not matter; a subsystem this agent does not run makes the command fail with the reason.
    ``quarantine`` and ``release`` go to the guard: ``node`` is a neighbour's MAC or the SPIFFE ID
    bound to one or more of them; a quarantine lasts ``heal.quarantine_ttl`` and the guard's own
    rules (its share cap, configured MACs) can refuse it, as they refuse the heal loop's."""
    from x0tta.common.errors import PermanentError
    from x0tta.fleet.commands import Unsupported

    def need(name: str) -> Any:
        return running(shared, name, Unsupported)

    mesh_hold = MeshHold(need)

    async def drain(cmd: Any) -> Mapping[str, Any]:
        args = cmd.args
        return await need("mesh").drain(args["interface"])  # type: ignore[no-any-return]

    async def undrain(cmd: Any) -> Mapping[str, Any]:
        args = cmd.args
        return await need("mesh").undrain(args["interface"])  # type: ignore[no-any-return]

    async def set_mesh(cmd: Any) -> Mapping[str, Any]:
        args = cmd.args
        return await mesh_hold.hold(args["setting"], args["value"])

    async def release_mesh(cmd: Any) -> Mapping[str, Any]:
        return await need("mesh").release_setting(cmd.args["setting"])  # type: ignore[no-any-return]

    async def heal(cmd: Any) -> Mapping[str, Any]:
        args = cmd.args
        from x0tta.heal.service import operator_action

        return await operator_action(need("heal"), args["action"], args.get("target"),  # type: ignore[arg-type]
                                     cmd.id)

    async def diagnostics(cmd: Any) -> Mapping[str, Any]:
        args = cmd.args
        bundle: dict[str, Any] = {"subsystems": hooks.subsystem_health() if hooks.subsystem_health else []}
        store = getattr(shared.get("heal"), "store", None)
        bundle["incidents"] = await store.incidents(int(args.get("incidents", 20)), None) if store else []
        mesh = shared.get("mesh")
        if mesh is not None:
            bundle["mesh_operator"] = {"drained": sorted(mesh.operator["detached"]),  # type: ignore[attr-defined]
                                       "settings": dict(mesh.operator["mesh"])}  # type: ignore[attr-defined]
        return bundle

    async def quarantine(cmd: Any) -> Mapping[str, Any]:
        guard, node = need("guard"), str(cmd.args["node"])
        macs = guard.bound_macs(node)
        if not macs:
            raise PermanentError(f"no neighbour MAC is bound to {node}")
        heal_settings = getattr(shared.get("heal"), "settings", None)
        ttl = float(getattr(heal_settings, "quarantine_ttl", 600.0))
        refused = {}
        for mac in macs:
            why = guard.quarantine(mac, ttl, f"operator command {cmd.id}")
            if why:
                refused[mac.hex(":")] = why
        if len(refused) == len(macs):
            raise PermanentError("; ".join(f"{m}: {why}" for m, why in refused.items()))
        return {"quarantined": [m.hex(":") for m in macs if m.hex(":") not in refused], "ttl": ttl,
                "refused": refused}

    async def release(cmd: Any) -> Mapping[str, Any]:
        released = need("guard").release(str(cmd.args["node"]), by=f"operator command {cmd.id}")
        if not released:
            raise PermanentError(f"{cmd.args['node']} is not quarantined")
        return {"released": released}

    for name, handler in (("drain", drain), ("undrain", undrain), ("set_mesh", set_mesh),
                          ("release_mesh", release_mesh), ("heal", heal),
                          ("diagnostics", diagnostics), ("quarantine", quarantine), ("release", release)):
        actions.register(name, handler)


def running(shared: Mapping[str, Subsystem], name: str, error: type[Exception] | None = None) -> Any:
    """The subsystem ``name`` of this agent, or ``error`` (a PermanentError by default) saying it does not run."""
    service = shared.get(name)
    if service is None:
        if error is None:
            from x0tta.common.errors import PermanentError

            error = PermanentError
        raise error(f"this agent does not run the {name} subsystem")
    return service


class MeshHold:
    """The mesh subsystem's hold on one of its batman-adv settings (``MeshService.set_setting`` and
    ``release_setting``): the one path a fleet ``set_mesh`` command and a rollout of ``mesh.<name>``
    both take. ``drained`` (a list of hard interfaces, or patterns of them) is the set the operator
    holds out of batman-adv (``MeshService.set_drained``, the fleet's drain and undrain); released,
    none. ``need(name)`` finds the subsystem when a change comes (or raises why not)."""

    def __init__(self, need: Callable[[str], Any]) -> None:
        self.need = need

    async def hold(self, name: str, value: Any) -> Mapping[str, Any]:
        if name == "drained":
            answer = await self.need("mesh").set_drained(value)
            return {**answer, "held": True}  # the empty set before is held again by a rollback, as any other
        return await self.need("mesh").set_setting(name, value)  # type: ignore[no-any-return]

    async def release(self, name: str) -> Mapping[str, Any]:
        if name == "drained":
            return await self.need("mesh").set_drained([])  # type: ignore[no-any-return]
        return await self.need("mesh").release_setting(name)  # type: ignore[no-any-return]


def harm_counter(into: list[int]) -> Callable[[str, str | None, Mapping[str, Any]], None]:
    """A heal listener that counts the heal loop's ``harm`` events into ``into[0]``."""

    def listener(name: str, incident: str | None, data: Mapping[str, Any]) -> None:
        if name == "harm":
            into[0] += 1

    return listener


def coord_sample(hooks: AgentHooks, shared: Mapping[str, Subsystem], heal_harm: list[int]) -> Callable[[], Any]:
    """The health a rollout compares before and after its change: subsystems other than coord
    that are not ok (the supervisor's view, as ``x0tta status`` shows it), harmful heal actions so
    far, and the originators batman-adv has a best route to, read from the kernel at that moment
    (the mesh's last dump when it cannot be read: the mesh not running, the kernel busy)."""
    from x0tta.common.errors import X0ttaError
    from x0tta.coord.core.rollout import Sample

    async def sample() -> Any:
        subsystems = hooks.subsystem_health() if hooks.subsystem_health else []
        unhealthy = sum(1 for h in subsystems if h.get("subsystem") != "coord" and h.get("state") not in ("ok", None))
        mesh = shared.get("mesh")
        if getattr(mesh, "client", None) is not None:
            try:
                await mesh.observe()  # type: ignore[union-attr]
            except X0ttaError:
                pass  # the last dump stands in
        seen = getattr(mesh, "last_observation", None)
        routes = len({o.orig_address for o in seen.originators if o.flag_best}) if seen is not None else 0
        return Sample(unhealthy, heal_harm[0], routes)

    return sample


def _coord(settings: AgentSettings, hooks: AgentHooks, shared: Mapping[str, Subsystem],
           heal_harm: list[int]) -> Subsystem:
    from x0tta.coord.handlers import FileSettings, LiveSettings
    from x0tta.coord.service import CoordService

    # mesh.<name>: held by the running mesh subsystem, as a fleet set_mesh command is; other
    # settings: the file of settings in the state directory
    handler = LiveSettings({"mesh": MeshHold(lambda name: running(shared, name))},
                           FileSettings(f"{settings.node.state_dir.rstrip('/')}/rollout-settings.json"),
                           coord_sample(hooks, shared, heal_harm))
    from x0tta.coord.service import operator_verifier

    # the operator's hybrid signature (Ed25519 + ML-DSA-65), the one fleet commands carry
    return CoordService(settings.coord, handler=handler, verifier=operator_verifier)


def _mesh(settings: AgentSettings, overrides: dict[str, Any]) -> Subsystem:
    from x0tta.mesh.service import MeshService

    return MeshService(settings=settings.mesh, overrides=overrides)


def _heal(settings: AgentSettings, overrides: dict[str, Any], hooks: AgentHooks) -> Subsystem:
    from x0tta.heal.service import HealService

    return HealService(
        settings=settings.heal,
        overrides=overrides,
        subsystem_health=hooks.subsystem_health,
        restart_subsystem=hooks.restart_subsystem,
    )


def guard_maps(attach: Callable[[Any], None]) -> Callable[[Mapping[str, Any] | None], None]:
    """A listener for ``ProbesService.share_maps`` that hands ``attach`` (``GuardService.kernel_maps``
    or ``Guard.attach``) the guard's maps of the loaded object (admissions, mode, OGM streams), or
    None when they go."""
    from x0tta.guard.enforce import KernelMaps
    from x0tta.probes.core import MAP_ADMITTED, MAP_CONFIG, MAP_OGMS

    def listener(maps: Mapping[str, Any] | None) -> None:
        attach(None if maps is None else KernelMaps(maps[MAP_ADMITTED], maps[MAP_CONFIG], maps.get(MAP_OGMS)))

    return listener


def quarantine_closer(peer: Subsystem, admission: Any) -> Callable[[bytes, str | None], None]:
    """A listener for ``GuardService.on_quarantine``: send away the peer sessions of the quarantined
    MAC (its link-local address) or SPIFFE ID."""

    def close(mac: bytes, spiffe_id: str | None) -> None:
        def match(host: str, who: str) -> bool:
            return admission.resolve(host) == mac or (spiffe_id is not None and who == spiffe_id)

        peer.send_away_where(match, "quarantined")  # type: ignore[attr-defined]

    return close


HANDSHAKES_KEPT = 10_000


def handshake_recorder(into: deque[Any], clock: Callable[[], float] = time.monotonic,
                       on_refused: Callable[[], None] | None = None) -> Callable[[Any], None]:
    """A listener for ``PeerService.on_handshake`` that keeps each outcome as the guard's
    ``Handshake``, stamped on the monotonic clock, with the address reduced to its host (the peer
    subsystem writes ``[host]:port`` when it dials and ``host:port`` when it accepts; a link-local
    host keeps its ``%zone``), and calls ``on_refused`` after a handshake the other side failed
    (the guard's early look)."""
    from x0tta.guard.core.detect import Handshake

    def record(r: Any) -> None:
        host = r.address.rsplit(":", 1)[0].strip("[]") if ":" in r.address else r.address
        h = Handshake(clock(), host, r.ok, r.reason, r.role, r.spiffe_id)
        into.append(h)
        if on_refused is not None and h.refused:
            on_refused()

    return record


def guard_observer(shared: Mapping[str, Subsystem], handshakes: deque[Any] | None = None) -> Callable[[float], Any]:
    """``now -> Observation`` for the guard's detectors, from the subsystems in ``shared`` as they
    are at each call (a subsystem not running, or not polled yet, contributes nothing):

    * the probes' last poll: every (interface, MAC) heard, with its frames, the frames the guard
      program denied, first and last heard (CLOCK_MONOTONIC, as ``now``); the flows;
    * the mesh subsystem's last dump: GET_ORIGINATORS as routes, GET_GATEWAYS (bandwidth in
      batman-adv's 100 kbit/s units, made kbit/s), and GET_NEIGHBORS' throughput (BATMAN_V: this
      node's own estimate of each link) as the measured side of each link; its configured hop
      penalty;
    * the handshakes recorded since the last call (:func:`handshake_recorder`), taken out of
      ``handshakes``.

    Not here: OGM sequence numbers, which the guard reads from its own map (``ogms``); and the
    heal probes' delivery ratio per link (so BATMAN_IV's TQ is not compared)."""
    from x0tta.guard.core.detect import Flow, GatewayAd, Heard, LinkMeasure, Observation, Route

    def observe(now: float) -> Any:
        heard: list[Any] = []
        flows: list[Any] = []
        last = getattr(shared.get("probes"), "last", None)
        if last is not None:
            snap, names = last.snapshot, last.names
            for k, v in snap.neighbors.items():
                heard.append(Heard(names.get(k.ifindex, str(k.ifindex)), k.mac, v.rx_packets, v.first_seen_ns / 1e9,
                                   v.last_rx_ns / 1e9 if v.last_rx_ns else None, v.denied_packets))
            for k, f in snap.flows.items():
                flows.append(Flow(k.direction, k.src, k.dst, k.proto, k.dport, f.packets, f.first_seen_ns / 1e9,
                                  k.sport, names.get(k.ifindex, str(k.ifindex))))
        routes: list[Any] = []
        links: list[Any] = []
        gateways: list[Any] = []
        routes_at = None
        seen = getattr(shared.get("mesh"), "last_observation", None)
        if seen is not None:
            routes = [Route(o.orig_address, o.neigh_address, o.hard_ifname or str(o.hard_ifindex), o.tq,
                            o.throughput, o.flag_best, o.last_seen_msecs) for o in seen.originators]
            links = [LinkMeasure(n.hard_ifname or str(n.hard_ifindex), n.neigh_address, throughput=n.throughput)
                     for n in seen.neighbors if n.throughput is not None]
            gateways = [GatewayAd(g.orig_address, g.router, _kbit(g.bandwidth_down), _kbit(g.bandwidth_up))
                        for g in seen.gateways]
            routes_at = getattr(seen, "at", None)
        taken: list[Any] = []
        while handshakes:
            taken.append(handshakes.popleft())
        return Observation(now, heard=tuple(heard), routes=tuple(routes), links=tuple(links),
                           gateways=tuple(gateways), flows=tuple(flows), handshakes=tuple(taken),
                           hop_penalty=_hop_penalty(shared.get("mesh")), routes_at=routes_at)

    return observe


def _hop_penalty(mesh: Any) -> int | None:
    """The hop penalty this node keeps batman-adv at, taken as the fleet's: a forwarded OGM shows
    it (the inflated-TQ check). An operator's held value and ``[mesh] hop_penalty``, the smaller of
    the two: while a fleet change rolls out, neighbours may still be at either. None where the mesh
    subsystem does not manage batman-adv's settings (nobody knows the value)."""
    settings = getattr(mesh, "settings", None)
    if settings is None or not getattr(settings, "manage", False):
        return None
    held = (getattr(mesh, "operator", None) or {}).get("mesh") or {}
    values = [v for v in (held.get("hop_penalty"), settings.hop_penalty) if isinstance(v, int)]
    return min(values) if values else None


def _kbit(units: int | None) -> int | None:
    """batman-adv's gateway bandwidth (units of 100 kbit/s) in kbit/s."""
    return None if units is None else units * 100


def _guard(settings: AgentSettings) -> Subsystem:
    from x0tta.guard.service import GuardService

    return GuardService(settings=settings.guard)


def _probes(settings: AgentSettings) -> Subsystem:
    from x0tta.probes.service import ProbesService

    return ProbesService(settings=settings.probes)
