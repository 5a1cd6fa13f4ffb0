"""``x0tta identity``: this node's SPIFFE ID and SVID as the running agent holds them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from x0tta.cli.common import add_json_flag, ask, emit


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("identity", help="this node's SPIFFE ID, SVID expiry and trust domains")
    add_json_flag(p)
    p.set_defaults(func=run)
    isub = p.add_subparsers(dest="identity_command", metavar="ACTION")
    q = isub.add_parser(
        "request", help="make a key and a certificate request on this node, for `x0tta ca sign` on the CA host"
    )
    q.add_argument("--dir", default=None, help="identity directory (default: from --config, else " + DEFAULT_DIR + ")")
    q.add_argument("--spiffe-id", default=None, help="default: the ID of the SVID already in --dir")
    q.add_argument("--key-type", choices=("ml-dsa-65", "ecdsa-p256"), default="ml-dsa-65")
    q.set_defaults(func=run_request)


DEFAULT_DIR = "/var/lib/x0tta/identity"


def run_request(args: argparse.Namespace) -> int:
    """Runs on the node, without the agent: only files in the identity directory are touched."""
    from x0tta.common.errors import PermanentError
    from x0tta.common.spiffe_id import SpiffeId
    from x0tta.identity.builtin import write_request
    from x0tta.identity.ca import PENDING_KEY_FILE, SVID_FILE
    from x0tta.identity.core.certs import KeyType
    from x0tta.identity.core.types import SvidError, SvidRejected, load_pem_chain, spiffe_id_of

    directory = args.dir
    if directory is None and getattr(args, "config", None):
        from x0tta.config.loader import load_settings

        s = load_settings(args.config)
        directory = str(Path(s.identity.paths(s.node.state_dir).key).parent)
    d = Path(directory or DEFAULT_DIR)
    if args.spiffe_id:
        sid = SpiffeId.parse(args.spiffe_id)
    else:
        try:
            sid = spiffe_id_of(load_pem_chain((d / SVID_FILE).read_bytes())[0])
        except (OSError, SvidError, SvidRejected) as exc:
            raise PermanentError(f"no usable SVID in {d} to take the ID from ({exc}); pass --spiffe-id") from None
    csr = write_request(d, sid, KeyType(args.key_type))
    print(f"request for {sid}: {csr} (key {d / PENDING_KEY_FILE}, 0600, stays here)")
    print(f"on the CA host: x0tta ca sign --csr <copy of {csr.name}> --spiffe-id {sid} --out <dir>;")
    print(f"then copy svid.pem, bundle.pem and crl.pem back into {d}")
    return 0


def render(d: dict[str, Any]) -> str:
    if "spiffe_id" not in d:
        return f"no SVID ({d.get('source')} source): {d.get('error') or 'not ready'}"
    rows = [
        ("spiffe id", d["spiffe_id"]),
        ("source", d["source"]),
        ("key", d["key_algorithm"]),
        ("serial", d["serial"]),
        ("valid", f"{d['not_before']} .. {d['not_after']}"),
        ("expires in", f"{d['expires_in']:.0f} s"),
        ("trust domains", ", ".join(d["trust_domains"])),
        ("revoked serials", d["revoked_serials"]),
        ("rotations", d["rotations"]),
    ]
    if d.get("last_error"):
        rows.append(("last error", d["last_error"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    emit(args, ask(args, "identity.show"), render)
    return 0
