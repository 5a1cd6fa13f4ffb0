"""The guard's view of the mesh, as the composition root assembles it from the other subsystems."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from x0tta.agent.wiring import guard_observer
from x0tta.config.guard import DetectSettings
from x0tta.config.mesh import MeshSettings
from x0tta.guard.core.detect import inflated_link_metric
from x0tta.mesh.core.batadv import Originator
from x0tta.mesh.service import Observation as MeshObservation

R, P2, P5 = "02:ba:00:02:00:02", "02:ba:02:02:00:00", "02:ba:02:05:00:00"


def mesh(penalty: int, n5_tq: int) -> SimpleNamespace:
    origs = [Originator(R, R, 3, 10, "to-n2", tq=250), Originator(P2, R, 3, 10, "to-n2", True, tq=249),
             Originator(P5, R, 3, 10, "to-n2", tq=n5_tq)]
    return SimpleNamespace(settings=MeshSettings(hop_penalty=penalty),
                           last_observation=MeshObservation(at=1.0, originators=origs, neighbors=[], gateways=[]))


def test_the_routes_come_with_the_meshs_hop_penalty_and_an_unforwarded_claim_is_found() -> None:
    def two_dumps(n5_tq: int) -> list:
        state = mesh(30, n5_tq)
        observe = guard_observer({"mesh": state})
        first = observe(3.0)
        state.last_observation = replace(state.last_observation, at=4.0)  # the mesh read its tables again
        return [first, observe(5.0)]

    seen = two_dumps(250)
    assert seen[1].hop_penalty == 30 and len(seen[1].routes) == 3
    [f] = inflated_link_metric(seen, DetectSettings(), 5.0)
    assert f.originator == P5 and f.macs == (R,)
    # n2 forwarding n5's OGMs as an honest node does: the penalty is there
    assert inflated_link_metric(two_dumps(220), DetectSettings(), 5.0) == []


def test_the_penalty_is_the_one_in_force_and_unknown_where_the_mesh_is_not_managed() -> None:
    held = mesh(30, 220)
    held.operator = {"detached": set(), "mesh": {"hop_penalty": 10}}  # a fleet command's value
    seen = guard_observer({"mesh": held})(5.0)
    assert seen.hop_penalty == 10 and seen.routes_at == 1.0  # the dump's time, not the look's
    held.operator["mesh"]["hop_penalty"] = 50  # raised by the fleet: neighbours may still be at 30
    assert guard_observer({"mesh": held})(5.0).hop_penalty == 30
    unmanaged = mesh(30, 220)
    unmanaged.settings = MeshSettings(hop_penalty=30, manage=False)
    assert guard_observer({"mesh": unmanaged})(5.0).hop_penalty is None


def test_without_a_mesh_subsystem_the_penalty_is_unknown() -> None:
    assert guard_observer({})(5.0).hop_penalty is None
