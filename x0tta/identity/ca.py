"""The built-in certificate authority: the default for meshes without SPIRE. File I/O lives here.

A CA is a directory (``0700``) on the operator's machine, or on one trusted node of a small mesh:

    ca.key       the root's private key, PKCS#8 PEM (encrypted with a passphrase if one was given
                 at init), mode 0600, written once, never logged
    ca.pem       the root certificate (ML-DSA-65 by default)
    bundle.pem   the trust bundle nodes verify peers with: the root, and during a root rollover
                 the old and the next one (next.key/next.pem, then old.pem; see rollover_*)
    crl.pem      the current revocation list, an X.509 CRL signed by the root
    state.json   trust domain, CRL number, revoked serials, and the serials issued (for
                 ``revoke --spiffe-id``); no key material
    .lock        serializes concurrent ``x0tta ca`` runs (flock)

Every file is replaced atomically (write to a temporary file in the same directory, fsync,
rename), so an agent watching ``crl.pem`` or an SVID directory never reads half a file.

An issued SVID is written as a node directory: ``svid.pem`` (leaf), ``svid.key`` (0600),
``bundle.pem`` and ``crl.pem``; that is what :class:`x0tta.identity.builtin.BuiltinSource` reads.
The key is written before the certificate, so a reader that sees a new certificate finds its key
already in place (and a reader that sees a new key with the old certificate gets a mismatch, keeps
what it had, and reads again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from x0tta.common.errors import PermanentError
from x0tta.common.spiffe_id import SpiffeId, validate_trust_domain
from x0tta.identity.core import certs
from x0tta.identity.core.certs import KeyType, RevokedEntry
from x0tta.identity.core.types import RevocationList, TrustBundle, X509Svid, chain_to_pem

ROOT_VALIDITY = 10 * 365 * 86400.0
"""Ten years: a mesh root is replaced by a planned rollover, not by expiry."""
CRL_VALIDITY = 7 * 86400.0
"""Agents flag a CRL older than its nextUpdate; a week leaves room for a CA host that is offline."""
MAX_TTL = 366 * 86400.0

SVID_FILE, KEY_FILE, BUNDLE_FILE, CRL_FILE = "svid.pem", "svid.key", "bundle.pem", "crl.pem"
PENDING_KEY_FILE, CSR_FILE = "svid.key.new", "svid.csr"
"""A renewal request made on the node: the new key (0600, never leaves the node) and its CSR."""


class CaError(PermanentError):
    """The CA directory is missing, already initialized, or inconsistent."""


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_node_files(directory: Path, svid: X509Svid, bundle: TrustBundle, crl_pem: bytes | None) -> None:
    """Write an SVID directory as the built-in source reads it (key first, then certificate)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(directory / KEY_FILE, svid.private_key_pem, 0o600)
    write_atomic(directory / SVID_FILE, svid.chain_pem())
    write_atomic(directory / BUNDLE_FILE, bundle.to_pem())
    if crl_pem is not None:
        write_atomic(directory / CRL_FILE, crl_pem)


@dataclass(frozen=True)
class IssuedRecord:
    serial: int
    spiffe_id: str
    not_after: float
    key_type: str


class CertificateAuthority:
    """A built-in CA rooted in ``directory``. Methods do blocking file I/O and signing: call them
    from a thread (``asyncio.to_thread``) inside the agent."""

    def __init__(self, directory: str | Path, passphrase: bytes | None = None) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase or None
        if not (self.directory / "ca.pem").exists() or not (self.directory / "ca.key").exists():
            raise CaError(f"no CA in {self.directory} (run 'x0tta ca init')")
        self.root = x509.load_pem_x509_certificate((self.directory / "ca.pem").read_bytes())
        self._key = self._load_key(self.directory / "ca.key")
        state = self._read_state()
        self.trust_domain: str = state["trust_domain"]

    def _load_key(self, path: Path) -> certs.SigningKey:
        try:
            return certs.load_signing_key(path.read_bytes(), self._passphrase)
        except TypeError:
            raise CaError(
                f"{path} is encrypted: give its passphrase (--passphrase-file or $X0TTA_CA_PASSPHRASE_FILE)"
            ) from None
        except ValueError:
            raise CaError(f"cannot decrypt {path}: wrong passphrase, or not a CA key") from None

    def __repr__(self) -> str:
        return f"CertificateAuthority({str(self.directory)!r}, trust_domain={self.trust_domain!r})"

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        directory: str | Path,
        trust_domain: str,
        *,
        key_type: KeyType = KeyType.ML_DSA_65,
        validity: float = ROOT_VALIDITY,
        now: float | None = None,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        """Create a CA: a new root key (0600; encrypted when a passphrase is given) and certificate,
        an empty CRL. Refuses to overwrite."""
        validate_trust_domain(trust_domain)
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        with _locked(d):
            if (d / "ca.key").exists() or (d / "ca.pem").exists():
                raise CaError(f"{d} already holds a CA; refusing to overwrite its key")
            t = time.time() if now is None else now
            key = certs.generate_key(key_type)
            root = certs.build_root(key, trust_domain, t, validity)
            _write_new_key(d / "ca.key", key, passphrase)
            pem = root.public_bytes(serialization.Encoding.PEM)
            write_atomic(d / "ca.pem", pem)
            write_atomic(d / BUNDLE_FILE, pem)
            state = {"trust_domain": trust_domain, "crl_number": 0, "revoked": [], "issued": []}
            write_atomic(d / "state.json", json.dumps(state, indent=1).encode(), 0o600)
        ca = cls(d, passphrase)
        ca.publish_crl(now=t)
        return ca

    # -- state -------------------------------------------------------------------------------
    def _read_state(self) -> dict:  # type: ignore[type-arg]
        try:
            return json.loads((self.directory / "state.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError) as exc:
            raise CaError(f"cannot read {self.directory / 'state.json'}: {exc}") from exc

    def _write_state(self, state: dict) -> None:  # type: ignore[type-arg]
        write_atomic(self.directory / "state.json", json.dumps(state, indent=1).encode(), 0o600)

    @property
    def key_type(self) -> KeyType:
        return certs.key_type_of(self._key)

    def bundle(self) -> TrustBundle:
        return TrustBundle.from_pem(self.trust_domain, (self.directory / BUNDLE_FILE).read_bytes())

    def crl_pem(self) -> bytes:
        return (self.directory / CRL_FILE).read_bytes()

    def revocation_list(self) -> RevocationList:
        return RevocationList.from_crl(self.crl_pem(), self.bundle())

    def issued(self) -> list[IssuedRecord]:
        return [
            IssuedRecord(int(r["serial"], 16), r["spiffe_id"], r["not_after"], r["key_type"])
            for r in self._read_state()["issued"]
        ]

    def revoked(self) -> list[RevokedEntry]:
        return [_entry(r) for r in self._read_state()["revoked"]]

    def revoked_ids(self) -> frozenset[str]:
        """The SPIFFE IDs revoked by ID (``revoke --spiffe-id``): a renewal for them is refused."""
        return frozenset(r["spiffe_id"] for r in self._read_state()["revoked"] if r.get("spiffe_id"))

    # -- issuing -----------------------------------------------------------------------------
    def issue(
        self,
        spiffe_id: SpiffeId | str,
        ttl: float,
        *,
        key_type: KeyType = KeyType.ML_DSA_65,
        now: float | None = None,
        not_before: float | None = None,
        extra_uris: tuple[str, ...] = (),
        leaf_is_ca: bool = False,
        key_usage: bool = True,
    ) -> X509Svid:
        """Issue an X509-SVID for ``spiffe_id`` valid ``ttl`` seconds; recorded for revocation.

        The last three options produce certificates that break the X509-SVID rules, for tests
        that show peers refuse them.
        """
        sid = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
        self._check_request(sid, ttl)
        t = time.time() if now is None else now
        svid = certs.make_svid(
            self._key,
            self.root,
            sid,
            t,
            ttl,
            key_type,
            not_before=not_before,
            extra_uris=extra_uris,
            leaf_is_ca=leaf_is_ca,
            key_usage=key_usage,
        )
        self._record(svid.leaf, sid, key_type, t)
        return svid

    def _check_request(self, sid: SpiffeId, ttl: float) -> None:
        if sid.trust_domain != self.trust_domain:
            raise CaError(f"{sid} is not in this CA's trust domain {self.trust_domain}")
        if not sid.path:
            raise CaError("an X509-SVID's SPIFFE ID needs a path (spiffe://td/node/NAME)")
        if not 0 < ttl <= MAX_TTL:
            raise CaError(f"ttl must be between 0 and {MAX_TTL:.0f} seconds")

    def _record(self, leaf: x509.Certificate, sid: SpiffeId, key_type: KeyType, now: float) -> None:
        with _locked(self.directory):
            state = self._read_state()
            state["issued"] = [r for r in state["issued"] if r["not_after"] > now] + [
                {
                    "serial": f"{leaf.serial_number:x}",
                    "spiffe_id": str(sid),
                    "not_after": leaf.not_valid_after_utc.timestamp(),
                    "issued_at": now,
                    "key_type": key_type.value,
                }
            ]
            self._write_state(state)

    def sign(
        self, csr_pem: bytes, ttl: float, *, spiffe_id: SpiffeId | str | None = None, now: float | None = None
    ) -> x509.Certificate:
        """Sign a node's certificate request (its key never leaves the node).

        The CSR must carry its own valid signature and exactly one URI SAN, a SPIFFE ID of this
        trust domain; when ``spiffe_id`` is given (what the operator expects for this node) the
        request must ask for exactly that. Keys: ML-DSA-65 or ECDSA P-256.
        """
        facts = certs.read_csr(csr_pem)
        if facts.spiffe_id is None or facts.key_type is None:
            raise CaError(facts.error)
        requested = facts.spiffe_id
        if spiffe_id is not None:
            expected = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
            if requested != expected:
                raise CaError(f"the request asks for {requested}, not {expected}")
        self._check_request(requested, ttl)
        t = time.time() if now is None else now
        leaf = certs.build_leaf(self._key, self.root, facts.public_key, requested,  # type: ignore[arg-type]
                                t - certs.backdate(ttl), t + ttl)
        self._record(leaf, requested, facts.key_type, t)
        return leaf

    def sign_to(self, directory: str | Path, csr_pem: bytes, ttl: float, **kw: object) -> x509.Certificate:
        """Sign and write the node directory's svid.pem, bundle.pem and crl.pem (no key: it is there)."""
        leaf = self.sign(csr_pem, ttl, **kw)  # type: ignore[arg-type]
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(d / SVID_FILE, leaf.public_bytes(serialization.Encoding.PEM))
        write_atomic(d / BUNDLE_FILE, self.bundle().to_pem())
        write_atomic(d / CRL_FILE, self.crl_pem())
        return leaf

    def issue_to(self, directory: str | Path, spiffe_id: SpiffeId | str, ttl: float, **kw: object) -> X509Svid:
        """Issue and write a node directory (svid.pem, svid.key, bundle.pem, crl.pem)."""
        svid = self.issue(spiffe_id, ttl, **kw)  # type: ignore[arg-type]
        write_node_files(Path(directory), svid, self.bundle(), self.crl_pem())
        return svid

    # -- revocation --------------------------------------------------------------------------
    def revoke(
        self,
        serials: list[int] | None = None,
        spiffe_id: SpiffeId | str | None = None,
        *,
        reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise,
        now: float | None = None,
    ) -> list[int]:
        """Revoke serials, or every unexpired SVID issued to ``spiffe_id``; re-sign the CRL.

        Returns the serials newly revoked. Expired entries are dropped from the CRL (RFC 5280
        5.1.2.6 allows it: an expired certificate is refused for its date anyway).
        """
        t = time.time() if now is None else now
        with _locked(self.directory):
            state = self._read_state()
            wanted = set(serials or ())
            if spiffe_id is not None:
                sid = str(SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id)
                wanted |= {int(r["serial"], 16) for r in state["issued"] if r["spiffe_id"] == sid}
            known = {int(r["serial"], 16) for r in state["revoked"]}
            issued = {int(r["serial"], 16): r for r in state["issued"]}
            new = sorted(wanted - known)
            for s in new:
                rec = issued.get(s)
                state["revoked"].append(
                    {
                        "serial": f"{s:x}",
                        "revoked_at": t,
                        "reason": reason.value if reason else None,
                        "spiffe_id": rec["spiffe_id"] if rec else None,
                        "not_after": rec["not_after"] if rec else None,
                    }
                )
            self._write_state(state)
        self.publish_crl(now=t)
        return new

    def publish_crl(self, *, validity: float = CRL_VALIDITY, now: float | None = None) -> RevocationList:
        """Sign and write a fresh CRL (also run periodically so it never passes its nextUpdate)."""
        t = time.time() if now is None else now
        with _locked(self.directory):
            state = self._read_state()
            state["revoked"] = [r for r in state["revoked"] if r.get("not_after") is None or r["not_after"] > t]
            state["crl_number"] = int(state.get("crl_number", 0)) + 1
            crl = certs.build_crl(
                self._key, self.root, [_entry(r) for r in state["revoked"]], state["crl_number"], t, validity
            )
            write_atomic(self.directory / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM))
            self._write_state(state)
        return self.revocation_list()


    # -- root rollover -----------------------------------------------------------------------
    def rollover_prepare(self, *, validity: float = ROOT_VALIDITY, now: float | None = None) -> x509.Certificate:
        """Step 1: a next root (same name, new key) joins the bundle; nothing is signed with it yet.

        Distribute the new bundle.pem to every node before step 2, so that they trust SVIDs from
        either root.
        """
        t = time.time() if now is None else now
        with _locked(self.directory):
            if (self.directory / "next.key").exists():
                raise CaError("a rollover is already prepared (next.key exists); activate it")
            if (self.directory / "old.pem").exists():
                raise CaError("the previous rollover is not retired yet (old.pem exists)")
            key = certs.generate_key(self.key_type)
            root = certs.build_root(key, self.trust_domain, t, validity)
            _write_new_key(self.directory / "next.key", key, self._passphrase)
            write_atomic(self.directory / "next.pem", root.public_bytes(serialization.Encoding.PEM))
            write_atomic(self.directory / BUNDLE_FILE, chain_to_pem([self.root, root]))
        return root

    def rollover_activate(self, *, now: float | None = None) -> x509.Certificate:
        """Step 2: the next root signs from now on; the old root stays in the bundle, its key is
        deleted (nothing must be signed with it again)."""
        t = time.time() if now is None else now
        d = self.directory
        with _locked(d):
            if not (d / "next.key").exists():
                raise CaError("no rollover prepared (run rollover prepare first)")
            old, new = self.root, x509.load_pem_x509_certificate((d / "next.pem").read_bytes())
            write_atomic(d / "old.pem", old.public_bytes(serialization.Encoding.PEM))
            write_atomic(d / BUNDLE_FILE, chain_to_pem([old, new]))
            os.replace(d / "next.pem", d / "ca.pem")
            os.replace(d / "next.key", d / "ca.key")
            state = self._read_state()
            state["rollover_activated_at"] = t
            self._write_state(state)
        self.root = new
        self._key = self._load_key(d / "ca.key")
        self.publish_crl(now=t)
        return new

    def rollover_retire(self, *, force: bool = False, now: float | None = None) -> None:
        """Step 3: drop the old root from the bundle once no SVID it signed is still valid."""
        t = time.time() if now is None else now
        d = self.directory
        with _locked(d):
            if not (d / "old.pem").exists():
                raise CaError("no old root to retire")
            state = self._read_state()
            since = float(state.get("rollover_activated_at", t))
            alive = [r for r in state["issued"] if r["not_after"] > t and r.get("issued_at", 0.0) < since]
            if alive and not force:
                last = max(r["not_after"] for r in alive)
                raise CaError(
                    f"{len(alive)} SVID(s) signed by the old root are valid until {time.ctime(last)}; "
                    "wait, re-issue them, or --force"
                )
            write_atomic(d / BUNDLE_FILE, self.root.public_bytes(serialization.Encoding.PEM))
            os.unlink(d / "old.pem")

def revocation_records(directory: str | Path) -> list[dict]:  # type: ignore[type-arg]
    """The CA's revoked certificates from its ``state.json`` (no key needed; blocking): each
    ``serial`` (int), ``spiffe_id`` (None for a serial this CA has no record of), ``reason`` (a
    CRL reason such as ``keyCompromise``, or None), ``at`` (when revoked), ``not_after``."""
    path = Path(directory) / "state.json"
    try:
        state = json.loads(path.read_text())
        return [{"serial": int(r["serial"], 16), "spiffe_id": r.get("spiffe_id"), "reason": r.get("reason"),
                 "at": float(r["revoked_at"]), "not_after": r.get("not_after")} for r in state["revoked"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CaError(f"cannot read the revocations in {path}: {exc}") from exc


def _write_new_key(path: Path, key: certs.SigningKey, passphrase: bytes | None = None) -> None:
    """Write a private key 0600 with O_EXCL: never replace an existing key, even one that appeared
    since the caller looked."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(certs.private_key_pem(key, passphrase))
        f.flush()
        os.fsync(f.fileno())


def _entry(r: dict) -> RevokedEntry:  # type: ignore[type-arg]
    reason = x509.ReasonFlags(r["reason"]) if r.get("reason") else None
    return RevokedEntry(int(r["serial"], 16), float(r["revoked_at"]), reason)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)



locked = _locked
"""Hold the CA directory's lock: what ``x0tta backup`` copies a CA's files under."""
