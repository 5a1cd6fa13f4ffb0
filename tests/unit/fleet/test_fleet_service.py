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
                               "/var/lib/x0tta/identity/bundle.pem", "/var/lib/x0tta/fleet-outbox.sqlite3")


def test_a_missing_certificate_is_a_missing_capability(tmp_path):
    with pytest.raises(CapabilityMissing) as err:
        tls_context(FleetPaths(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), str(tmp_path / "ca.pem"), ""))
    assert err.value.code == "fleet_certificate_missing" and "c.pem" in str(err.value)
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("not a certificate")
    with pytest.raises(CapabilityMissing) as err:
        tls_context(FleetPaths(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), str(tmp_path / "ca.pem"), ""))
    assert err.value.code == "fleet_certificate_unusable"
