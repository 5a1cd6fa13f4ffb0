"""The identity subsystem: health while waiting for enrollment, conditions as the SVID ages, metrics, reload."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.kit.wait import until
from tests.unit.identity.fakes import identity_context, settings
from x0tta.common.health import Severity
from x0tta.config.fields import ConfigError, build
from x0tta.config.identity import IdentitySettings
from x0tta.config.schema import AgentSettings
from x0tta.identity import service as identity_service
from x0tta.identity.builtin import BuiltinPaths, BuiltinSource
from x0tta.identity.ca import CertificateAuthority
from x0tta.identity.service import IdentityService, assess
from x0tta.telemetry.testing import running


async def test_enrollment_while_running(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    ctx = identity_context(settings(tmp_path, poll_interval=0.1))
    svc = IdentityService(environ={})
    async with running(svc, ctx):
        await until(lambda: ctx.health.codes == ["svid_missing"])
        assert "svid.pem does not exist" in ctx.health.history[-1][0].message
        fresh_ca.issue_to(tmp_path / "identity", "spiffe://mesh.x0tta/node/r1", 3600)  # the operator enrolls
        source = await svc.wait_source(timeout=8)
        await until(lambda: ctx.health.codes == [])
        assert str(source.svid().spiffe_id) == "spiffe://mesh.x0tta/node/r1"
        shown = await ctx.admin.handlers["identity.show"]({})
        assert shown["spiffe_id"] == "spiffe://mesh.x0tta/node/r1" and shown["key_algorithm"] == "ML-DSA-65"
        expires_in = ctx.registry.get_sample_value("x0tta_identity_svid_expires_in_seconds")
        assert expires_in is not None and 3500 < expires_in <= 3600
        assert ctx.registry.get_sample_value("x0tta_identity_svid_rotations_total") == 0
        info = {"spiffe_id": "spiffe://mesh.x0tta/node/r1", "key_algorithm": "ML-DSA-65", "source": "builtin"}
        await until(lambda: ctx.registry.get_sample_value("x0tta_identity_svid_info", info) == 1)
        fresh_ca.issue_to(tmp_path / "identity", "spiffe://mesh.x0tta/node/r1", 3600)  # renewal copied in
        await until(lambda: ctx.registry.get_sample_value("x0tta_identity_svid_rotations_total") == 1)


async def test_self_renewing_node_counts_rotations(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    ctx = identity_context(settings(tmp_path, poll_interval=0.1, ca_dir=str(fresh_ca.directory), svid_ttl=10.0))
    svc = IdentityService(environ={})
    async with running(svc, ctx):
        src = await svc.wait_source(timeout=8)
        assert str(src.svid().spiffe_id) == "spiffe://mesh.x0tta/node/r1"
        await until(lambda: (ctx.registry.get_sample_value("x0tta_identity_svid_rotations_total") or 0) >= 1, 12)
        assert ctx.registry.get_sample_value("x0tta_identity_svid_renewals_total", {"result": "ok"}) >= 2


async def test_missing_spire_socket_is_reported(tmp_path: Path) -> None:
    ctx = identity_context(settings(tmp_path, source="workload_api", workload_api_socket=str(tmp_path / "none.sock")))
    svc = IdentityService(environ={})
    async with running(svc, ctx):
        await until(lambda: ctx.health.codes == ["spire_socket_missing"])
        assert ctx.health.history[-1][0].severity is Severity.DEGRADED


async def test_reload_applies_policy_live_and_asks_restart_for_a_new_source(tmp_path: Path) -> None:
    ctx = identity_context(settings(tmp_path))
    svc = IdentityService(environ={})
    async with running(svc, ctx):
        await until(lambda: svc.policy is not None)
        assert await svc.reload(ctx, settings(tmp_path, allowed_patterns=["/gw/*"]))  # type: ignore[arg-type]
        assert svc.policy is not None and svc.policy.allowed_patterns == (("mesh.x0tta", ("gw", "*")),)
        assert not await svc.reload(ctx, settings(tmp_path, source="workload_api"))  # type: ignore[arg-type]


async def _loaded(ca: CertificateAuthority, tmp_path: Path, ttl: float, **kw: Any) -> BuiltinSource:
    ca.issue_to(tmp_path / "n", "spiffe://mesh.x0tta/node/r1", ttl, **kw)
    src = BuiltinSource(BuiltinPaths.in_dir(tmp_path / "n"), "mesh.x0tta")
    await src.refresh()
    return src


async def test_conditions_as_the_svid_ages(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    src = await _loaded(fresh_ca, tmp_path, 1000)
    s = IdentitySettings()
    svid = src.svid()
    start, end = svid.not_before.timestamp(), svid.expires_at

    def codes(now: float) -> list[str]:
        return [c.code for c in assess(src, s, now)]

    assert codes(start + 10) == []
    assert codes(start + 0.8 * svid.lifetime) == ["svid_expiring"]
    assert codes(end + 1) == ["svid_expired"]
    assert assess(src, s, end + 1)[0].severity is Severity.FAILING
    nxt = src.revocations()[0].next_update
    assert nxt is not None and "revocation_list_stale" in [c.code for c in assess(src, s, nxt + 1)]
    assert codes(start + 10) == [] and [c.code for c in assess(src, s, start + 10, None, svid.spiffe_id)] == []
    elsewhere = assess(src, s, start + 10, None, s.own_spiffe_id("r2"))
    assert [c.code for c in elsewhere] == ["svid_other_node"] and "node/r2" in elsewhere[0].message
    other = dataclasses.replace(s, trust_domain="other.org", allowed_patterns=())
    assert [c.code for c in assess(src, other, start + 10)] == ["svid_wrong_trust_domain"]


def test_settings_validate_ids_and_patterns() -> None:
    with pytest.raises(ConfigError, match="trust domain"):
        build(AgentSettings, {"identity": {"spiffe_id": "spiffe://other.org/node/a"}})
    with pytest.raises(ConfigError, match=r"percent|limited"):
        build(AgentSettings, {"identity": {"allowed_ids": ["spiffe://mesh.x0tta/a%20b"]}})
    s = build(AgentSettings, {"identity": {"trust_domain": "m.org"}}).identity
    assert str(s.own_spiffe_id("r7")) == "spiffe://m.org/node/r7"
    assert s.paths("/var/lib/x0tta/").svid == "/var/lib/x0tta/identity/svid.pem"


async def test_consumers_keep_their_subscription_across_a_restart(
    fresh_ca: CertificateAuthority, tmp_path: Path
) -> None:
    ctx = identity_context(settings(tmp_path, poll_interval=0.1))
    fresh_ca.issue_to(tmp_path / "identity", "spiffe://mesh.x0tta/node/r1", 3600)
    svc = IdentityService(environ={})
    seen: list[int] = []
    async with running(svc, ctx):
        shared = await svc.wait_source(timeout=8)
        shared.subscribe(lambda u: seen.append(u.svid.leaf.serial_number))
    # the supervisor restarts the subsystem (a reload it could not take live); meanwhile a renewal lands
    renewed = fresh_ca.issue_to(tmp_path / "identity", "spiffe://mesh.x0tta/node/r1", 3600)
    async with running(svc, ctx):
        assert await svc.wait_source(timeout=8) is shared
        await until(lambda: renewed.leaf.serial_number in seen)
        assert shared.svid().leaf == renewed.leaf and shared.rotations == 1


@pytest.fixture
def long_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry backoff grown as far as it can: missing files must not wait on it."""
    monkeypatch.setattr(identity_service, "RETRY_MIN", 3600.0)
    monkeypatch.setattr(identity_service, "RETRY_MAX", 3600.0)


@pytest.mark.usefixtures("long_backoff")
async def test_missing_files_are_looked_for_every_poll_interval(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    ctx = identity_context(settings(tmp_path, poll_interval=0.1))
    svc = IdentityService(environ={})
    async with running(svc, ctx):
        await until(lambda: ctx.health.codes == ["svid_missing"])
        fresh_ca.issue_to(tmp_path / "identity", "spiffe://mesh.x0tta/node/r1", 3600)  # enrolment lands later
        source = await svc.wait_source(timeout=8)
        assert str(source.svid().spiffe_id) == "spiffe://mesh.x0tta/node/r1"


@pytest.mark.usefixtures("long_backoff")
async def test_reload_looks_for_missing_files_at_once(fresh_ca: CertificateAuthority, tmp_path: Path) -> None:
    ctx = identity_context(settings(tmp_path, poll_interval=3600))  # only the reload can find the files in time
    svc = IdentityService(environ={})
    async with running(svc, ctx):
        await until(lambda: ctx.health.codes == ["svid_missing"])
        fresh_ca.issue_to(tmp_path / "identity", "spiffe://mesh.x0tta/node/r1", 3600)
        assert await svc.reload(ctx, settings(tmp_path, poll_interval=3600))  # type: ignore[arg-type]
        source = await svc.wait_source(timeout=8)
        assert str(source.svid().spiffe_id) == "spiffe://mesh.x0tta/node/r1"
        await until(lambda: ctx.health.codes == [])
