"""``x0tta rollout``: start, watch, pause, resume and abort coordinated rollouts in etcd.

The command talks to the etcd cluster itself (not to an agent): ``--endpoints``, ``--cert``,
``--key``, ``--ca`` and ``--prefix``, each defaulting to the ``[coord]`` section of ``--config``.
A rollout document is the JSON of :class:`x0tta.coord.core.rollout.Rollout`; ``x0tta rollout
bytes DOC`` prints the exact bytes the operator signs (docs/coordination.md), and ``start`` stores
the document with that signature. Nodes verify it before they act.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from x0tta.cli.common import add_json_flag, emit, table
from x0tta.common.errors import DecodeError, PermanentError
from x0tta.coord.core import rollout as core
from x0tta.coord.core.rollout import Rollout
from x0tta.coord.etcd import EtcdClient
from x0tta.coord.store import RolloutStore


def register(sub: Any) -> None:
    p = sub.add_parser("rollout", help="coordinated rollouts on etcd (start, status, pause, resume, abort)")
    p.add_argument("--endpoints", help="etcd client URLs, comma-separated (default: [coord] endpoints)")
    p.add_argument("--cert", help="client certificate (default: [coord] cert_file)")
    p.add_argument("--key", help="client key (default: [coord] key_file)")
    p.add_argument("--ca", help="CA of the etcd members (default: [coord] ca_file)")
    p.add_argument("--prefix", help="key prefix (default: [coord] prefix)")
    rs = p.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    b = rs.add_parser("bytes", help="print the bytes the operator signs for a rollout document")
    b.add_argument("document")
    b.set_defaults(func=_bytes)
    g = rs.add_parser("sign", help="sign a rollout document with an operator key (x0tta fleet keygen); "
                      "prints the signature's JSON for `start --signature`")
    g.add_argument("document")
    g.add_argument("--operator-key", required=True, help="NAME.key.pem of `x0tta fleet keygen`")
    g.set_defaults(func=_sign)
    s = rs.add_parser("start", help="store a signed rollout; the targeted nodes take their turns")
    s.add_argument("document")
    s.add_argument("--signature", required=True, help="file with the operator's signature of `rollout bytes`")
    add_json_flag(s)
    s.set_defaults(func=_start)
    st = rs.add_parser("status", help="phase and nodes of one rollout, or every rollout")
    st.add_argument("id", nargs="?")
    add_json_flag(st)
    st.set_defaults(func=_status)
    for name, helptext in (("pause", "no node takes a new turn (the ones in turn finish)"),
                           ("resume", "continue a paused rollout"),
                           ("abort", "stop, and roll back every node that changed, last first")):
        a = rs.add_parser(name, help=helptext)
        a.add_argument("id")
        if name == "abort":
            a.add_argument("--reason", default="aborted by the operator")
        add_json_flag(a)
        a.set_defaults(func=_change)


def _document(path: str) -> Rollout:
    try:
        return Rollout.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise DecodeError(f"rollout document {path}: {exc}") from exc


def _client(args: argparse.Namespace) -> tuple[EtcdClient, str]:
    from x0tta.config.coord import CoordSettings

    s = CoordSettings()
    if getattr(args, "config", None):
        from x0tta.config.loader import load_settings

        s = load_settings(args.config).coord
    endpoints = args.endpoints.split(",") if args.endpoints else list(s.endpoints)
    if not endpoints:
        raise PermanentError("no etcd endpoints: give --endpoints or a --config with [coord] endpoints")
    client = EtcdClient(endpoints, cert_file=args.cert or s.cert_file, key_file=args.key or s.key_file,
                        ca_file=args.ca or s.ca_file, timeout=s.request_timeout)
    return client, args.prefix or s.prefix


def _run(args: argparse.Namespace, work: Any) -> Any:
    async def go() -> Any:
        client, prefix = _client(args)
        async with client:
            return await work(RolloutStore(client, prefix))
    return asyncio.run(go())


def _bytes(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(core.signed_bytes(_document(args.document)))
    return 0


def _sign(args: argparse.Namespace) -> int:
    from x0tta.identity.core.operator import load_private

    try:
        key = load_private(Path(args.operator_key).read_bytes())
    except OSError as exc:
        raise PermanentError(f"operator key {args.operator_key}: {exc}") from exc
    sig = key.sign(core.signed_bytes(_document(args.document)))
    sys.stdout.write(json.dumps(sig.to_json()) + "\n")
    return 0


def _start(args: argparse.Namespace) -> int:
    ro = _document(args.document)
    try:
        sig = Path(args.signature).read_bytes()
    except OSError as exc:
        raise PermanentError(f"signature {args.signature}: {exc}") from exc

    async def work(store: RolloutStore) -> Any:
        return (await store.create(ro, sig, time.time())).to_json()

    emit(args, _run(args, work), lambda d: f"rollout {ro.id} started on {len(d['targets'])} of the registered nodes "
                                           f"({', '.join(d['targets'])}), wave {ro.wave}, soak {ro.soak:g} s")
    return 0


def _status(args: argparse.Namespace) -> int:
    async def work(store: RolloutStore) -> Any:
        views = [await store.load(args.id)] if args.id else await store.list()
        out = []
        for v in views:
            if v is None:
                raise PermanentError(f"no rollout {args.id}")
            st = v.state
            out.append({"id": v.id, "phase": st.phase.value if st else None, "reason": st.reason if st else "",
                        "targets": list(st.targets) if st else [], "order": list(st.order) if st else [],
                        "nodes": st.to_json()["nodes"] if st else {},
                        "turns": {str(k): who for k, (who, _) in v.turns.items()}, "error": v.error})
        return out

    def render(rows: list[dict[str, Any]]) -> str:
        lines = [table([(r["id"], r["phase"], f"{len(r['order'])}/{len(r['targets'])}",
                         ",".join(r["turns"].values()), r["reason"]) for r in rows],
                       ["ROLLOUT", "PHASE", "APPLIED", "IN TURN", "REASON"])]
        if args.id and rows:
            lines.append(table([(n, rec["step"], rec["detail"]) for n, rec in rows[0]["nodes"].items()],
                               ["NODE", "STEP", "HEALTH"]))
        return "\n\n".join(lines)

    emit(args, _run(args, work), render)
    return 0


def _change(args: argparse.Namespace) -> int:
    now = time.time()
    action = args.rollout_command

    def change(st: core.RolloutState) -> core.RolloutState:
        if action == "pause":
            return core.pause(st, now)
        if action == "resume":
            return core.resume(st, now)
        return core.abort(st, args.reason, now)

    async def work(store: RolloutStore) -> Any:
        return (await store.update(args.id, change)).to_json()

    emit(args, _run(args, work), lambda d: f"rollout {args.id}: {d['phase']}")
    return 0
