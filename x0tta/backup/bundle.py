"""Making, reading and restoring backup bundles: the file and SQLite I/O around :mod:`x0tta.backup.core`.

What goes in, found from the agent's configuration:

* ``store/``: every SQLite store the agent keeps - the heal knowledge store and the fleet outbox -
  copied with SQLite's online backup API (``sqlite3.Connection.backup``, in one step: it reads one
  consistent snapshot inside a read transaction while the agent keeps committing to the WAL from
  its own process), checked with ``PRAGMA integrity_check`` and switched to ``journal_mode=DELETE``
  so the copy is one self-contained file;
* ``identity/``: the node's SVID, its key, the trust bundle and the CRL (and a pending renewal
  key and request, when there is one);
* ``ca/``: the built-in CA's directory when this node keeps one (``[identity] ca_dir``), copied
  under the CA's own lock so no ``x0tta ca`` run changes it half-way.

The bundle is written to a temporary file beside the target with mode 0600, fsynced and renamed,
then read back and verified before ``create`` returns. Given a passphrase, the whole tar is
encrypted (:func:`seal`: scrypt and AES-256-GCM), so the keys inside are safe wherever it is kept.

Restore verifies first, refuses another node's bundle and a running agent (its admin socket
answers, or a process holds a store open) unless told, writes
every file beside its target (``.<name>.restore``, fsynced), moves the current files (with a
store's ``-wal``/``-shm``) into an undo directory under the state directory, and renames the
new ones into place. Each rename is atomic; the undo directory holds what was there before.

Everything here blocks (disk, SQLite, signing): it runs in the CLI, never on the agent's loop.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from x0tta.backup.core import (
    BUNDLE_NAME,
    MANIFEST,
    SIGNATURE,
    SVID_NAME,
    BackupError,
    FileEntry,
    Manifest,
    OtherNode,
    entry_for,
    sign,
    verify,
)
from x0tta.common.errors import X0ttaError
from x0tta.config.schema import AgentSettings
from x0tta.fleet.outbox import FILENAME as OUTBOX_FILENAME
from x0tta.heal.store import FILENAME as HEAL_FILENAME
from x0tta.identity.ca import CSR_FILE, PENDING_KEY_FILE, locked
from x0tta.identity.core.types import SvidError, TrustBundle, X509Svid, load_pem_chain, spiffe_id_of
from x0tta.mesh.held import FILENAME as HELD_FILENAME

SEALED = b"x0tta-backup-sealed-v1\n"
"""The first bytes of an encrypted bundle: then a 16-byte scrypt salt, a 12-byte nonce, and the tar
encrypted with AES-256-GCM (the header is authenticated as associated data)."""
SCRYPT_N = 2**15
"""scrypt's cost: 32 MiB and ~0.1 s per derivation, paid once per create, verify and restore."""
MAX_MEMBER = 4 << 30
"""A member larger than this is not one x0tta wrote (a knowledge store is megabytes)."""


@dataclass(frozen=True)
class Source:
    name: str  # in the bundle: <group>/<file name>
    path: Path
    sqlite: bool = False


def _identity_files(settings: AgentSettings) -> dict[str, Path]:
    p = settings.identity.paths(settings.node.state_dir)
    key_dir = Path(p.key).parent
    return {
        SVID_NAME: Path(p.svid),
        "identity/svid.key": Path(p.key),
        BUNDLE_NAME: Path(p.bundle),
        "identity/crl.pem": Path(p.revocation),
        f"identity/{PENDING_KEY_FILE}": key_dir / PENDING_KEY_FILE,
        f"identity/{CSR_FILE}": key_dir / CSR_FILE,
    }


def _stores(settings: AgentSettings) -> dict[str, Path]:
    state = settings.node.state_dir
    outbox = settings.fleet.paths(state, settings.identity.paths(state)).outbox
    return {f"store/{HEAL_FILENAME}": Path(state) / HEAL_FILENAME, f"store/{OUTBOX_FILENAME}": Path(outbox),
            f"store/{HELD_FILENAME}": Path(state) / HELD_FILENAME}


def sources(settings: AgentSettings, ca_dir: str | None = None) -> list[Source]:
    """What this node's bundle holds; files that do not exist (no fleet, no CA) are left out."""
    out = [Source(n, p, sqlite=True) for n, p in _stores(settings).items() if p.is_file()]
    out += [Source(n, p) for n, p in _identity_files(settings).items() if p.is_file()]
    ca = ca_dir if ca_dir is not None else settings.identity.ca_dir
    if ca:
        out += [Source(f"ca/{p.name}", p) for p in sorted(Path(ca).iterdir())
                if p.is_file() and not p.name.startswith(".")]
    return out


def snapshot_sqlite(src: Path, dst: Path) -> dict[str, Any]:
    """Copy ``src`` (live, in WAL mode, written by another process) to ``dst`` with SQLite's online
    backup; returns what the copy holds: row counts, the last id of each AUTOINCREMENT table, and
    the time of the newest heal event."""
    try:
        source = sqlite3.connect(f"{src.absolute().as_uri()}?mode=ro", uri=True, timeout=10.0)
        dest = sqlite3.connect(dst, isolation_level=None)
        try:
            source.backup(dest)  # pages=-1: one step, one read transaction, one consistent snapshot
        finally:
            source.close()
        try:
            dest.execute("PRAGMA journal_mode=DELETE")
            check = dest.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy of {src} fails its integrity check: {check}")
            tables = [r[0] for r in dest.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            # table names come from the copy's own sqlite_master, not from outside
            facts: dict[str, Any] = {
                "rows": {t: dest.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]  # noqa: S608 - see above
                         for t in tables},
                "last_ids": {},
                "user_version": dest.execute("PRAGMA user_version").fetchone()[0],
            }
            if dest.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone():
                facts["last_ids"] = dict(dest.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name"))
            if "events" in tables:
                facts["last_event_at"] = dest.execute("SELECT max(at) FROM events").fetchone()[0]
        finally:
            dest.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the store {src}: {exc}") from None
    return facts


def create(
    settings: AgentSettings,
    out: Path,
    *,
    ca_dir: str | None = None,
    passphrase: bytes | None = None,
    now: float | None = None,
) -> Manifest:
    """Write a signed bundle of this node to ``out`` (mode 0600, atomically; encrypted with
    ``passphrase`` when given) and verify it."""
    ids = _identity_files(settings)
    svid_path, key_path = ids[SVID_NAME], ids["identity/svid.key"]
    try:  # a first look, for a clear message when there is nothing to sign with
        X509Svid.from_pem(svid_path.read_bytes(), key_path.read_bytes())
    except OSError as exc:
        raise BackupError(
            f"no SVID to sign the backup with ({exc.filename}: {exc.strerror}): a bundle is signed with "
            f"the node's SVID key, which the builtin identity source keeps in {svid_path.parent}"
        ) from None
    except SvidError as exc:
        raise BackupError(f"the node's SVID in {svid_path.parent} cannot sign: {exc}") from None
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    srcs = sources(settings, ca_dir)
    ca = ca_dir if ca_dir is not None else settings.identity.ca_dir
    with tempfile.TemporaryDirectory(prefix=".x0tta-backup-", dir=out.parent) as tmp:
        files: dict[str, bytes] = {}
        entries: list[FileEntry] = []
        stores: dict[str, Any] = {}
        # under the CA's own lock when there is one: no `x0tta ca` run is half-way through its files
        with locked(Path(ca)) if ca else contextlib.nullcontext():
            for s in srcs:
                if s.sqlite:
                    copy = Path(tmp) / s.path.name
                    stores[s.name] = snapshot_sqlite(s.path, copy)
                    data = copy.read_bytes()
                else:
                    data = s.path.read_bytes()
                files[s.name] = data
                entries.append(entry_for(s.name, str(s.path.absolute()), data, os.stat(s.path).st_mode))
        try:  # sign with the key of the very SVID in the bundle: a renewal may have replaced both since
            svid = X509Svid.from_pem(files[SVID_NAME], files["identity/svid.key"])
        except (KeyError, SvidError) as exc:
            raise BackupError(f"the SVID changed while it was copied (a renewal?): run again ({exc})") from None
        created = time.time() if now is None else now
        manifest = Manifest(settings.node.id, str(svid.spiffe_id), created, svid.key_algorithm, tuple(entries), stores)
        body = manifest.encode()
        members = {MANIFEST: body, SIGNATURE: sign(svid.private_key_pem, body), **files}
        data = _tar(members, created)
    _write_atomic(out, seal(data, passphrase) if passphrase else data)
    verify_file(out, passphrase=passphrase)
    return manifest


def _tar(members: dict[str, bytes], mtime: float) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(mtime)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _kdf(passphrase: bytes, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=8, p=1).derive(passphrase)


def seal(data: bytes, passphrase: bytes) -> bytes:
    """``data`` encrypted with a key derived from ``passphrase``: AES-256-GCM, scrypt, a fresh salt
    and nonce, the header authenticated with it."""
    salt, nonce = os.urandom(16), os.urandom(12)
    return SEALED + salt + nonce + AESGCM(_kdf(passphrase, salt)).encrypt(nonce, data, SEALED)


def unseal(blob: bytes, passphrase: bytes | None, path: Path) -> bytes:
    """The tar inside a sealed bundle; a bundle that is not sealed as it is."""
    if not blob.startswith(SEALED):
        return blob
    if passphrase is None:
        raise BackupError(f"{path} is encrypted: give its passphrase (--passphrase-file)")
    salt, nonce = blob[len(SEALED):len(SEALED) + 16], blob[len(SEALED) + 16:len(SEALED) + 28]
    try:
        return AESGCM(_kdf(passphrase, salt)).decrypt(nonce, blob[len(SEALED) + 28:], SEALED)
    except (InvalidTag, ValueError):
        raise BackupError(f"cannot decrypt {path}: wrong passphrase, or the file was changed") from None


def _write_atomic(out: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_bundle(path: Path, passphrase: bytes | None = None) -> tuple[bytes, bytes, dict[str, bytes]]:
    """The manifest, the signature and the files of a bundle; :class:`BackupError` if it is no bundle."""
    members: dict[str, bytes] = {}
    try:
        data = unseal(path.read_bytes(), passphrase, path)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar:
                if not m.isfile() or m.size > MAX_MEMBER:
                    raise BackupError(f"{path}: member {m.name!r} is not a regular file x0tta writes")
                if m.name in members:
                    raise BackupError(f"{path}: member {m.name!r} appears twice")
                f = tar.extractfile(m)
                assert f is not None  # a regular file always has data
                members[m.name] = f.read()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tarfile.TarError as exc:
        raise BackupError(f"{path} is not a backup bundle (tar): {exc}") from None
    manifest, sig = members.pop(MANIFEST, None), members.pop(SIGNATURE, None)
    if manifest is None or sig is None:
        raise BackupError(f"{path} is not a backup bundle: no {MANIFEST} or {SIGNATURE}")
    return manifest, sig, members


def local_anchors(settings: AgentSettings) -> TrustBundle | None:
    """This node's trust bundle, when it has one: a bundle must chain to it as well as to its own."""
    path = _identity_files(settings)[BUNDLE_NAME]
    if not path.is_file():
        return None
    try:
        return TrustBundle.from_pem(settings.identity.trust_domain, path.read_bytes())
    except SvidError as exc:
        raise BackupError(f"the local trust bundle {path} cannot be read: {exc}") from None


def verify_file(
    path: Path, anchors: TrustBundle | None = None, passphrase: bytes | None = None
) -> tuple[Manifest, dict[str, bytes]]:
    manifest_bytes, sig, files = read_bundle(path, passphrase)
    return verify(manifest_bytes, sig, files, anchors), files


# --- restore -------------------------------------------------------------------------------------


def agent_answers(socket_path: str) -> bool:
    from x0tta.admin.client import AgentUnavailable, call

    try:
        call(socket_path, "status", timeout=3.0)
    except AgentUnavailable:
        return False
    except X0ttaError:
        return True  # it answered, with an error
    return True


def holders(paths: Iterable[Path]) -> list[str]:
    """The other processes (``PID (name)``) that hold one of ``paths`` open, from ``/proc``: an
    agent whose admin socket is elsewhere, or any other writer (as root every process is seen)."""
    wanted = {os.path.realpath(p) for p in paths}
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if fd_dir.parent.name == str(os.getpid()):
            continue
        try:
            if any(os.readlink(fd) in wanted for fd in fd_dir.iterdir()):
                found.append(f"{fd_dir.parent.name} ({(fd_dir.parent / 'comm').read_text().strip()})")
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


def local_spiffe_id(settings: AgentSettings) -> str:
    """The SPIFFE ID this node holds (its SVID), else the one its configuration gives it."""
    path = _identity_files(settings)[SVID_NAME]
    with contextlib.suppress(OSError, SvidError, X0ttaError):
        return str(spiffe_id_of(load_pem_chain(path.read_bytes())[0]))
    return str(settings.identity.own_spiffe_id(settings.node.id))


def targets(settings: AgentSettings, manifest: Manifest, ca_dir: str | None = None) -> dict[str, Path]:
    """Where each file of the bundle goes on this node: where this node's configuration keeps it
    (the state directory may differ from the backed-up node's), else its path in the manifest."""
    known = {**_stores(settings), **_identity_files(settings)}
    key_dir = _identity_files(settings)["identity/svid.key"].parent
    ca = ca_dir or settings.identity.ca_dir
    out = {}
    for f in manifest.files:
        base = f.name.split("/", 1)[1]
        if f.name in known:
            out[f.name] = known[f.name]
        elif f.group == "identity":
            out[f.name] = key_dir / base
        elif f.group == "ca" and ca:
            out[f.name] = Path(ca) / base
        else:
            out[f.name] = Path(f.path)
    return out


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    files: dict[str, Path]
    undo: Path | None
    notes: tuple[str, ...]


def restore(
    settings: AgentSettings,
    path: Path,
    *,
    other_node: bool = False,
    agent_running: bool = False,
    keep_identity: bool = False,
    ca_dir: str | None = None,
    passphrase: bytes | None = None,
) -> Restored:
    if not agent_running and agent_answers(settings.admin_socket):
        raise BackupError(
            f"the agent answers on {settings.admin_socket}: stop it first (systemctl stop x0tta-agent); "
            "it holds the stores open and would overwrite what is restored"
        )
    manifest_bytes, sig, files = read_bundle(path, passphrase)
    if not agent_running:
        held = holders(f for db in _stores(settings).values() for f in (db, Path(f"{db}-wal")))
        if held:
            raise BackupError(f"the stores are held open by process {', '.join(held)}: stop it first")
    manifest = verify(manifest_bytes, sig, files, None if other_node else local_anchors(settings))
    notes = []
    here = local_spiffe_id(settings)
    if manifest.spiffe_id != here:
        if not other_node:
            raise OtherNode(f"the bundle is of {manifest.spiffe_id}, this node is {here}: "
                            "pass --other-node to restore it here anyway")
        notes.append(f"restoring {manifest.spiffe_id}'s bundle on {here} (--other-node)")
    current = _identity_files(settings)[SVID_NAME]
    with contextlib.suppress(OSError, SvidError):
        if current.is_file() and load_pem_chain(current.read_bytes())[0] != load_pem_chain(files[SVID_NAME])[0]:
            what = "kept (--keep-identity)" if keep_identity else "replaced by the bundle's; --keep-identity keeps it"
            notes.append(f"this node's SVID differs from the bundle's (renewed since the backup?): {what}")
    dests = targets(settings, manifest, ca_dir)
    if keep_identity:
        dests = {n: p for n, p in dests.items() if not n.startswith("identity/")}
    staged: dict[str, Path] = {}
    try:
        for name, dest in dests.items():
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = dest.parent / f".{dest.name}.restore"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), (manifest.file(name) or FileEntry(name, "", 0, "", 0o600)).mode)
                f.write(files[name])
                f.flush()
                os.fsync(f.fileno())
            staged[name] = tmp
        undo: Path | None = None
        for name, dest in dests.items():
            for old in (dest, Path(f"{dest}-wal"), Path(f"{dest}-shm"), Path(f"{dest}-journal")):
                if old.exists():
                    if undo is None:
                        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                        undo = Path(tempfile.mkdtemp(prefix=f"restore-undo-{stamp}-", dir=settings.node.state_dir))
                    aside = undo / name.split("/", 1)[0] / old.name
                    aside.parent.mkdir(exist_ok=True, mode=0o700)
                    shutil.move(old, aside)  # a rename on the same file system
            os.replace(staged.pop(name), dest)
            _fsync_dir(dest.parent)
    finally:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return Restored(manifest, dests, undo, tuple(notes))
