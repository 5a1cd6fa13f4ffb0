"""``x0tta backup create|verify|restore``: a node's stores, keys and CA state in one signed file.

Runs on the node, beside the agent (create) or with it stopped (restore); what it does is in
:mod:`x0tta.backup.bundle`, the manifest and its checks in :mod:`x0tta.backup.core`. Every refusal
is a typed error whose message says what is wrong; the command then exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from x0tta.cli.common import add_json_flag, emit, read_passphrase


def _passphrase_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--passphrase-file", default=os.environ.get("X0TTA_BACKUP_PASSPHRASE_FILE"),
                   help=f"{what} (default: $X0TTA_BACKUP_PASSPHRASE_FILE)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("backup", help="back up and restore this node's stores, keys and CA state")
    bsub = p.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    q = bsub.add_parser("create", help="write a signed bundle (tar, mode 0600) while the agent runs")
    q.add_argument("out", help="the bundle file to write, e.g. /var/backups/x0tta/node-$(date +%%F).tar")
    q.add_argument("--ca-dir", default=None, help="a built-in CA directory to include (default: [identity] ca_dir)")
    _passphrase_flag(q, "encrypt the bundle with the passphrase in this file (scrypt, AES-256-GCM)")
    add_json_flag(q)
    q.set_defaults(func=run_create)
    q = bsub.add_parser("verify", help="check a bundle's signature, hashes and manifest")
    q.add_argument("bundle")
    q.add_argument("--trust-bundle", default=None,
                   help="roots the bundle's SVID must chain to (default: this node's bundle.pem, when it has one)")
    _passphrase_flag(q, "the passphrase of an encrypted bundle")
    add_json_flag(q)
    q.set_defaults(func=run_verify)
    q = bsub.add_parser("restore", help="put a verified bundle's files in place (agent stopped)")
    q.add_argument("bundle")
    q.add_argument("--other-node", action="store_true",
                   help="accept a bundle of another SPIFFE ID or trust bundle (one node's history onto another)")
    q.add_argument("--agent-running", action="store_true",
                   help="restore even though the agent answers on its admin socket or a process holds a store open "
                   "(restart it after)")
    q.add_argument("--keep-identity", action="store_true",
                   help="leave the node's current SVID, key, bundle and CRL as they are (they may be newer)")
    q.add_argument("--ca-dir", default=None, help="where the bundle's CA files go (default: [identity] ca_dir)")
    _passphrase_flag(q, "the passphrase of an encrypted bundle")
    add_json_flag(q)
    q.set_defaults(func=run_restore)


def _settings(args: argparse.Namespace) -> Any:
    from x0tta.config.loader import load_settings

    return load_settings(getattr(args, "config", None))


def _t(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def summary(manifest: Any) -> dict[str, Any]:
    return {
        "node_id": manifest.node_id,
        "spiffe_id": manifest.spiffe_id,
        "created_at": manifest.created_at,
        "key_algorithm": manifest.key_algorithm,
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files],
        "stores": dict(manifest.stores),
    }


def render(d: dict[str, Any]) -> str:
    lines = [f"{d.get('verdict', 'ok')}: {d['spiffe_id']} (node {d['node_id']}), signed {d['key_algorithm']}, "
             f"taken {_t(d['created_at'])}"]
    if d.get("path"):
        lines.insert(0, f"bundle {d['path']}")
    for f in d["files"]:
        lines.append(f"  {f['name']:<32} {f['size']:>12} B  sha256 {f['sha256'][:16]}")
    for name, s in d["stores"].items():
        last = ", ".join(f"{t} #{n}" for t, n in s.get("last_ids", {}).items()) or "-"
        at = s.get("last_event_at")
        lines.append(f"  {name}: rows {s.get('rows')}; last ids {last}" + (f"; newest event {_t(at)}" if at else ""))
    if d.get("undo"):
        lines.append(f"previous files kept in {d['undo']} (move them back to undo)")
    lines += d.get("notes", [])
    return "\n".join(lines)


def run_create(args: argparse.Namespace) -> int:
    from x0tta.backup.bundle import create

    out = Path(args.out)
    m = create(_settings(args), out, ca_dir=args.ca_dir, passphrase=read_passphrase(args.passphrase_file))
    emit(args, {"verdict": "written and verified", "path": str(out.absolute()), **summary(m)}, render)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from x0tta.backup.bundle import local_anchors, verify_file

    settings = _settings(args)
    if args.trust_bundle:
        from x0tta.backup.core import BackupError
        from x0tta.identity.core.types import SvidError, TrustBundle

        try:
            anchors = TrustBundle.from_pem(settings.identity.trust_domain, Path(args.trust_bundle).read_bytes())
        except (OSError, SvidError) as exc:
            raise BackupError(f"cannot read the trust bundle {args.trust_bundle}: {exc}") from None
    else:
        anchors = local_anchors(settings)
    m, _ = verify_file(Path(args.bundle), anchors, read_passphrase(args.passphrase_file))
    emit(args, {"verdict": "verified", "path": args.bundle, **summary(m)}, render)
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from x0tta.backup.bundle import restore

    r = restore(_settings(args), Path(args.bundle), other_node=args.other_node, agent_running=args.agent_running,
                keep_identity=args.keep_identity, ca_dir=args.ca_dir,
                passphrase=read_passphrase(args.passphrase_file))
    d = {"verdict": "restored", "path": args.bundle, **summary(r.manifest),
         "restored": {n: str(p) for n, p in r.files.items()}, "undo": str(r.undo) if r.undo else None,
         "notes": list(r.notes)}
    emit(args, d, render)
    return 0
