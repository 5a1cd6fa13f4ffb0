"""The identity subsystem: keeps this node's SVID source running and says how it is doing.

It builds the source the config names (:class:`~x0tta.identity.builtin.BuiltinSource` or
:class:`~x0tta.identity.workload.WorkloadApiSource`), waits for the first SVID while reporting
why there is none (``svid_missing``, ``spire_socket_missing``), then watches it. Enrolment is
copying files in: the agent looks for them every ``poll_interval`` and at once on reload, and
picks them up without a restart; SPIRE not answering is retried with backoff.

The conditions it reports (``svid_*``, ``spire_socket_missing``, ``workload_api_failing``,
``revocation_list_*``), each with its severity and meaning, are declared in
:mod:`x0tta.identity.conditions`; :func:`assess` says when each applies.

Metrics: ``x0tta_identity_svid_expires_in_seconds`` (seconds to expiry, computed at scrape),
``x0tta_identity_svid_expiry_timestamp_seconds``, ``x0tta_identity_svid_rotations_total``,
``x0tta_identity_svid_renewals_total{result}``, ``x0tta_identity_revoked_certificates``,
``x0tta_identity_svid_info{spiffe_id,key_algorithm,source}``,
``x0tta_identity_mesh_renewals_total{result,reason}`` (renewal through a CA node, see
:mod:`x0tta.identity.renewal`), ``x0tta_identity_renewal_requests_served_total{result,reason}`` (a
CA node's answers to its peers).

Other subsystems (the peer transport) get the source from :meth:`IdentityService.wait_source`
and the authorization policy from :attr:`IdentityService.policy`; the composition root hands
them this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from x0tta.clock import SYSTEM
from x0tta.common.errors import CapabilityMissing
from x0tta.common.health import Condition
from x0tta.common.spiffe_id import AuthorizationPolicy, SpiffeId
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.identity import IdentitySettings
from x0tta.identity.builtin import BuiltinPaths, BuiltinSource, SelfRenewer
from x0tta.identity.conditions import (
    RENEWAL_CA_UNREACHABLE,
    RENEWAL_REFUSED,
    REVOCATION_LIST_INVALID,
    REVOCATION_LIST_STALE,
    SVID_EXPIRED,
    SVID_EXPIRING,
    SVID_INVALID,
    SVID_MISSING,
    SVID_OTHER_NODE,
    SVID_RENEWAL_FAILING,
    SVID_WRONG_TRUST_DOMAIN,
    WORKLOAD_API_FAILING,
)
from x0tta.identity.core import renewal as renewal_core
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import SvidUnavailable, SvidVerdict, validate_x509_svid
from x0tta.identity.renewal import MeshRenewer, RenewalServer, Transport
from x0tta.identity.source import SharedSource, SourceBase

RETRY_MIN, RETRY_MAX = 1.0, 30.0
HEALTH_INTERVAL = 1.0


def assess(
    source: SourceBase,
    settings: IdentitySettings,
    now: float,
    verdict: SvidVerdict | None = None,
    expected: SpiffeId | None = None,
    renewer: MeshRenewer | None = None,
) -> list[Condition]:
    """The health conditions of ``source`` at ``now`` (pure: reads the source's state only).

    ``verdict`` is the SVID checked against our own bundle (:func:`check_own`); None checks here.
    ``expected`` is the ID this node should hold (built-in source: files meant for another node
    are a mistake worth saying out loud); None skips that check. ``renewer`` is the renewal through
    the mesh, when it runs: its last failure, while the SVID is due, is a condition.
    """
    out: list[Condition] = []
    if not source.has_svid():
        return [SVID_MISSING(source.last_error or "no SVID yet")]
    svid = source.svid()
    left = svid.seconds_to_expiry(now)
    if left <= 0:
        out.append(SVID_EXPIRED(f"SVID {svid.spiffe_id} expired {-left:.0f} s ago"))
    elif left < settings.expiring_fraction * svid.lifetime:
        out.append(SVID_EXPIRING(f"SVID {svid.spiffe_id} expires in {left:.0f} s"))
    if svid.spiffe_id.trust_domain != settings.trust_domain:
        out.append(SVID_WRONG_TRUST_DOMAIN(f"SVID {svid.spiffe_id} is not of trust domain {settings.trust_domain}"))
    elif expected is not None and svid.spiffe_id != expected:
        out.append(SVID_OTHER_NODE(
            f"SVID names {svid.spiffe_id} but this node is {expected} (set identity.spiffe_id if intended)"
        ))
    if svid.spiffe_id.trust_domain == settings.trust_domain and left > 0:
        if verdict is None:
            verdict = check_own(source, now)
        if verdict is not None and not verdict.ok:
            out.append(SVID_INVALID(f"{verdict.reason}: {verdict.detail}"))
    if source.kind == "workload_api" and source.last_error:
        out.append(WORKLOAD_API_FAILING(source.last_error))
    if isinstance(source, BuiltinSource):
        if source.renewer is not None and source.last_error and source.last_error.startswith("renewal failed"):
            out.append(SVID_RENEWAL_FAILING(source.last_error))
        if source.crl_error:
            out.append(REVOCATION_LIST_INVALID(source.crl_error))
    if renewer is not None and renewer.problem is not None and left > 0:
        spec = RENEWAL_REFUSED if renewer.problem.kind == "refused" else RENEWAL_CA_UNREACHABLE
        out.append(spec(renewer.problem.message))
    for rl in source.revocations():
        if rl.next_update is not None and now > rl.next_update:
            out.append(REVOCATION_LIST_STALE(
                f"revocation list #{rl.number} passed its nextUpdate {now - rl.next_update:.0f} s ago"
            ))
    return out


def check_own(source: SourceBase, now: float) -> SvidVerdict | None:
    """Our SVID against our own bundles (a signature check: run it off the event loop)."""
    if not source.has_svid():
        return None
    return validate_x509_svid(source.svid().cert_chain, source.bundles(), now)


OWN_CHECK_INTERVAL = 60.0
"""Re-check our own SVID's chain this often even when nothing changed (a root may expire)."""


class _Metrics:
    def __init__(self, registry: Any) -> None:
        self.expires_in = Gauge(
            "x0tta_identity_svid_expires_in_seconds", "Seconds until this node's SVID expires", registry=registry
        )
        self.expiry = Gauge(
            "x0tta_identity_svid_expiry_timestamp_seconds", "notAfter of this node's SVID", registry=registry
        )
        self.rotations = Counter(
            "x0tta_identity_svid_rotations", "SVIDs replaced by a new one while running", registry=registry
        )
        self.renewals = Counter(
            "x0tta_identity_svid_renewals",
            "Self-renewals from the built-in CA, by result",
            ["result"],
            registry=registry,
        )
        self.info = Gauge(
            "x0tta_identity_svid_info",
            "This node's SVID: its SPIFFE ID, key algorithm and source (value 1)",
            ["spiffe_id", "key_algorithm", "source"],
            registry=registry,
        )
        self.mesh_renewals = Counter(
            "x0tta_identity_mesh_renewals",
            "Renewals of this node's SVID through a CA node over the peer sessions, by result and reason",
            ["result", "reason"],
            registry=registry,
        )
        self.renewals_served = Counter(
            "x0tta_identity_renewal_requests_served",
            "Peers' renewal requests this CA node answered, by result and reason",
            ["result", "reason"],
            registry=registry,
        )
        self.revoked = Gauge(
            "x0tta_identity_revoked_certificates", "Serials in the revocation lists in force", registry=registry
        )


class IdentityService(Subsystem):
    name = "identity"

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.source = SharedSource()
        self.inner: SourceBase | None = None
        self.policy: AuthorizationPolicy | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()  # set by reload: end the wait for the first SVID
        self._settings: IdentitySettings | None = None
        self._metrics: _Metrics | None = None
        self._metrics_registry: Any = None
        # Set by the composition root: how to reach CA nodes (the peer sessions). None: no mesh renewal.
        self.renewal_transport: Transport | None = None
        self.renewer: MeshRenewer | None = None
        self._granted: dict[str, float] = {}  # a CA node: when each peer ID was last granted an SVID
        self._log: Any = None

    # -- for other subsystems ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """This node has an identity: the source delivered an SVID (it stays True once it did)."""
        return self._ready.is_set()

    async def wait_source(self, timeout: float | None = None) -> SourceBase:
        """The source once it has an SVID (raises TimeoutError after ``timeout``).

        It is the same object for the life of the agent: subscriptions made on it survive restarts
        of this subsystem and changes of source on reload.
        """
        await SYSTEM.wait_for(self._ready.wait(), timeout)
        return self.source

    def serves_renewals(self, settings: IdentitySettings) -> bool:
        """A CA node: the CA key is on this node and it signs peers' renewals."""
        return bool(settings.ca_dir) and settings.serve_renewals and settings.source == "builtin"

    async def serve_renewal(self, session_id: SpiffeId, session_serial: int, body: bytes) -> bytes:
        """Answer a peer's renewal request (the peer subsystem's ``identity.renew`` handler)."""
        s = self._settings
        if s is None or not self.serves_renewals(s):
            self._count_served("refused", renewal_core.RefusalReason.NOT_A_CA.value)
            return renewal_core.encode_answer(
                renewal_core.Refused(renewal_core.RefusalReason.NOT_A_CA, "this node holds no CA key"))
        server = RenewalServer(s.ca_dir, s.svid_ttl, log=self._log, count=self._count_served,
                               granted=self._granted)
        return await server.handle(session_id, session_serial, body)

    def _count_served(self, result: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.renewals_served.labels(result, reason).inc()

    def _count_renewal(self, result: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.mesh_renewals.labels(result, reason).inc()

    def _mesh_renewer(self, ctx: Context, source: SourceBase) -> MeshRenewer | None:
        s = ctx.settings.identity
        if (not isinstance(source, BuiltinSource) or source.renewer is not None or not s.mesh_renewal
                or self.renewal_transport is None):
            return None
        source.request_renewal = False  # the renewer makes the request itself, one pending key at a time
        return MeshRenewer(source, self.renewal_transport,
                           fraction=s.renew_fraction, jitter=s.renew_jitter, timeout=s.renewal_timeout,
                           retry_max=s.renewal_retry_max, log=ctx.log, count=self._count_renewal)

    # -- building ----------------------------------------------------------------------------
    def build_source(self, ctx: Context) -> SourceBase:
        s = ctx.settings.identity
        if s.source == "workload_api":
            from x0tta.identity.workload import WorkloadApiSource

            return WorkloadApiSource(
                s.workload_api_socket, timeout=s.workload_api_timeout, environ=self.environ, log=ctx.log
            )
        p = s.paths(ctx.settings.node.state_dir)
        paths = BuiltinPaths(Path(p.svid), Path(p.key), Path(p.bundle), Path(p.revocation))
        renewer = None
        if s.ca_dir:
            renewer = SelfRenewer(Path(s.ca_dir), s.own_spiffe_id(ctx.node_id), s.svid_ttl, KeyType(s.key_type))
        return BuiltinSource(
            paths,
            s.trust_domain,
            poll_interval=s.poll_interval,
            renewer=renewer,
            renew_fraction=s.renew_fraction,
            request_renewal=s.request_renewal,
            log=ctx.log,
        )

    # -- running -----------------------------------------------------------------------------
    async def run(self, ctx: Context) -> None:
        settings = ctx.settings.identity
        self._settings = settings
        self._log = ctx.log
        self.policy = settings.policy()
        if self._metrics is None or self._metrics_registry is not ctx.registry:
            self._metrics, self._metrics_registry = _Metrics(ctx.registry), ctx.registry
        metrics = self._metrics
        source = self.build_source(ctx)
        self.inner = source
        ctx.admin.register("identity.show", self._show)
        detach = self.source.attach(source)
        renewing: asyncio.Task[None] | None = None
        try:
            await self._start_source(ctx, source)
            self._ready.set()
            self.renewer = self._mesh_renewer(ctx, source)
            if self.renewer is not None:
                renewing = asyncio.create_task(self.renewer.run(), name="identity-mesh-renewal")
            metrics.expires_in.set_function(
                lambda: source.svid().seconds_to_expiry(time.time()) if source.has_svid() else 0.0
            )
            rotations = renewals = renew_failures = 0
            checked_updates, checked_at, verdict = -1, 0.0, None
            shown: tuple[SpiffeId, str] | None = None
            while True:
                now = time.time()
                if source.updates != checked_updates or now - checked_at > OWN_CHECK_INTERVAL:
                    checked_updates, checked_at = source.updates, now
                    verdict = await asyncio.to_thread(check_own, source, now)
                svid = source.svid()
                metrics.expiry.set(svid.expires_at)
                metrics.revoked.set(sum(len(r.serials) for r in source.revocations()))
                if source.rotations > rotations:
                    metrics.rotations.inc(source.rotations - rotations)
                    rotations = source.rotations
                if isinstance(source, BuiltinSource):
                    if source.renewals > renewals:
                        metrics.renewals.labels("ok").inc(source.renewals - renewals)
                        renewals = source.renewals
                    if source.renew_failures > renew_failures:
                        metrics.renewals.labels("failed").inc(source.renew_failures - renew_failures)
                        renew_failures = source.renew_failures
                current = self._settings or settings
                expected = current.own_spiffe_id(ctx.node_id) if source.kind == "builtin" else None
                ctx.health.set(*assess(source, current, time.time(), verdict, expected, self.renewer))
                if shown != (svid.spiffe_id, svid.key_algorithm):
                    shown = (svid.spiffe_id, svid.key_algorithm)
                    metrics.info.clear()
                    metrics.info.labels(str(svid.spiffe_id), svid.key_algorithm, source.kind).set(1)
                await asyncio.sleep(HEALTH_INTERVAL)
        finally:
            self._ready.clear()
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            self.renewer = None
            detach()
            await source.close()

    async def _start_source(self, ctx: Context, source: SourceBase) -> None:
        """Start ``source``, retrying while reporting why there is no SVID.

        Files not there yet (enrolment in progress) are looked for every ``poll_interval``; other
        failures (no SPIRE socket, SPIRE silent, self-renewal failing) back off from ``RETRY_MIN``
        to ``RETRY_MAX``. A reload (SIGHUP) ends either wait at once.
        """
        delay, reported = RETRY_MIN, None
        while True:
            self._wake.clear()  # a reload from now on, even during start(), means "try again now"
            try:
                await source.start()
                ctx.log.info(
                    "identity_ready",
                    source=source.kind,
                    spiffe_id=str(source.svid().spiffe_id),
                    key=source.svid().key_algorithm,
                )
                return
            except CapabilityMissing as exc:
                spec, reason = exc.spec, str(exc)
            except SvidUnavailable as exc:
                spec, reason = SVID_MISSING, str(exc)
            code = spec.code
            poll = source.retry_interval()
            wait = delay if poll is None else poll
            ctx.health.set(spec(reason))
            if (code, reason) != reported:  # once per distinct problem, not once per look
                reported = (code, reason)
                ctx.log.warning("identity_unavailable", code=code, reason=reason, retry_in=wait)
            with contextlib.suppress(TimeoutError):  # not wait_for: on 3.11 it can swallow a cancel
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            if poll is None:
                delay = min(delay * 2, RETRY_MAX)

    async def reload(self, ctx: Context, settings: Any) -> bool:
        """Policy changes apply live; anything about the source asks for a restart. Files are re-read
        (before the first SVID too: the wait for it ends at once)."""
        old, new = self._settings, settings.identity
        if old is None:
            return False
        same_source = dataclasses.replace(old, allowed_ids=(), allowed_patterns=()) == dataclasses.replace(
            new, allowed_ids=(), allowed_patterns=()
        )
        if not same_source:
            return False
        self._settings = new
        self.policy = new.policy()
        if not self._ready.is_set():
            self._wake.set()  # still waiting for the first SVID: look again now
        elif self.inner is not None:
            await self.inner.refresh()
        return True

    async def _show(self, _: dict[str, Any]) -> dict[str, Any]:
        src = self.inner
        out: dict[str, Any] = {"source": src.kind if src else None, "ready": self._ready.is_set()}
        if src is None or not src.has_svid():
            out["error"] = src.last_error if src else "not started"
            return out
        svid = src.svid()
        out.update(
            spiffe_id=str(svid.spiffe_id),
            serial=f"{svid.leaf.serial_number:x}",
            key_algorithm=svid.key_algorithm,
            not_before=svid.not_before.isoformat(),
            not_after=svid.not_after.isoformat(),
            expires_in=round(svid.seconds_to_expiry(time.time()), 1),
            trust_domains=sorted(src.bundles()),
            revoked_serials=sum(len(r.serials) for r in src.revocations()),
            rotations=self.source.rotations,
            last_error=src.last_error,
        )
        return out
