"""Post-quantum hybrid mutual TLS between mesh nodes, on asyncio, with pyOpenSSL memory BIOs.

Why pyOpenSSL: the ``cryptography`` wheel bundles OpenSSL 4, which has ML-KEM and ML-DSA, and
pyOpenSSL runs on that same library; Python's ``ssl`` module uses the system OpenSSL 3.0, which has
neither (see ``docs/peer.md``).

The transport in four modules:

* :mod:`x0tta.peer.tlspolicy` - what a handshake demands (TLS 1.3, ``X25519MLKEM768``, the
  X509-SVID rules in the verify callback, resumption, no root on the wire) and the pyOpenSSL
  contexts built from one credentials snapshot;
* :mod:`x0tta.peer.osslshim` - every private pyOpenSSL / cffi call, each with why it is needed;
* :mod:`x0tta.peer.tlserrors` - the typed errors and the table from OpenSSL's error codes to a
  refusal reason;
* this module - the handshakes and the stream: :class:`TlsEndpoint`, :class:`TlsStream`. The
  names of the other three that callers use are importable from here too.

Theory of operation
-------------------
* Handshake crypto (ML-DSA signing ~1 ms, ML-KEM, verification) never runs on the event loop
  thread: each ``do_handshake`` step runs in a small thread pool (cffi releases the GIL inside
  OpenSSL), the loop only moves bytes between the socket and the memory BIOs. After the handshake,
  record encryption (AES-GCM, microseconds) runs on the loop.
* A handshake that does not finish within ``handshake_timeout`` is abandoned (``handshake_timeout``);
  that time, and the time certificates and cached sessions are checked at, is the endpoint's
  :class:`~x0tta.clock.Clock` (the peer service's); how long a handshake took is measured on the
  host's monotonic clock (a figure of real work for metrics and traces, not a decision);
  at most ``max_concurrent_handshakes`` run at once: above that a server refuses new connections at
  once (``busy``) rather than queueing work for an attacker, and a client waits.
* The negotiated group is recorded on every session (``SSL_get0_group_name``) and counted. A
  resumed session's peer certificate is validated again (expiry, revocation, policy) before use.
* Rotation: :meth:`TlsEndpoint.update` builds new contexts from the new SVID and bundles; new
  handshakes use them at once. Established connections keep their context, and the client forgets
  its sessions when its own SVID changes (it must present the new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography import x509
from OpenSSL import SSL

from x0tta.clock import SYSTEM, Clock
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.core.types import Reason, key_algorithm
from x0tta.peer import osslshim
from x0tta.peer.tlserrors import HandshakeFailed, Refusal, TlsClosed, classify
from x0tta.peer.tlspolicy import DEFAULT_GROUPS, Contexts, Credentials, TlsPolicy, Verification, check_peer

EXPORTER_LABEL = b"EXPORTER-x0tta-peer"
_READ_CHUNK = 65536


@dataclass(frozen=True)
class PeerInfo:
    """The authenticated other end of a TLS session."""

    spiffe_id: SpiffeId
    key_algorithm: str  # of the peer's leaf, e.g. ML-DSA-65
    not_before: float  # unix seconds
    not_after: float  # unix seconds: the peer's SVID expires then; re-authenticate before
    serial: int
    group: str  # negotiated key exchange group, e.g. X25519MLKEM768
    cipher: str
    resumed: bool
    handshake_seconds: float
    bytes_sent: int  # handshake bytes on the wire, this side to the peer
    bytes_received: int
    chain: tuple[x509.Certificate, ...] = field(default=(), repr=False, compare=False)  # leaf first

    @property
    def lifetime(self) -> float:
        return self.not_after - self.not_before


@dataclass(frozen=True)
class HandshakeResult:
    """Handed to the observer after every handshake, good or bad."""

    role: str  # "client" or "server"
    ok: bool
    reason: str  # "ok" or a Reason / Refusal value
    address: str
    group: str = ""
    spiffe_id: str = ""
    resumed: bool = False
    seconds: float = 0.0
    detail: str = ""


Observer = Callable[[HandshakeResult], None]


def _drain_bio(conn: SSL.Connection) -> bytes:
    chunks = []
    while True:
        try:
            data = conn.bio_read(_READ_CHUNK)
        except SSL.WantReadError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _background_thread() -> None:
    """Handshake threads yield the CPU to the event loop thread (Linux: per-thread nice + 5).

    A router has one to four cores; when handshakes and the loop compete for one, the loop's
    heartbeats and healing decisions should win and the handshake take a millisecond longer.
    """
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 5))


def _handshake_step(conn: SSL.Connection) -> tuple[bool, bytes, SSL.Error | None]:
    """One ``do_handshake`` step, in a worker thread: (done, bytes to send, error)."""
    err = None
    done = False
    try:
        osslshim.do_handshake(conn)  # conn.do_handshake(), keeping OpenSSL's error codes
        done = True
    except SSL.WantReadError:
        pass
    except SSL.Error as exc:
        err = exc
    return done, _drain_bio(conn), err


class TlsStream:
    """An authenticated TLS 1.3 connection over asyncio streams (after a successful handshake).

    ``recv``/``send`` encrypt and decrypt on the loop thread (cheap symmetric crypto). Not safe
    for concurrent ``recv`` calls; ``send`` may be called from several tasks (each call writes
    whole records).
    """

    def __init__(self, conn: SSL.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: PeerInfo, role: str, contexts: Contexts) -> None:
        self._conn = conn
        self._reader = reader
        self._writer = writer
        self.peer = peer
        self.role = role
        self.credentials = contexts.credentials  # what this side presented and trusted
        self.handshake: HandshakeResult | None = None  # the TLS handshake's outcome (ok)
        self._closed = False
        self.on_session: Callable[[SSL.Session], None] | None = None  # client: keep for resumption

    @property
    def address(self) -> str:
        info = self._writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if info else "?"

    @property
    def peer_host(self) -> str:
        """The peer's IP address (with ``%scope`` for a link-local IPv6 one), without the port."""
        info = self._writer.get_extra_info("peername")
        if not info:
            return ""
        host = str(info[0])
        # Python leaves the scope out of a peer's link-local address; the interface it names is
        # the link the session runs over (the heal loop keys that link's probes with the session)
        if len(info) >= 4 and info[3] and "%" not in host:
            with contextlib.suppress(OSError):
                host = f"{host}%{socket.if_indextoname(info[3])}"
        return host

    def export_keying_material(self, label: bytes = EXPORTER_LABEL, length: int = 32,
                               context: bytes | None = None) -> bytes:
        """RFC 8446 section 7.5 exporter: the same bytes on both ends, for channel binding."""
        return self._conn.export_keying_material(label, length, context)

    def session(self) -> SSL.Session | None:
        return self._conn.get_session()

    async def recv(self) -> bytes:
        """Decrypted bytes, at least one; ``b""`` at a clean end. :class:`TlsClosed` otherwise."""
        while True:
            try:
                data = self._conn.recv(_READ_CHUNK)
                self._keep_session()
                return data
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                return b""
            except SSL.Error as exc:
                raise TlsClosed(f"TLS error: {exc}") from None
            out = _drain_bio(self._conn)  # e.g. a KeyUpdate answer
            if out:
                self._writer.write(out)
            try:
                data = await self._reader.read(_READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                raise TlsClosed(str(exc)) from None
            if not data:
                raise TlsClosed("connection closed without close_notify")
            self._conn.bio_write(data)

    def _keep_session(self) -> None:
        # TLS 1.3 tickets arrive after the handshake: the resumable session exists only once the
        # client has read past them, so it is handed over on the first read and at close.
        if self.on_session is not None:
            session = self._conn.get_session()
            if session is not None:
                self.on_session(session)
                self.on_session = None

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise TlsClosed("stream closed")
        try:
            self._conn.sendall(data)
        except SSL.Error as exc:
            raise TlsClosed(f"TLS error: {exc}") from None
        self._writer.write(_drain_bio(self._conn))
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise TlsClosed(str(exc)) from None

    @property
    def closed(self) -> bool:
        return self._closed or self._writer.is_closing()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._keep_session()
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self._writer.write(_drain_bio(self._conn))
        self._writer.close()
        # real time, whatever the clock: a bound on the kernel's close, not a decision of the
        # service. A cancellation (the service stopping) is not swallowed: the stop goes on.
        with contextlib.suppress(ConnectionError, OSError):  # TimeoutError is an OSError
            await SYSTEM.wait_for(self._writer.wait_closed(), 1.0)


class TlsEndpoint:
    """This node's TLS side: contexts from the current credentials, handshakes for both roles.

    ``observer`` (if any) is called on the loop thread with a :class:`HandshakeResult` after every
    handshake attempt; with ``defer_ok`` only after failed ones: a successful one is left on the
    stream (:attr:`TlsStream.handshake`) for the caller to report once the session above TLS has
    come up, or failed (the peer service does that after the peer's Hello).
    """

    def __init__(self, policy: TlsPolicy, credentials: Credentials, *, observer: Observer | None = None,
                 clock: Clock = SYSTEM, executor: ThreadPoolExecutor | None = None,
                 defer_ok: bool = False) -> None:
        self.policy = policy
        self._clock = clock
        self._observer = observer
        self._defer_ok = defer_ok
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=max(1, min(policy.handshake_threads, os.cpu_count() or 1)),
            thread_name_prefix="x0tta-tls",
            initializer=_background_thread,
        )
        self._contexts = Contexts(policy, credentials, clock.time)
        self._active = 0
        self._client_slots = asyncio.Semaphore(policy.max_concurrent_handshakes)
        self._sessions: dict[str, tuple[SSL.Session, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self.generation = 0

    @property
    def credentials(self) -> Credentials:
        return self._contexts.credentials

    @property
    def active_handshakes(self) -> int:
        return self._active

    def update(self, credentials: Credentials) -> None:
        """Use new credentials for every handshake from now on (rotation). Established streams stay."""
        old = self._contexts.credentials
        self._contexts = Contexts(self.policy, credentials, self._clock.time)
        self.generation += 1
        if old.svid.leaf != credentials.svid.leaf:
            self._sessions.clear()  # a resumed session would present the old SVID

    def forget_session(self, key: str) -> None:
        self._sessions.pop(key, None)

    def close(self) -> None:
        self._sessions.clear()
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- handshakes --------------------------------------------------------------------------------

    async def connect(self, host: str, port: int, *, expect: SpiffeId | None = None, resume: bool = True,
                      local_addr: tuple[str, int] | None = None) -> TlsStream:
        """Open TCP to ``host:port`` and complete a mutual handshake as client."""
        key = f"{host}:{port}"
        async with self._client_slots:
            start = time.monotonic()
            opening = asyncio.ensure_future(_open(host, port, local_addr))
            try:
                reader, writer = await self._clock.wait_for(opening, self.policy.handshake_timeout)
            except BaseException as exc:
                # The wait may drop a connection that came up in the very loop turn this dial was
                # cancelled (a link stopped): nobody else holds it, so it is closed here.
                opening.add_done_callback(_close_opened)
                if not isinstance(exc, (TimeoutError, OSError)):
                    raise
                # Not a handshake: nobody answered. Not reported to the observer.
                raise HandshakeFailed(Refusal.UNREACHABLE.value, f"connect: {exc or 'timeout'}") from None
            session = None
            if resume:
                cached = self._sessions.get(key)
                if cached and cached[1] > self._clock.time():
                    session = cached[0]
            stream = await self._handshake("client", reader, writer, key, expect, session, start)
            until = min(stream.peer.not_after, self._clock.time() + self.policy.session_lifetime)
            generation = self.generation

            def keep(sess: SSL.Session) -> None:
                if self.generation == generation:  # not if our SVID rotated meanwhile
                    self._sessions[key] = (sess, until)

            stream.on_session = keep
            return stream

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> TlsStream:
        """Complete a mutual handshake as server on an accepted TCP connection."""
        info = writer.get_extra_info("peername")
        address = f"{info[0]}:{info[1]}" if info else "?"
        if self._active >= self.policy.max_concurrent_handshakes:
            writer.close()
            result = HandshakeResult("server", False, Refusal.BUSY.value, address,
                                     detail=f"{self._active} handshakes in progress")
            self._report(result)
            raise HandshakeFailed(result.reason, result.detail)
        return await self._handshake("server", reader, writer, address, None, None, time.monotonic())

    async def _handshake(self, role: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         address: str, expect: SpiffeId | None, session: SSL.Session | None,
                         start: float) -> TlsStream:
        contexts = self._contexts
        ctx = contexts.server if role == "server" else contexts.client
        conn = SSL.Connection(ctx, None)
        st = Verification(contexts.credentials, expect)
        conn.set_app_data(st)
        if role == "server":
            conn.set_accept_state()
        else:
            conn.set_connect_state()
            if session is not None:
                conn.set_session(session)
        sent = received = 0
        loop = asyncio.get_running_loop()

        async def exchange() -> None:
            nonlocal sent, received
            while True:
                done, out, err = await loop.run_in_executor(self._executor, _handshake_step, conn)
                if out:
                    sent += len(out)
                    writer.write(out)
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.drain()
                if err is not None:  # the certificate rules' reason first, else OpenSSL's
                    reason, detail = ((st.verdict_reason, st.detail) if st.verdict_reason is not None
                                      else classify(err))
                    raise HandshakeFailed(reason, detail, st.spiffe_id)
                if done:
                    return
                try:
                    data = await reader.read(_READ_CHUNK)
                except (ConnectionError, OSError) as exc:
                    raise HandshakeFailed(Refusal.CLOSED.value, str(exc)) from None
                if not data:
                    raise HandshakeFailed(Refusal.CLOSED.value, "peer closed during the handshake", st.spiffe_id)
                received += len(data)
                conn.bio_write(data)

        self._active += 1
        try:
            await self._clock.wait_for(exchange(), self.policy.handshake_timeout)
            peer = self._peer_info(conn, st, start, sent, received)
        except TimeoutError:
            exc = HandshakeFailed(Refusal.HANDSHAKE_TIMEOUT.value,
                                  f"not done after {self.policy.handshake_timeout:g} s", st.spiffe_id)
            self._fail(role, address, exc, start, writer)
            raise exc from None
        except HandshakeFailed as exc:
            self._fail(role, address, exc, start, writer)
            raise
        except BaseException:
            writer.close()  # abandoned (shutdown) or an unexpected error: no report, but no leaked socket
            raise
        finally:
            self._active -= 1
        result = HandshakeResult(role, True, "ok", address, peer.group, str(peer.spiffe_id), peer.resumed,
                                 peer.handshake_seconds)
        if not self._defer_ok:
            self._report(result)
        stream = TlsStream(conn, reader, writer, peer, role, contexts)
        stream.handshake = result
        return stream

    def _peer_info(self, conn: SSL.Connection, st: Verification, start: float, sent: int,
                   received: int) -> PeerInfo:
        group = conn.get_group_name() or ""
        if group.lower() not in {g.lower() for g in self.policy.groups}:  # cannot happen; checked anyway
            raise HandshakeFailed(Refusal.NO_SHARED_GROUP.value, f"negotiated {group}")
        resumed = osslshim.session_reused(conn)
        peer_cert = conn.get_peer_certificate()
        if peer_cert is None:
            raise HandshakeFailed(Reason.NO_CERTIFICATE.value, "no peer certificate after the handshake")
        leaf = peer_cert.to_cryptography()
        sid = st.spiffe_id
        if st.certs and not resumed:
            chain = [st.certs[d] for d in sorted(st.certs)]
        else:
            chain = [leaf] + [c.to_cryptography() for c in (conn.get_peer_cert_chain() or [])[1:]]
        if resumed or sid is None:
            # No verify callback ran: the session's certificate must still pass today's rules.
            reason, detail, sid = check_peer(self.policy, st.credentials, chain, self._clock.time(), st.expect)
            if reason is not None:
                raise HandshakeFailed(reason, detail, sid)
        assert sid is not None
        return PeerInfo(
            spiffe_id=sid,
            key_algorithm=key_algorithm(leaf),
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
            serial=leaf.serial_number,
            group=group,
            cipher=conn.get_cipher_name() or "",
            resumed=resumed,
            handshake_seconds=time.monotonic() - start,
            bytes_sent=sent,
            bytes_received=received,
            chain=tuple(chain),
        )

    def _fail(self, role: str, address: str, exc: HandshakeFailed, start: float,
              writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.close()
        self._report(HandshakeResult(role, False, exc.reason, address,
                                     spiffe_id=str(exc.spiffe_id or ""), seconds=time.monotonic() - start,
                                     detail=exc.detail))

    def _report(self, result: HandshakeResult) -> None:
        if self._observer is not None:
            self._observer(result)

    async def serve(self, host: str, port: int, on_stream: Callable[[TlsStream], object], *,
                    reuse_port: bool = False) -> asyncio.Server:
        """Listen; every successful handshake is handed to ``on_stream`` (a coroutine function)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            stream = None
            try:
                stream = await self.accept(reader, writer)
                await on_stream(stream)  # type: ignore[misc]
            except HandshakeFailed:
                pass  # reported through the observer
            finally:
                self._tasks.discard(task)
                if stream is None:
                    writer.close()
                else:  # a no-op if the handler closed it; else it ended by an error or aclose's cancellation
                    await stream.close()

        # host "" or None: every address, IPv4 and IPv6 (asyncio makes one V6ONLY socket per family).
        server = await asyncio.start_server(handle, host or None, port, reuse_port=reuse_port)
        self._servers.append(server)
        return server

    async def aclose(self) -> None:
        """Stop listening, abandon handshakes and handlers in progress, release the thread pool."""
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await SYSTEM.wait_for(server.wait_closed(), 1.0)  # real time, as a stream's close
        self._servers.clear()
        self.close()


def _scoped_sockaddr(host: str, port: int) -> tuple[str, int, int, int] | None:
    """``fe80::1%mesh0`` -> its socket address with the interface's index, or None for any host
    without a scope. Resolved here because uvloop drops the scope of a link-local address (the
    connection then leaves by whichever interface the kernel picks)."""
    addr, _, scope = host.partition("%")
    if not scope:
        return None
    index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
    return addr, port, 0, index


async def _open(host: str, port: int,
                local_addr: tuple[str, int] | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP to ``host:port``; a link-local ``fe80::...%if`` address through a socket scoped to its link."""
    scoped = _scoped_sockaddr(host, port)
    if scoped is None:
        return await asyncio.open_connection(host, port, local_addr=local_addr)
    sock = await _connect_scoped(scoped, local_addr)
    return await asyncio.open_connection(sock=sock)


def _close_opened(opening: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    """Done callback of a dial whose caller gave up on it: close the connection if it came up."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[1].close()


async def _connect_scoped(sockaddr: tuple[str, int, int, int], local_addr: tuple[str, int] | None) -> socket.socket:
    """A TCP connection to a link-local socket address, scope kept, without blocking the loop."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if local_addr is not None:
            sock.bind(local_addr)
        err = sock.connect_ex(sockaddr)
        if err == errno.EINPROGRESS:
            ready = loop.create_future()
            loop.add_writer(sock.fileno(), lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_writer(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


def hosts_and_ports(addresses: Iterable[str], default_port: int) -> list[tuple[str, int]]:
    """``"10.0.0.2"``, ``"10.0.0.2:7400"``, ``"[fe80::1%mesh0]:7400"`` -> ``(host, port)``."""
    out = []
    for text in addresses:
        text = text.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            port = int(p)
        else:
            host, port = text, default_port
        out.append((host, port))
    return out


__all__ = [
    "DEFAULT_GROUPS", "EXPORTER_LABEL", "Credentials", "HandshakeFailed", "HandshakeResult", "Observer", "PeerInfo",
    "Refusal", "TlsClosed", "TlsEndpoint", "TlsPolicy", "TlsStream", "check_peer", "hosts_and_ports",
]
