"""The peer subsystem: PQC mTLS sessions to the mesh neighbours, kept up through rotation.

What it does
------------
* Takes this node's SVID, trust bundles and revocation lists from the identity subsystem's source
  (:meth:`IdentityService.wait_source`) and the authorization policy from ``[identity]``.
* Listens on ``[peer] listen_address:port`` and accepts mutual TLS sessions (``x0tta.peer.tls``);
  every accepted session runs the peer protocol (``x0tta.peer.session``).
* Keeps one outgoing session (a :class:`Link`) to every peer address: those in ``[peer] peers`` plus
  whatever ``neighbours`` holds: an iterable of addresses, or a callable returning one, asked
  again every ``neighbour_refresh`` (batman-adv's neighbour table, wired by the agent).
  Links reconnect with exponential backoff; a reconnect resumes the TLS session when it can.
* Rotation: on every update from the source, :meth:`TlsEndpoint.update` rebuilds the TLS contexts
  (new handshakes use the new SVID and bundle at once), and every established session's peer
  chain is checked again under the new bundle and revocation lists (a revoked peer is sent away).
  A link re-authenticates with a new full handshake *before* the shorter of the two SVIDs runs
  out (``reauth_fraction``), and at once when our own SVID rotated: the new session is
  established first, new requests go to it, and the old one drains (GoAway both ways, in-flight
  requests complete) before it closes. No request is lost to a rotation.
* An accepted session whose peer SVID expires is sent away (GoAway) at that moment: the peer
  should have re-authenticated before.
* A gate the composition root may set (:attr:`PeerService.gate`: the guard's quarantine) refuses an
  authenticated session before anyone hears of it; :meth:`PeerService.send_away_where` sends away
  the sessions of a peer quarantined while they run. A session this end sends away is reported
  down with that reason (``revoked``, ``quarantined``), not with how it drained.
* A deny-list the composition root hands over (:meth:`PeerService.deny`: the CA's revocations that
  the replicated mesh state carried, before any CRL does) refuses a session whose SPIFFE ID or leaf
  serial it names and sends away those up now, with the reason ``revoked``.

Health conditions: ``identity_unavailable`` (degraded, no SVID source yet), ``listen_failed``
(failing), ``peers_unreachable`` (degraded: some configured peers have no session),
``classical_authentication`` (ok, a note: sessions whose peer's leaf is not ML-DSA, e.g. SPIRE's
ECDSA P-256 SVIDs, which ``[peer] accepted_signatures`` lets in by default in SPIRE mode).

Metrics (``x0tta_peer_``): ``handshakes_total{role,result,reason}``,
``negotiated_groups_total{group}``, ``sessions{direction}``,
``sessions_authenticated{signature,authentication}``, ``rotations_total{kind}`` (credential
updates applied: svid, bundle), ``reauthentications_total{result}``, ``sessions_closed_total{reason}``,
``requests_total{direction,result}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context as TraceContext
from prometheus_client import Counter, Gauge

from x0tta import __version__
from x0tta.clock import SYSTEM, Clock
from x0tta.common.errors import CapabilityMissing, TemporaryError
from x0tta.common.subsystem import Context, Subsystem
from x0tta.config.peer import PQ_SIGNATURES, PeerSettings
from x0tta.identity.core.types import SourceUpdate
from x0tta.peer.conditions import CLASSICAL_AUTHENTICATION, IDENTITY_UNAVAILABLE, LISTEN_FAILED, PEERS_UNREACHABLE
from x0tta.peer.core import Hello, Limits, Request
from x0tta.peer.core.deny import DenyList
from x0tta.peer.core.frames import STATUS_OK, STATUS_UNKNOWN_METHOD
from x0tta.peer.session import PeerSession, RequestFailed, SessionClosed, wait_first
from x0tta.peer.tls import (
    Credentials,
    HandshakeFailed,
    HandshakeResult,
    Refusal,
    TlsClosed,
    TlsEndpoint,
    TlsPolicy,
    TlsStream,
    check_peer,
    hosts_and_ports,
)
from x0tta.telemetry.tracing import context_of, traceparent_of

CAPABILITIES = ("rpc.v1",)
LINK_KEY_LABEL = b"EXPORTER-x0tta-link-v1"  # RFC 8446 7.5; x0tta.heal.core.linkkeys.LABEL names the same
MethodHandler = Callable[[PeerSession, bytes], Awaitable[bytes]]


class IdentityProvider(Protocol):
    async def wait_source(self, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class PeerChange:
    """Handed to :meth:`PeerService.subscribe` callbacks: an authenticated session came up or went.

    ``host`` is the peer's IP address as the socket saw it (the guard maps it to the neighbour's
    MAC to admit its batman-adv frames); ``spiffe_id`` was verified in the handshake.
    ``link_key`` is a secret only the two ends of this session hold (the TLS exporter with label
    :data:`LINK_KEY_LABEL`), the same in the up and the down change: the heal loop keys its
    liveness probes on that link with it.
    """

    up: bool
    host: str
    spiffe_id: str
    direction: str  # "in" or "out"
    reason: str = ""  # why it went down
    link_key: bytes = b""


class NoSession(TemporaryError):
    """No established session to that peer (yet)."""


def tls_policy(s: PeerSettings, source: str = "builtin") -> TlsPolicy:
    """What handshakes demand under ``s``, for an identity from ``source`` (``[identity] source``)."""
    return TlsPolicy(
        groups=tuple(s.groups),
        allowed_key_algorithms=frozenset(s.signatures(source)),
        handshake_timeout=s.handshake_timeout,
        max_concurrent_handshakes=s.max_concurrent_handshakes,
        session_lifetime=s.session_lifetime,
        handshake_threads=s.handshake_threads,
    )


def authentication(signature: str) -> str:
    """``post_quantum`` for an ML-DSA leaf, else ``classical``: how a session's peer authenticated."""
    return "post_quantum" if signature in PQ_SIGNATURES else "classical"


def before_hello(close_reason: str) -> str:
    """The refusal reason of a session that closed (``close_reason``) before the peer's Hello."""
    if "alert" in close_reason:
        return Refusal.PEER_REFUSED.value  # TLS 1.3: the server refused our certificate after our side was done
    if close_reason.startswith("protocol error"):
        return Refusal.PROTOCOL_ERROR.value
    return Refusal.NO_HELLO.value


def limits(s: PeerSettings) -> Limits:
    return Limits(
        max_frame=s.frame_max_size,
        max_in_flight=s.max_in_flight,
        max_buffered=s.max_buffered,
        hello_timeout=s.handshake_timeout,
        read_timeout=s.read_timeout,
        idle_timeout=s.idle_timeout,
        heartbeat_interval=s.heartbeat_interval,
        request_timeout=s.request_timeout,
    )


class _Metrics:
    def __init__(self, registry: Any) -> None:
        self.handshakes = Counter(
            "x0tta_peer_handshakes_total", "TLS handshakes by role, result and reason.",
            ["role", "result", "reason"], registry=registry)
        self.groups = Counter(
            "x0tta_peer_negotiated_groups_total", "Successful handshakes by negotiated key exchange group.",
            ["group"], registry=registry)
        self.sessions = Gauge("x0tta_peer_sessions", "Established peer sessions.", ["direction"], registry=registry)
        self.authenticated = Gauge(
            "x0tta_peer_sessions_authenticated",
            "Established peer sessions by the peer leaf's signature algorithm and whether it is post-quantum.",
            ["signature", "authentication"], registry=registry)
        self.rotations = Counter(
            "x0tta_peer_rotations_total", "Credential updates applied to the TLS contexts (svid or bundle).",
            ["kind"], registry=registry)
        self.reauth = Counter(
            "x0tta_peer_reauthentications_total", "Session re-authentications (new handshake, old drained).",
            ["result"], registry=registry)
        self.closed = Counter(
            "x0tta_peer_sessions_closed_total", "Peer sessions closed, by reason.", ["reason"], registry=registry)
        self.requests = Counter(
            "x0tta_peer_requests_total", "Peer protocol requests by direction and result.",
            ["direction", "result"], registry=registry)


class Link:
    """The outgoing session to one peer address, kept up and re-authenticated before expiry."""

    def __init__(self, service: PeerService, host: str, port: int) -> None:
        self.service = service
        self.host, self.port = host, port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.current: PeerSession | None = None
        self.last_error = ""
        self.reauthentications = 0
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"peer-link-{self.address}")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.current is not None:
            await self.current.close("stopped")

    async def session(self, timeout: float) -> PeerSession:
        """The current usable session, waiting up to ``timeout`` for one."""
        clock = self.service.clock
        deadline = clock.monotonic() + timeout
        while True:
            cur = self.current
            if cur is not None and cur.usable:
                return cur
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                raise NoSession(f"no session to {self.address}: {self.last_error or 'connecting'}")
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await clock.wait_for(self._ready.wait(), min(remaining, 0.5))

    def _reauth_at(self, session: PeerSession) -> float:
        own = session.stream.credentials.svid
        peer = session.peer
        lifetime = min(own.lifetime, peer.lifetime)
        return min(own.expires_at, peer.not_after) - self.service.settings.reauth_fraction * lifetime

    async def _run(self) -> None:
        svc = self.service
        clock = svc.clock
        delay = svc.settings.reconnect_min_delay
        session: PeerSession | None = None
        up_since = 0.0
        quick = 0  # sessions in a row that closed soon after they came up
        not_before = 0.0  # no re-authentication before (after one that gained nothing)

        def failed(error: str) -> None:
            if error != self.last_error:
                svc.log.info("peer_connect_failed", address=self.address, error=error, retry_in=delay)
            self.last_error = error

        async def back_off() -> None:
            nonlocal delay
            await clock.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - redial jitter, not a secret
            delay = min(delay * 2, svc.settings.reconnect_max_delay)

        while True:
            if session is None or session.closed.is_set():
                self.current = None
                if session is not None:
                    lived = clock.monotonic() - up_since
                    if lived < svc.settings.reconnect_max_delay:
                        # closed soon after it came up: the peer refused it after the handshake (it
                        # quarantined or revoked us) or keeps dropping it. Redialling at once would
                        # run PQ handshakes in a loop on both nodes (the attack lab saw 20 a second
                        # between two nodes that had quarantined each other): a failed dial
                        quick += 1
                        failed(f"session closed {lived:.1f} s after it came up ({session.close_reason or 'closed'})")
                        await back_off()
                    else:  # a session that held: its loss is news, redial at once
                        quick, delay = 0, svc.settings.reconnect_min_delay
                try:
                    session = await svc.open_session(self.host, self.port, resume=True)
                except (HandshakeFailed, SessionClosed, TlsClosed) as exc:
                    failed(str(exc))
                    session = None
                    await back_off()
                    continue
                if not quick:  # a dial that worked after failed ones; not after a run of refusals
                    delay = svc.settings.reconnect_min_delay
                up_since = clock.monotonic()
                self.last_error = ""
                self.current = session
                self._ready.set()
                svc.report_health()
            # Supervise: wake on close, on our own rotation, or when re-authentication is due.
            rotated = session.stream.credentials.svid.leaf != svc.endpoint_credentials().svid.leaf
            due = max(self._reauth_at(session), not_before) - clock.time()
            if not rotated and due > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await clock.wait_for(wait_first(session.closed, self._wake, timeout=None), due)
                continue
            if session.closed.is_set():
                continue
            # Re-authenticate: make the new session before breaking the old one.
            try:
                new = await svc.open_session(self.host, self.port, resume=False)
            except (HandshakeFailed, SessionClosed, TlsClosed) as exc:
                svc.metrics_reauth("failed")
                self.last_error = f"re-authentication failed: {exc}"
                svc.log.warning("peer_reauth_failed", address=self.address, error=str(exc))
                await clock.sleep(min(1.0, max(0.05, (session.peer.not_after - clock.time()) / 4)))
                if clock.time() >= session.peer.not_after:
                    await session.close("peer_svid_expired")
                continue
            old, session = session, new
            up_since = clock.monotonic()
            same_peer = new.peer.serial == old.peer.serial
            if same_peer and new.stream.credentials.svid.leaf == old.stream.credentials.svid.leaf:
                # Nothing newer on either side yet (the peer has not rotated): look again shortly,
                # well before the old SVID ends, instead of handshaking in a loop.
                not_before = clock.time() + min(5.0, max(0.1, (new.peer.not_after - clock.time()) / 4))
            self.current = new
            self._ready.set()
            svc.report_health()
            self.reauthentications += 1
            svc.metrics_reauth("ok")
            svc.log.info("peer_reauthenticated", address=self.address, peer=str(new.peer.spiffe_id),
                         serial=f"{new.peer.serial:x}", rotated=rotated)
            svc.spawn(svc.send_away(old, "reauthenticated"))


class PeerService(Subsystem):
    name = "peer"

    def __init__(self, identity: IdentityProvider | None = None, *,
                 neighbours: Callable[[], Iterable[str]] | Iterable[str] | None = None,
                 clock: Clock = SYSTEM) -> None:
        self._identity = identity
        self.clock = clock  # its time reads, sleeps and timeouts, and the time certificates are checked at
        self._neighbours = neighbours
        self._methods: dict[str, MethodHandler] = {"peer.echo": self._echo, "peer.info": self._info}
        self.capabilities: tuple[str, ...] = CAPABILITIES  # said in our Hello; the wiring adds what it serves
        self.links: dict[str, Link] = {}
        self.inbound: set[PeerSession] = set()
        self.endpoint: TlsEndpoint | None = None
        self.port: int | None = None
        self.settings = PeerSettings()
        self.source_kind = "builtin"  # [identity] source: decides the default accepted signatures
        self.log: Any = None
        self._ctx: Context | None = None
        self._metrics: _Metrics | None = None
        self._metrics_registry: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._policy: Any = None
        self._ready = asyncio.Event()
        self._subscribers: list[Callable[[PeerChange], None]] = []
        self._handshake_listeners: list[Callable[[HandshakeResult], None]] = []
        # Set by the composition root: (host, SPIFFE ID) -> why an authenticated session must be
        # refused after all (a quarantined neighbour), or "".
        self.gate: Callable[[str, str], str] | None = None
        self.denied = DenyList()  # revoked IDs and serials the composition root hands over (deny)

    # -- API for other subsystems -----------------------------------------------------------------

    def register_method(self, name: str, handler: MethodHandler) -> None:
        """Serve ``name`` to peers: ``handler(session, body) -> body``; its exceptions become errors."""
        self._methods[name] = handler

    def subscribe(self, callback: Callable[[PeerChange], None]) -> Callable[[], None]:
        """Call ``callback`` (on the loop, must not block) whenever a session comes up or goes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def on_handshake(self, callback: Callable[[HandshakeResult], None]) -> None:
        """Call ``callback`` (on the loop, must not block) with the outcome of every handshake,
        good or bad, in either role: the guard's detectors count failures and identities per MAC."""
        self._handshake_listeners.append(callback)

    def send_away_where(self, match: Callable[[str, str], bool], reason: str) -> int:
        """Send away every session whose (host, SPIFFE ID) ``match`` accepts; returns how many."""
        hit = [s for _d, s in self.sessions() if match(s.stream.peer_host, str(s.peer.spiffe_id))]
        for session in hit:
            self.spawn(self.send_away(session, reason))
        return len(hit)

    def deny(self, denied: DenyList) -> int:
        """Refuse from now on every session whose SPIFFE ID or leaf serial ``denied`` names, and send
        away those up now (reason ``revoked``: the guard ends their admission at once); returns how
        many were sent away."""
        self.denied = denied
        hit = [s for _d, s in self.sessions() if denied.refusal(str(s.peer.spiffe_id), s.peer.serial)]
        for session in hit:
            if self.log is not None:
                self.log.warning("peer_session_revoked", peer=str(session.peer.spiffe_id),
                                 reason=denied.refusal(str(session.peer.spiffe_id), session.peer.serial))
            self.spawn(self.send_away(session, "revoked"))
        return len(hit)

    def _notify(self, change: PeerChange) -> None:
        self._call_each(self._subscribers, change)

    def _call_each(self, callbacks: list[Callable[[Any], None]], arg: Any) -> None:
        for cb in list(callbacks):
            try:
                cb(arg)
            except Exception:  # one broken consumer must not stop the others
                self.log.exception("peer_subscriber_failed", subscriber=repr(cb))

    async def wait_ready(self, timeout: float | None = None) -> None:
        # real time, whatever the clock: the caller waits for a socket to listen, not for time to pass
        await SYSTEM.wait_for(self._ready.wait(), timeout)

    def sessions(self) -> list[tuple[str, PeerSession]]:
        out = [("out", link.current) for link in self.links.values() if link.current is not None]
        return out + [("in", s) for s in self.inbound]

    async def request(self, address: str, method: str, body: bytes = b"", *, timeout: float | None = None) -> bytes:
        """A request over the link to ``address`` (host:port as configured); retried on a new session
        if the old one stopped taking requests before this one left (rotation, reconnect)."""
        link = self.links.get(address)
        if link is None:
            raise NoSession(f"no link to {address}")
        timeout = self.settings.request_timeout if timeout is None else timeout
        clock = self.clock
        deadline = clock.monotonic() + timeout
        tracer = self._ctx.tracer if self._ctx is not None else trace.get_tracer("x0tta.peer")
        with tracer.start_as_current_span(f"peer.request {method}", kind=trace.SpanKind.CLIENT) as span:
            tp = traceparent_of(span)
            while True:
                session = await link.session(max(0.0, deadline - clock.monotonic()))
                span.set_attribute("peer.spiffe_id", str(session.peer.spiffe_id))
                try:
                    out = await session.request(method, body, timeout=max(0.01, deadline - clock.monotonic()),
                                                traceparent=tp)
                except SessionClosed as exc:
                    if exc.sent or clock.monotonic() >= deadline:
                        self._count_request("out", "failed")
                        raise
                    continue  # it never left: the next session takes it
                except RequestFailed:
                    self._count_request("out", "failed")
                    raise
                self._count_request("out", "ok")
                return out

    async def request_any(self, method: str, body: bytes, accept: Callable[[str, tuple[str, ...]], bool], *,
                          timeout: float | None = None) -> tuple[str, bytes]:
        """A request to the first established session whose peer ``accept(spiffe_id, capabilities)``
        takes, the next one if it fails; returns (the answering peer's SPIFFE ID, the body).

        Raises :class:`NoSession` when no session is accepted, else the last failure. The identity
        subsystem reaches CA nodes this way (renewal through the mesh).
        """
        timeout = self.settings.request_timeout if timeout is None else timeout
        chosen = []
        for _direction, session in self.sessions():
            hello = session.core.their_hello
            caps = tuple(hello.capabilities) if hello is not None else ()
            if accept(str(session.peer.spiffe_id), caps):
                chosen.append(session)
        if not chosen:
            raise NoSession(f"no session to a peer that serves {method}")
        error: Exception = NoSession(f"no session to a peer that serves {method}")
        for session in chosen:
            try:
                out = await session.request(method, body, timeout=timeout)
            except (SessionClosed, RequestFailed, TimeoutError) as exc:
                self._count_request("out", "failed")
                error = exc
                continue
            self._count_request("out", "ok")
            return str(session.peer.spiffe_id), out
        raise error

    # -- the subsystem ---------------------------------------------------------------------------

    async def run(self, ctx: Context) -> None:
        self._ctx = ctx
        self.settings = ctx.settings.peer
        self.source_kind = ctx.settings.identity.source
        self.log = ctx.log
        self._policy = ctx.settings.identity.policy()
        if self._metrics is None or self._metrics_registry is not ctx.registry:
            self._metrics, self._metrics_registry = _Metrics(ctx.registry), ctx.registry
        ctx.admin.register("peers.list", self._list)
        if self._identity is None:
            raise CapabilityMissing(IDENTITY_UNAVAILABLE, "the identity subsystem is disabled: no SVID")
        ctx.health.set(IDENTITY_UNAVAILABLE("waiting for this node's SVID"))
        source = await self._identity.wait_source()
        policy = tls_policy(self.settings, self.source_kind)
        # A TLS handshake counts as ok only once the peer's Hello arrived (_start_session)
        endpoint = TlsEndpoint(policy, self._credentials(source), observer=self._observe,
                               clock=self.clock, defer_ok=True)
        self.endpoint = endpoint
        unsubscribe = source.subscribe(self._on_identity)
        try:
            try:
                server = await endpoint.serve(self.settings.listen_address, self.settings.port, self._on_inbound)
            except OSError as exc:
                ctx.health.set(LISTEN_FAILED(str(exc)))
                raise
            self.port = server.sockets[0].getsockname()[1]
            ctx.log.info("peer_listening", address=self.settings.listen_address or "*", port=self.port,
                         groups=list(self.settings.groups), spiffe_id=str(source.svid().spiffe_id),
                         accepted_signatures=sorted(policy.allowed_key_algorithms or ()))
            self._ready.set()
            while True:
                self._reconcile()
                self.report_health()
                await self.clock.sleep(self.settings.neighbour_refresh)
        finally:
            self._ready.clear()
            unsubscribe()
            await self._shutdown()

    async def reload(self, ctx: Context, settings: Any) -> bool:
        old = self.settings
        new = settings.peer
        if (old.listen_address, old.port, tls_policy(old, self.source_kind), limits(old)) != (
            new.listen_address, new.port, tls_policy(new, settings.identity.source), limits(new)
        ):
            return False
        self.settings = new
        self.source_kind = settings.identity.source
        self._policy = settings.identity.policy()
        self._reconcile()
        return True

    async def _shutdown(self) -> None:
        # All at once: the agent gives every subsystem a few seconds to stop, not a few per peer.
        await asyncio.gather(*(link.stop() for link in self.links.values()),
                             *(s.close("shutdown") for s in list(self.inbound)), return_exceptions=True)
        self.links.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.endpoint is not None:
            await self.endpoint.aclose()
            self.endpoint = None

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def metrics_reauth(self, result: str) -> None:
        if self._metrics:
            self._metrics.reauth.labels(result).inc()

    def _count_request(self, direction: str, result: str) -> None:
        if self._metrics:
            self._metrics.requests.labels(direction, result).inc()

    # -- identity ----------------------------------------------------------------------------------

    def _credentials(self, source: Any) -> Credentials:
        return Credentials(source.svid(), dict(source.bundles()), self._policy, tuple(source.revocations()))

    def endpoint_credentials(self) -> Credentials:
        assert self.endpoint is not None
        return self.endpoint.credentials

    def _on_identity(self, update: SourceUpdate) -> None:
        """Called by the source on the loop thread: new SVID, bundle or revocation list."""
        if self.endpoint is None:
            return
        creds = Credentials(update.svid, dict(update.bundles), self._policy, tuple(update.revocations))
        self.endpoint.update(creds)
        kind = "svid" if update.rotated else "bundle"
        if self._metrics:
            self._metrics.rotations.labels(kind).inc()
        self.log.info("peer_credentials_updated", kind=kind, serial=f"{update.svid.leaf.serial_number:x}",
                      expires_at=update.svid.expires_at, generation=self.endpoint.generation)
        now = self.clock.time()
        for _direction, session in self.sessions():
            reason, detail, _ = check_peer(self.endpoint.policy, creds, session.peer.chain, now)
            if reason is not None:
                self.log.warning("peer_session_revalidation_failed", peer=str(session.peer.spiffe_id),
                                 reason=reason, detail=detail)
                self.spawn(self.send_away(session, reason))
        for link in self.links.values():
            link.wake()

    async def send_away(self, session: PeerSession, reason: str) -> None:
        """GoAway, let in-flight requests finish (up to ``request_timeout``), then close. The
        session's end is reported with ``reason`` (``revoked``, ``quarantined``...), not with how
        it closed (``drained``): the guard ends a revoked neighbour's admission at once."""
        session.sent_away = session.sent_away or reason
        await session.goaway(reason)
        with contextlib.suppress(TimeoutError):
            await self.clock.wait_for(session.closed.wait(), self.settings.request_timeout)
        await session.close(reason)

    # -- sessions ----------------------------------------------------------------------------------

    async def open_session(self, host: str, port: int, *, resume: bool) -> PeerSession:
        assert self.endpoint is not None
        stream = await self.endpoint.connect(host, port, resume=resume)
        return await self._start_session(stream, "out")

    async def _start_session(self, stream: TlsStream, direction: str) -> PeerSession:
        assert self._ctx is not None
        hello = Hello(self._ctx.node_id, capabilities=self.capabilities)
        session = PeerSession(stream, hello, limits(self.settings), self._handle, log=self.log, clock=self.clock)
        session.start()
        try:
            await session.wait_established(self.settings.handshake_timeout)
        except asyncio.CancelledError:
            await asyncio.shield(session.close("cancelled"))
            raise
        except SessionClosed as exc:
            # Refused after TLS: one count and one log line, under the reason of what went wrong
            self._observe(self._handshake_result(stream, ok=False, reason=before_hello(session.close_reason),
                                                 detail=str(exc)))
            raise
        self._observe(self._handshake_result(stream, ok=True))
        refused, why = self.denied.refusal(str(stream.peer.spiffe_id), stream.peer.serial), "revoked"
        if not refused and self.gate is not None:
            refused, why = self.gate(stream.peer_host, str(stream.peer.spiffe_id)), "quarantined"
        if refused:
            self.log.warning("peer_session_refused", direction=direction, address=stream.address,
                             peer=str(stream.peer.spiffe_id), reason=refused)
            if self._metrics:
                self._metrics.closed.labels(why).inc()
            await session.close(why)
            raise SessionClosed(f"refused: {refused}")
        signature = stream.peer.key_algorithm
        if self._metrics:
            self._metrics.sessions.labels(direction).inc()
            self._metrics.authenticated.labels(signature, authentication(signature)).inc()
        self.log.info("peer_session_established", direction=direction, address=stream.address,
                      peer=str(stream.peer.spiffe_id), peer_node=session.core.their_hello.node_id
                      if session.core.their_hello else "", group=stream.peer.group,
                      signature=signature, authentication=authentication(signature), resumed=stream.peer.resumed)
        session.link_key = stream.export_keying_material(LINK_KEY_LABEL, 32)
        self.spawn(self._watch(session, direction))
        self._notify(PeerChange(True, stream.peer_host, str(stream.peer.spiffe_id), direction,
                                link_key=session.link_key))
        return session

    @staticmethod
    def _handshake_result(stream: TlsStream, *, ok: bool, reason: str = "ok", detail: str = "") -> HandshakeResult:
        r = stream.handshake
        assert r is not None
        return r if ok else HandshakeResult(r.role, False, reason, r.address, r.group, r.spiffe_id, r.resumed,
                                            r.seconds, detail)

    async def _watch(self, session: PeerSession, direction: str) -> None:
        """Count the session's end; send an inbound peer away when its SVID expires."""
        try:
            if direction == "in":
                due = session.peer.not_after - self.clock.time()
                with contextlib.suppress(TimeoutError):
                    await self.clock.wait_for(session.closed.wait(), max(0.0, due))
                if not session.closed.is_set():
                    await self.send_away(session, "peer_svid_expired")
            await session.closed.wait()
        finally:
            self.inbound.discard(session)
            self._notify(PeerChange(False, session.stream.peer_host, str(session.peer.spiffe_id), direction,
                                    session.sent_away or session.close_reason or "shutdown",
                                    link_key=session.link_key))
            self.report_health()
            if self._metrics:
                self._metrics.sessions.labels(direction).dec()
                signature = session.peer.key_algorithm
                self._metrics.authenticated.labels(signature, authentication(signature)).dec()
                reason = session.close_reason.split(":")[0] if session.close_reason else "shutdown"
                known = ("drained", "eof", "stopped", "shutdown", "peer_svid_expired", "idle timeout",
                         "hello_timeout", "read timeout", "reauthenticated", "quarantined", "revoked")
                self._metrics.closed.labels(reason if reason in known else "error").inc()

    async def _on_inbound(self, stream: TlsStream) -> None:
        try:
            session = await self._start_session(stream, "in")
        except SessionClosed:
            return
        self.inbound.add(session)
        self.report_health()
        await session.closed.wait()

    async def _handle(self, session: PeerSession, req: Request) -> tuple[int, bytes]:
        handler = self._methods.get(req.method)
        if handler is None:
            self._count_request("in", "unknown_method")
            return STATUS_UNKNOWN_METHOD, req.method.encode()
        tracer = self._ctx.tracer if self._ctx is not None else trace.get_tracer("x0tta.peer")
        with tracer.start_as_current_span(f"peer.serve {req.method}", context=context_of(req.traceparent),
                                          kind=trace.SpanKind.SERVER):
            body = await handler(session, req.body)
        self._count_request("in", "ok")
        return STATUS_OK, body

    async def _echo(self, _session: PeerSession, body: bytes) -> bytes:
        return body

    async def _info(self, _session: PeerSession, _body: bytes) -> bytes:
        node = self._ctx.node_id if self._ctx else ""
        return json.dumps({"node": node, "version": __version__}).encode()

    # -- neighbours --------------------------------------------------------------------------------

    def peer_addresses(self) -> list[tuple[str, int]]:
        addresses = list(self.settings.peers)
        if self._neighbours is not None:
            try:
                found = self._neighbours() if callable(self._neighbours) else self._neighbours
                addresses += list(found)
            except Exception as exc:  # a broken neighbour source must not stop configured peers
                self.log.warning("peer_neighbours_failed", error=str(exc))
        seen: dict[str, tuple[str, int]] = {}
        for host, port in hosts_and_ports(addresses, self.settings.port):
            seen.setdefault(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", (host, port))
        return list(seen.values())

    def _reconcile(self) -> None:
        wanted = {}
        for host, port in self.peer_addresses():
            link = Link(self, host, port)
            wanted[link.address] = link
        for address in [a for a in self.links if a not in wanted]:
            self.spawn(self.links.pop(address).stop())
        for address, link in wanted.items():
            if address not in self.links:
                self.links[address] = link
                link.start()

    def report_health(self) -> None:
        """Post the conditions of the moment: peers without a session, and the sessions whose peer
        authenticated classically (a note, not a fault: SPIRE's ECDSA SVIDs)."""
        if self._ctx is None or self.endpoint is None:
            return
        conditions = []
        down = [a for a, link in self.links.items() if link.current is None]
        if down:
            conditions.append(PEERS_UNREACHABLE(
                f"no session to {len(down)} of {len(self.links)} peers: {', '.join(down[:5])}"))
        sessions = [s for _, s in self.sessions() if not s.closed.is_set()]
        classical = [s for s in sessions if authentication(s.peer.key_algorithm) == "classical"]
        if classical:
            named = ", ".join(f"{s.peer.spiffe_id} ({s.peer.key_algorithm}, {s.peer.group})" for s in classical[:5])
            more = f" and {len(classical) - 5} more" if len(classical) > 5 else ""
            conditions.append(CLASSICAL_AUTHENTICATION(
                f"{len(classical)} of {len(sessions)} sessions authenticate classically, key exchange "
                f"post-quantum: {named}{more}"))
        self._ctx.health.set(*conditions)

    # -- metrics and admin -------------------------------------------------------------------------

    def _observe(self, r: HandshakeResult) -> None:
        self._call_each(self._handshake_listeners, r)
        self._trace_handshake(r)
        if self._metrics is not None:
            self._metrics.handshakes.labels(r.role, "ok" if r.ok else "refused", r.reason).inc()
            if r.ok:
                self._metrics.groups.labels(r.group).inc()
        if self.log is None:
            return
        if r.ok:
            self.log.debug("peer_handshake", role=r.role, address=r.address, peer=r.spiffe_id, group=r.group,
                           resumed=r.resumed, ms=round(r.seconds * 1000, 2))
        else:
            self.log.warning("peer_handshake_refused", role=r.role, address=r.address, reason=r.reason,
                             peer=r.spiffe_id or None, detail=r.detail)

    def _trace_handshake(self, r: HandshakeResult) -> None:
        """A ``peer.handshake`` span (a root: a handshake belongs to no other trace) over the time
        the handshake took, with its outcome; an error status when it was refused."""
        if self._ctx is None:
            return
        end = time.time_ns()  # the host's time, as every other span's: a record of real work, not a decision
        span = self._ctx.tracer.start_span(
            "peer.handshake", start_time=end - int(r.seconds * 1e9), context=TraceContext(),
            kind=trace.SpanKind.CLIENT if r.role == "client" else trace.SpanKind.SERVER,
            attributes={"peer.role": r.role, "peer.address": r.address, "peer.result": "ok" if r.ok else "refused",
                        "peer.reason": r.reason, "peer.spiffe_id": r.spiffe_id, "peer.group": r.group,
                        "peer.resumed": r.resumed})
        if not r.ok:
            span.set_status(trace.Status(trace.StatusCode.ERROR, r.reason))
        span.end(end_time=end)

    async def _list(self, _args: dict[str, Any]) -> list[dict[str, Any]]:
        now = self.clock.time()
        rows = []
        for direction, s in self.sessions():
            p = s.peer
            hello = s.core.their_hello
            rows.append({
                "direction": direction,
                "address": s.stream.address,
                "spiffe_id": str(p.spiffe_id),
                "node": hello.node_id if hello else "",
                "group": p.group,
                "signature_algorithm": p.key_algorithm,
                "authentication": authentication(p.key_algorithm),
                "svid_expires_at": p.not_after,
                "svid_expires_in": round(p.not_after - now, 1),
                "rtt_ms": round(s.core.rtt * 1000, 3) if s.core.rtt is not None else None,
                "resumed": p.resumed,
                "state": s.state.value,
                "since": s.opened_at,
                "requests_served": s.requests_served,
            })
        for address, link in self.links.items():
            if link.current is None:
                rows.append({"direction": "out", "address": address, "spiffe_id": "", "state": "connecting",
                             "error": link.last_error})
        return rows
