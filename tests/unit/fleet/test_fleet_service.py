"""The fleet subsystem without a broker: what it does with events handed over, and its files."""

from __future__ import annotations

import pytest

from x0tta.common.errors import CapabilityMissing
from x0tta.config.fleet import FleetPaths, FleetSettings
from x0tta.config.identity import IdentitySettings
from x0tta.fleet.core.outbox import Priority
from x0tta.fleet.mqtt import tls_context
from x0tta.fleet.service import FleetService


def test_events_handed_over_before_the_outbox_opens_are_kept_with_their_priority():
    svc = FleetService(FleetSettings(broker="b", outbox_capacity=10))
    svc.heal_event("incident_opened", "i1", {"kind": "link_down"})
    svc.heal_event("symptom_cleared", "i1", {})
    keys = [e.key for e in svc._intake]
    assert len(set(keys)) == 2 and svc.depth == 2
    assert [e.priority for e in svc._intake] == [Priority.IMPORTANT, Priority.INFO]
    for i in range(12):  # bounded like the outbox: the oldest leave, counted
        svc.event("test", "tick", {"i": i})
    assert svc.depth == 10 and svc.dropped == 4


def test_files_default_to_the_svid_and_the_state_directory():
    paths = FleetSettings(broker="b").paths("/var/lib/x0tta", IdentitySettings().paths("/var/lib/x0tta"))
    assert paths == FleetPaths("/var/lib/x0tta/identity/svid.pem", "/var/lib/x0tta/identity/svid.key",
                               "/var/lib/x0tta/identity/bundle.pem", "/var/lib/x0tta/fleet-outbox.sqlite3",
                               "/var/lib/x0tta/fleet-commands.sqlite3")


def test_a_missing_certificate_is_a_missing_capability(tmp_path):
    with pytest.raises(CapabilityMissing) as err:
        tls_context(FleetPaths(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), str(tmp_path / "ca.pem"), ""))
    assert err.value.code == "fleet_certificate_missing" and "c.pem" in str(err.value)
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("not a certificate")
    with pytest.raises(CapabilityMissing) as err:
        tls_context(FleetPaths(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), str(tmp_path / "ca.pem"), ""))
    assert err.value.code == "fleet_certificate_unusable"


async def test_events_handed_over_at_the_stop_are_on_disk_for_the_next_start(tmp_path):
    import asyncio

    from x0tta.config.schema import AgentSettings, NodeSettings
    from x0tta.fleet.outbox import Outbox
    from x0tta.telemetry.testing import StandaloneContext

    # No certificate: the connection task stops at once (a missing capability), the others run.
    settings = AgentSettings(node=NodeSettings(id="n1", state_dir=str(tmp_path)),
                             fleet=FleetSettings(broker="127.0.0.1", cert_file=str(tmp_path / "none.pem")))
    svc = FleetService(settings.fleet)
    ctx = StandaloneContext(settings, name="fleet", node_id="n1", state_dir=tmp_path)
    with pytest.raises(CapabilityMissing):
        await asyncio.wait_for(svc.run(ctx), 10)
    key = svc.event("heal", "incident_opened", {})  # after the stop: kept in memory, bounded
    assert svc.depth == 1
    task = asyncio.create_task(svc.run(ctx))
    with pytest.raises(CapabilityMissing):
        await asyncio.wait_for(task, 10)
    box = Outbox(tmp_path / "fleet-outbox.sqlite3", capacity=10)
    assert key in box.keys()
    assert ctx.health.codes == ["fleet_connecting"]
