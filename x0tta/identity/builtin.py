"""The built-in CA's SVID source: files on disk, reloaded when they change, renewed before expiry.

The node directory (see :mod:`x0tta.identity.ca`) holds ``svid.pem``, ``svid.key``, ``bundle.pem``
and optionally ``crl.pem``. This source polls the four files' (inode, size, mtime) every
``poll_interval`` seconds and reloads when one changed; :meth:`BuiltinSource.refresh` reloads at
once (the identity subsystem calls it on SIGHUP). Polling four ``stat`` calls is cheaper than
explaining inotify's corner cases with atomic renames, and catches files replaced by any tool.

A reload is all-or-nothing: an SVID whose key does not match its certificate (a half-finished
copy), that does not chain to the bundle, or that is expired when a valid one is in hand, is not
taken; the old state stays and ``last_error`` says why, and the next poll tries again. A CRL that
fails its signature check is likewise ignored (the previous one stays in force).

Renewal, once ``renew_fraction`` of the current SVID's lifetime has passed:

* with a :class:`SelfRenewer` (config ``identity.ca_dir``, the CA key on this node) the source
  issues itself a new SVID (and its first one at start when it has none);
* otherwise (``request_renewal``) it writes a renewal request next to the SVID: a new key
  ``svid.key.new`` (0600) and ``svid.csr``. The CA host's job signs it (``x0tta ca sign``) and
  copies back ``svid.pem``; a certificate that does not match ``svid.key`` but matches the pending
  key is taken with it, and the pending key then replaces ``svid.key`` (one rename). The private
  key never leaves the node;
* the CA host may also simply re-issue (``x0tta ca renew``: new key and certificate) and copy
  both in.

If nothing arrives in time, the identity subsystem reports ``svid_expiring``.

First enrolment by request (``x0tta identity request`` on the node, ``x0tta ca sign`` on the CA
host, ``svid.pem`` copied back) is the same pairing with no ``svid.key`` yet: the pending key that
matches the certificate is taken and becomes ``svid.key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from x0tta.common.errors import X0ttaError
from x0tta.common.spiffe_id import SpiffeId
from x0tta.identity.ca import CSR_FILE, PENDING_KEY_FILE, CertificateAuthority, write_atomic, write_node_files
from x0tta.identity.core import certs
from x0tta.identity.core.certs import KeyType
from x0tta.identity.core.types import (
    RevocationList,
    SvidError,
    SvidUnavailable,
    SvidVerdict,
    TrustBundle,
    X509Svid,
    validate_x509_svid,
)
from x0tta.identity.source import SourceBase


@dataclass(frozen=True)
class BuiltinPaths:
    svid: Path
    key: Path
    bundle: Path
    revocation: Path

    @classmethod
    def in_dir(cls, directory: str | Path) -> BuiltinPaths:
        d = Path(directory)
        return cls(d / "svid.pem", d / "svid.key", d / "bundle.pem", d / "crl.pem")

    def all(self) -> tuple[Path, Path, Path, Path]:
        return (self.svid, self.key, self.bundle, self.revocation)


@dataclass(frozen=True)
class SelfRenewer:
    """Issue this node's SVID from a CA directory on this node (blocking: run in a thread)."""

    ca_dir: Path
    spiffe_id: SpiffeId
    ttl: float
    key_type: KeyType = KeyType.ML_DSA_65

    def renew(self, paths: BuiltinPaths) -> X509Svid:
        ca = CertificateAuthority(self.ca_dir)
        svid = ca.issue(self.spiffe_id, self.ttl, key_type=self.key_type)
        if paths.svid.parent == paths.key.parent == paths.bundle.parent == paths.revocation.parent:
            write_node_files(paths.svid.parent, svid, ca.bundle(), ca.crl_pem())
        else:  # files configured one by one
            for p in paths.all():
                p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(paths.key, svid.private_key_pem, 0o600)
            write_atomic(paths.svid, svid.chain_pem())
            write_atomic(paths.bundle, ca.bundle().to_pem())
            write_atomic(paths.revocation, ca.crl_pem())
        return svid


def write_request(directory: Path, spiffe_id: SpiffeId, key_type: KeyType = KeyType.ML_DSA_65) -> Path:
    """Make a renewal request on the node: a new key (``svid.key.new``, 0600) and its CSR.

    An existing pending key is reused (asking twice yields the same request), so a CA that signed
    the first CSR still matches. Blocking; returns the CSR's path.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pending = directory / PENDING_KEY_FILE
    try:
        key = certs.load_signing_key(pending.read_bytes())
    except (FileNotFoundError, ValueError):
        key = certs.generate_key(key_type)
        write_atomic(pending, certs.private_key_pem(key), 0o600)
    csr = certs.build_csr(key, spiffe_id)
    write_atomic(directory / CSR_FILE, csr.public_bytes(serialization.Encoding.PEM))
    return directory / CSR_FILE


def _promote(paths: BuiltinPaths, key_pem: bytes) -> bool:
    """The signed certificate arrived for the pending key: it becomes the key; the request is done.

    A rename, so ``svid.key`` is at every instant either the old key or the whole new one. Done only
    if the pending file still holds the key that matched (a new request may have replaced it since).
    """
    pending = paths.key.with_name(PENDING_KEY_FILE)
    if _read_key(pending) != key_pem:
        return False
    os.replace(pending, paths.key)
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(paths.key.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.key.with_name(CSR_FILE))
    return True


Signature = tuple[tuple[int, int, int] | None, ...]


def _signature(paths: BuiltinPaths) -> Signature:
    out: list[tuple[int, int, int] | None] = []
    for p in (*paths.all(), paths.key.with_name(PENDING_KEY_FILE)):
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass(frozen=True)
class _Loaded:
    svid: X509Svid
    bundle: TrustBundle
    revocation: RevocationList | None
    crl_error: str | None
    promote: bytes | None = None
    """The pending key, when it is the one that matches the certificate: it becomes ``svid.key``."""


def _read_key(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _pair(chain_pem: bytes, key: Path, pending: Path) -> tuple[X509Svid, bytes | None]:
    """The SVID from the certificate and whichever key matches it: ``svid.key``, else the pending key.

    Returns the SVID and, when the pending key is the one, its bytes (to promote). The pending key
    is tried whether or not ``svid.key`` exists: a node enrolled by request has only the pending key.
    """
    key_pem = _read_key(key)
    error: SvidError | None = None
    if key_pem is not None:
        try:
            return X509Svid.from_pem(chain_pem, key_pem), None
        except SvidError as exc:
            error = exc
    pending_pem = _read_key(pending)
    if pending_pem is not None:
        try:
            return X509Svid.from_pem(chain_pem, pending_pem), pending_pem
        except SvidError as exc:
            if error is None:  # no svid.key: say what is wrong with the one key there is
                raise SvidError(f"{pending}: {exc}") from None
    if error is not None:
        raise error
    raise SvidUnavailable(f"{key} does not exist")


def _load(paths: BuiltinPaths, trust_domain: str) -> _Loaded:
    """Read and parse the files (blocking). Raises SvidUnavailable / SvidError."""
    try:
        chain_pem = paths.svid.read_bytes()
        bundle_pem = paths.bundle.read_bytes()
        svid, promote = _pair(chain_pem, paths.key, paths.key.with_name(PENDING_KEY_FILE))
    except FileNotFoundError as exc:
        raise SvidUnavailable(f"{exc.filename} does not exist") from None
    except OSError as exc:
        raise SvidUnavailable(f"cannot read {exc.filename}: {exc.strerror}") from None
    bundle = TrustBundle.from_pem(trust_domain, bundle_pem)
    revocation, crl_error = None, None
    try:
        revocation = RevocationList.from_crl(paths.revocation.read_bytes(), bundle)
    except FileNotFoundError:
        pass
    except (OSError, SvidError) as exc:
        crl_error = f"revocation list {paths.revocation}: {exc}"
    return _Loaded(svid, bundle, revocation, crl_error, promote)


class BuiltinSource(SourceBase):
    kind = "builtin"

    def __init__(
        self,
        paths: BuiltinPaths,
        trust_domain: str,
        *,
        poll_interval: float = 2.0,
        renewer: SelfRenewer | None = None,
        renew_fraction: float = 0.5,
        request_renewal: bool = True,
        clock: Callable[[], float] = time.time,
        log: Any = None,
    ) -> None:
        super().__init__(log)
        self.request_renewal = request_renewal
        self.requests = 0
        self.paths = paths
        self.trust_domain = trust_domain
        self.poll_interval = poll_interval
        self.renewer = renewer
        self.renew_fraction = renew_fraction
        self.clock = clock
        self.crl_error: str | None = None
        self.renewals = 0
        self.renew_failures = 0
        self._sig: Signature | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._retry_renew_at = 0.0

    async def start(self) -> None:
        await self.refresh()
        if self._svid is None and self.renewer is not None:
            await self._renew()
        if self._svid is None:
            raise SvidUnavailable(self.last_error or "no SVID")
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="identity-builtin-watch")

    async def refresh(self) -> bool:
        """Reload the files now if they changed (or ``force``); True if the state changed."""
        async with self._lock:
            return await self._reload(force=True)

    async def _reload(self, force: bool = False) -> bool:
        sig = await asyncio.to_thread(_signature, self.paths)
        if not force and sig == self._sig:
            return False
        try:
            loaded = await asyncio.to_thread(_load, self.paths, self.trust_domain)
        except (SvidUnavailable, SvidError) as exc:
            if str(exc) != self.last_error:  # once per distinct problem, not once per poll
                self.log.warning("svid_load_failed", reason=str(exc))
            self.last_error = str(exc)
            return False  # keep _sig: try again on the next poll even if nothing changes
        self._sig = sig
        # Signature checks are crypto: off the event loop.
        verdict, current_ok = await asyncio.to_thread(self._verdicts, loaded, self._svid, self.clock())
        changed = self._take(loaded, verdict, current_ok)
        if loaded.promote is not None and self._svid is loaded.svid:
            if await asyncio.to_thread(_promote, self.paths, loaded.promote):
                self.log.info("svid_request_completed", spiffe_id=str(loaded.svid.spiffe_id))
            self._sig = await asyncio.to_thread(_signature, self.paths)
        return changed

    def _verdicts(self, loaded: _Loaded, current: X509Svid | None, now: float) -> tuple[SvidVerdict, bool]:
        """How the loaded SVID, and the one in hand, verify against the loaded bundle (blocking)."""
        bundles = {self.trust_domain: loaded.bundle}
        verdict = validate_x509_svid(loaded.svid.cert_chain, bundles, now)
        return verdict, current is not None and validate_x509_svid(current.cert_chain, bundles, now).ok

    def _take(self, loaded: _Loaded, verdict: SvidVerdict, current_ok: bool) -> bool:
        now = self.clock()
        bundles = {self.trust_domain: loaded.bundle}
        if not verdict.ok and current_ok:
            self.last_error = f"new SVID refused ({verdict.reason}): {verdict.detail}"
            self.log.warning("svid_refused", reason=str(verdict.reason), detail=verdict.detail)
            return False
        self.last_error = None if verdict.ok else f"SVID is not valid ({verdict.reason}): {verdict.detail}"
        self.crl_error = loaded.crl_error
        if loaded.crl_error:
            self.log.warning("revocation_list_refused", reason=loaded.crl_error)
        revs = (loaded.revocation,) if loaded.revocation else (self._revocations if loaded.crl_error else ())
        update = self._publish(loaded.svid, bundles, revs)
        if update is not None:
            self.log.info(
                "svid_loaded",
                spiffe_id=str(loaded.svid.spiffe_id),
                serial=f"{loaded.svid.leaf.serial_number:x}",
                expires_in=round(loaded.svid.seconds_to_expiry(now), 1),
                rotated=update.rotated,
                revoked_serials=len(revs[0].serials) if revs else 0,
            )
        return update is not None

    async def _renew(self) -> None:
        assert self.renewer is not None
        try:
            svid = await asyncio.to_thread(self.renewer.renew, self.paths)
        except (X0ttaError, OSError, ValueError) as exc:
            self.renew_failures += 1
            self.last_error = f"renewal failed: {exc}"
            self._retry_renew_at = self.clock() + max(self.poll_interval, 5.0)
            self.log.error("svid_renewal_failed", reason=str(exc))
            return
        self.log.info("svid_renewed", spiffe_id=str(svid.spiffe_id), serial=f"{svid.leaf.serial_number:x}")
        await self._reload(force=True)
        self.renewals += 1

    async def _watch(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.poll_interval)
            async with self._lock:
                await self._reload()
                svid = self._svid
                now = self.clock()
                if svid is None or now < svid.renew_at(self.renew_fraction) or now < self._retry_renew_at:
                    continue
                if self.renewer is not None:
                    await self._renew()
                elif self.request_renewal:
                    await self._request(svid)

    async def _request(self, svid: X509Svid) -> None:
        """Past renew time without a CA here: leave a key and CSR for the CA host's renewal job."""
        pending = self.paths.key.with_name(PENDING_KEY_FILE)
        csr = self.paths.key.with_name(CSR_FILE)
        if await asyncio.to_thread(lambda: pending.exists() and csr.exists()):
            return
        kt = KeyType.ECDSA_P256 if svid.key_algorithm.startswith("ECDSA") else KeyType.ML_DSA_65
        try:
            path = await asyncio.to_thread(write_request, self.paths.key.parent, svid.spiffe_id, kt)
        except OSError as exc:
            self.last_error = f"renewal request failed: {exc}"
            self._retry_renew_at = self.clock() + max(self.poll_interval, 5.0)
            self.log.error("svid_request_failed", reason=str(exc))
            return
        self.requests += 1
        self.log.info("svid_renewal_requested", csr=str(path), spiffe_id=str(svid.spiffe_id))

    def retry_interval(self) -> float | None:
        """Files missing or half-copied: enrolment is under way, look as often as the watch does."""
        if self.renewer is not None and (self.last_error or "").startswith("renewal failed"):
            return None
        return self.poll_interval

    def next_renewal(self) -> float | None:
        return self._svid.renew_at(self.renew_fraction) if self._svid and self.renewer else None

    async def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
