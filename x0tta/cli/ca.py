"""``x0tta ca``: the built-in certificate authority (init, issue, sign, renew, revoke, crl, rollover, list).

Runs on the CA host, not through the agent: it reads and writes the CA directory directly (see
:mod:`x0tta.identity.ca`). Output never contains key material; ``issue`` writes the node's key to
a 0600 file and prints where.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from x0tta.cli.common import add_json_flag, emit, parse_duration, read_passphrase, table
from x0tta.common.errors import PermanentError

if TYPE_CHECKING:
    from x0tta.common.spiffe_id import SpiffeId
    from x0tta.identity.ca import CertificateAuthority
    from x0tta.identity.core.types import X509Svid

DEFAULT_DIR = "/var/lib/x0tta/ca"
KEY_TYPES = ("ml-dsa-65", "ecdsa-p256")  # x0tta.identity.core.certs.ISSUED_KEY_TYPES; spelled out so `x0tta` starts
ROOT_VALIDITY = 10 * 365 * 86400.0  # without importing cryptography (every command pays its imports)
CRL_VALIDITY = 7 * 86400.0
REASONS = (
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
    "remove_from_crl",
)


class UsageError(PermanentError):
    pass


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ca", help="built-in certificate authority (ML-DSA-65 SVIDs)")
    p.add_argument(
        "--dir",
        default=os.environ.get("X0TTA_CA_DIR", DEFAULT_DIR),
        help=f"CA directory (default: $X0TTA_CA_DIR or {DEFAULT_DIR})",
    )
    p.add_argument(
        "--passphrase-file",
        default=os.environ.get("X0TTA_CA_PASSPHRASE_FILE"),
        help="file holding the passphrase of ca.key (default: $X0TTA_CA_PASSPHRASE_FILE); at init, "
        "giving one encrypts the key at rest",
    )
    ca_sub = p.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    key_types = list(KEY_TYPES)

    q = ca_sub.add_parser("init", help="create the root key and certificate")
    q.add_argument("--trust-domain", required=True, help="e.g. mesh.example.org")
    q.add_argument("--key-type", choices=key_types, default="ml-dsa-65")
    q.add_argument("--validity", type=parse_duration, default=ROOT_VALIDITY, help="root lifetime (default 10y)")
    q.set_defaults(func=cmd_init)

    q = ca_sub.add_parser("issue", help="issue an X509-SVID and write a node directory")
    who = q.add_mutually_exclusive_group(required=True)
    who.add_argument("--spiffe-id", help="spiffe://<trust domain>/node/<name>")
    who.add_argument("--node", help="shorthand for --spiffe-id spiffe://<trust domain>/node/NODE")
    q.add_argument("--ttl", type=parse_duration, default=86400.0, help="lifetime (default 24h)")
    q.add_argument("--key-type", choices=key_types, default="ml-dsa-65")
    q.add_argument("--out", required=True, help="node directory: svid.pem, svid.key (0600), bundle.pem, crl.pem")
    add_json_flag(q)
    q.set_defaults(func=cmd_issue)

    q = ca_sub.add_parser("sign", help="sign a node's renewal or enrollment request (its key stays on the node)")
    q.add_argument("--out", required=True, help="the node directory: svid.pem, bundle.pem, crl.pem are written")
    q.add_argument("--csr", default=None, help="the request (default: <out>/svid.csr)")
    who = q.add_mutually_exclusive_group()
    who.add_argument("--spiffe-id", help="the ID the request must ask for (default: the ID of <out>/svid.pem)")
    who.add_argument("--node", help="shorthand for --spiffe-id spiffe://<trust domain>/node/NODE")
    q.add_argument("--ttl", type=parse_duration, default=86400.0, help="lifetime (default 24h)")
    add_json_flag(q)
    q.set_defaults(func=cmd_sign)

    q = ca_sub.add_parser("renew", help="re-issue a node directory's SVID if it is past --fraction of its life")
    q.add_argument("--out", required=True, help="the node directory written by 'issue'")
    q.add_argument("--ttl", type=parse_duration, default=None, help="lifetime (default: the current one's)")
    q.add_argument("--fraction", type=float, default=0.5, help="renew once this fraction has passed (0.5)")
    q.add_argument("--key-type", choices=key_types, default=None, help="default: the current one's")
    add_json_flag(q)
    q.set_defaults(func=cmd_renew)

    q = ca_sub.add_parser("revoke", help="revoke SVIDs and publish a new revocation list")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--serial", action="append", help="serial number in hex (repeatable)")
    what.add_argument("--spiffe-id", help="every unexpired SVID issued to this ID")
    q.add_argument(
        "--reason",
        choices=REASONS,
        default="key_compromise",
    )
    q.set_defaults(func=cmd_revoke)

    q = ca_sub.add_parser("crl", help="re-sign the revocation list (run daily so it never goes stale)")
    q.add_argument("--validity", type=parse_duration, default=CRL_VALIDITY, help="until nextUpdate (default 7d)")
    q.set_defaults(func=cmd_crl)

    q = ca_sub.add_parser("rollover", help="replace the root in three steps: prepare, activate, retire")
    q.add_argument(
        "step",
        choices=("prepare", "activate", "retire"),
        help="prepare: next root joins bundle.pem (distribute it); activate: next root signs, old key "
        "deleted; retire: old root leaves bundle.pem once its SVIDs expired",
    )
    q.add_argument("--force", action="store_true", help="retire even though old-root SVIDs are still valid")
    q.set_defaults(func=cmd_rollover)

    q = ca_sub.add_parser("list", help="SVIDs issued and revoked")
    add_json_flag(q)
    q.set_defaults(func=cmd_list)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    return read_passphrase(args.passphrase_file)


def _open(args: argparse.Namespace) -> CertificateAuthority:
    from x0tta.identity.ca import CertificateAuthority

    return CertificateAuthority(args.dir, _passphrase(args))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _svid_info(svid: X509Svid, out: str | Path) -> dict[str, Any]:
    return {
        "spiffe_id": str(svid.spiffe_id),
        "serial": f"{svid.leaf.serial_number:x}",
        "key": svid.key_algorithm,
        "not_after": _iso(svid.expires_at),
        "out": str(out),
    }


def _render_svid(info: dict[str, Any]) -> str:
    return (
        f"issued {info['spiffe_id']} ({info['key']}, serial {info['serial']}, until {info['not_after']})\n"
        f"wrote {info['out']}/svid.pem, svid.key (0600), bundle.pem, crl.pem"
    )


def cmd_init(args: argparse.Namespace) -> int:
    from x0tta.identity.ca import CertificateAuthority
    from x0tta.identity.core.certs import KeyType

    ca = CertificateAuthority.init(
        args.dir,
        args.trust_domain,
        key_type=KeyType(args.key_type),
        validity=args.validity,
        passphrase=_passphrase(args),
    )
    print(f"created CA for trust domain {ca.trust_domain} in {ca.directory} ({ca.key_type.value} root)")
    print(f"root key: {ca.directory / 'ca.key'} (0600; keep this directory off the mesh routers)")
    print(f"trust bundle for nodes: {ca.directory / 'bundle.pem'}")
    return 0


def _spiffe_id(ca: CertificateAuthority, args: argparse.Namespace) -> SpiffeId:
    from x0tta.common.spiffe_id import SpiffeId

    if args.node:
        return SpiffeId.from_parts(ca.trust_domain, "node", args.node)
    return SpiffeId.parse(args.spiffe_id)


def cmd_issue(args: argparse.Namespace) -> int:
    from x0tta.identity.core.certs import KeyType

    ca = _open(args)
    svid = ca.issue_to(args.out, _spiffe_id(ca, args), args.ttl, key_type=KeyType(args.key_type))
    emit(args, _svid_info(svid, args.out), _render_svid)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from x0tta.identity.ca import CSR_FILE, SVID_FILE
    from x0tta.identity.core.types import SvidError, SvidRejected, key_algorithm, load_pem_chain, spiffe_id_of

    ca = _open(args)
    out = Path(args.out)
    csr_path = Path(args.csr) if args.csr else out / CSR_FILE
    try:
        csr_pem = csr_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the request {csr_path}: {exc.strerror}") from None
    expected: SpiffeId | None = None
    if args.node or args.spiffe_id:
        expected = _spiffe_id(ca, args)
    elif (out / SVID_FILE).exists():  # a renewal: the node may only ask for the ID it already has
        try:
            expected = spiffe_id_of(load_pem_chain((out / SVID_FILE).read_bytes())[0])
        except (SvidError, SvidRejected) as exc:
            raise UsageError(f"cannot read the current SVID in {out}: {exc}; name the ID with --spiffe-id") from exc
    else:
        raise UsageError("a first request needs --spiffe-id or --node: the CA does not take a node's word for its name")
    leaf = ca.sign_to(out, csr_pem, args.ttl, spiffe_id=expected)
    info = {
        "spiffe_id": str(expected),
        "serial": f"{leaf.serial_number:x}",
        "key": key_algorithm(leaf),
        "not_after": _iso(leaf.not_valid_after_utc.timestamp()),
        "out": str(out),
    }
    emit(args, info, lambda i: (
        f"signed {i['spiffe_id']} ({i['key']}, serial {i['serial']}, until {i['not_after']})\n"
        f"wrote {i['out']}/svid.pem, bundle.pem, crl.pem: copy them to the node (its key is already there)"
    ))
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    from x0tta.identity.ca import SVID_FILE
    from x0tta.identity.core.certs import KeyType
    from x0tta.identity.core.types import SvidError, key_algorithm, load_pem_chain, spiffe_id_of

    ca = _open(args)
    out = Path(args.out)
    try:
        leaf = load_pem_chain((out / SVID_FILE).read_bytes())[0]
    except (OSError, SvidError) as exc:
        raise UsageError(f"cannot read the current SVID in {out}: {exc}") from exc
    nb, na = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
    now = time.time()
    due = nb + (na - nb) * args.fraction
    if now < due:
        info = {"renewed": False, "due": _iso(due), "not_after": _iso(na)}
        emit(args, info, lambda i: f"not due: renewal at {i['due']} (expires {i['not_after']})")
        return 0
    ttl = args.ttl or (na - nb)
    if args.key_type:
        key_type = KeyType(args.key_type)
    else:
        key_type = KeyType.ECDSA_P256 if key_algorithm(leaf).startswith("ECDSA") else KeyType.ML_DSA_65
    svid = ca.issue_to(out, spiffe_id_of(leaf), ttl, key_type=key_type)
    emit(args, {"renewed": True, **_svid_info(svid, out)}, _render_svid)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from cryptography import x509


    ca = _open(args)
    serials = [int(s, 16) for s in args.serial] if args.serial else None
    new = ca.revoke(serials, args.spiffe_id, reason=x509.ReasonFlags[args.reason])
    if not new:
        print("nothing new to revoke (unknown ID, or already revoked)", file=sys.stderr)
    for s in new:
        print(f"revoked {s:x}")
    print(f"published {ca.directory / 'crl.pem'}: copy it to every node's identity directory")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:

    ca = _open(args)
    rl = ca.publish_crl(validity=args.validity)
    nxt = _iso(rl.next_update) if rl.next_update else "never"
    print(f"published CRL #{rl.number} ({len(rl.serials)} revoked) until {nxt}: {ca.directory / 'crl.pem'}")
    return 0


def cmd_rollover(args: argparse.Namespace) -> int:

    ca = _open(args)
    bundle = ca.directory / "bundle.pem"
    if args.step == "prepare":
        root = ca.rollover_prepare()
        print(f"next root prepared (serial {root.serial_number:x}); {bundle} now holds both roots.")
        print("Copy bundle.pem to every node, then: x0tta ca rollover activate")
    elif args.step == "activate":
        ca.rollover_activate()
        print("the next root signs from now on; the old root's key is deleted, its certificate stays in bundle.pem.")
        print("Re-issue or let nodes renew; once old SVIDs have expired: x0tta ca rollover retire")
    else:
        ca.rollover_retire(force=args.force)
        print(f"old root removed from {bundle}: copy it to every node")
    return 0


def cmd_list(args: argparse.Namespace) -> int:

    ca = _open(args)
    revoked = {e.serial for e in ca.revoked()}
    rows = [
        {
            "serial": f"{r.serial:x}",
            "spiffe_id": r.spiffe_id,
            "key": r.key_type,
            "not_after": _iso(r.not_after),
            "revoked": r.serial in revoked,
        }
        for r in ca.issued()
    ]

    def render(data: dict[str, Any]) -> str:
        head = f"trust domain {data['trust_domain']}, root {data['root_key']}, {len(data['issued'])} unexpired SVIDs"
        cells = [
            (r["spiffe_id"], r["serial"], r["key"], r["not_after"], "yes" if r["revoked"] else "")
            for r in data["issued"]
        ]
        return head + "\n\n" + table(cells, ("spiffe id", "serial", "key", "not after", "revoked"))

    emit(args, {"trust_domain": ca.trust_domain, "root_key": ca.key_type.value, "issued": rows}, render)
    return 0
