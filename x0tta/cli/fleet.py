"""``x0tta fleet``: an operator's tools for the fleet plane (docs/fleet.md).

* ``keygen NAME``: a new operator key pair, Ed25519 + ML-DSA-65 (``NAME.key.pem``, mode 0600, and
  ``NAME.pub.pem`` for the nodes' ``[fleet] operator_keys``); prints the key id.
* ``sign``: a command envelope, signed, on stdout (or ``--out``): the action and its arguments,
  the targets (SPIFFE IDs or a glob pattern), the lifetime and the counter (by default the time in
  milliseconds, so that it grows with every command of one operator).
* ``send FILE``: publishes an envelope to the broker with the operator's TLS client certificate
  (the ACL's ``fleet-operator`` user), its MQTT 5 message expiry set to what is left of the
  command's lifetime; ``--wait`` prints the nodes' results as they come.
* ``status ID``: the results nodes published for command ``ID`` (each node's last is retained).
* ``nodes``: every node's last retained status (birth or death, its signature checked) and state.

These talk to the broker, not to an agent: ``--broker``, ``--port``, ``--cert``, ``--key`` and
``--ca`` are the operator's own connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from x0tta.cli.common import add_json_flag, emit, parse_duration, table
from x0tta.clock import SYSTEM
from x0tta.common.errors import DecodeError, PermanentError
from x0tta.config.fleet import FleetPaths, FleetSettings
from x0tta.fleet.core import command as cmdcore
from x0tta.fleet.core import payloads
from x0tta.fleet.core.command import ACTIONS, Command, Target
from x0tta.fleet.core.signing import StatusSignatureError, load_cas, verify_status
from x0tta.identity.core.operator import OperatorKey, load_private


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="the fleet broker's host")
    p.add_argument("--port", type=int, default=8883, help="its TLS port (default 8883)")
    p.add_argument("--cert", required=True, help="the operator's client certificate (CN: an ACL user)")
    p.add_argument("--key", dest="tls_key", required=True, help="its private key")
    p.add_argument("--ca", required=True, help="CA certificates of the broker's certificate")
    p.add_argument("--prefix", default="x0tta", help="[fleet] topic_prefix of the nodes (default x0tta)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("fleet", help="operator commands to the fleet, and its nodes' state (docs/fleet.md)")
    g = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    q = g.add_parser("keygen", help="a new operator key pair (Ed25519 + ML-DSA-65)")
    q.add_argument("name", help="writes NAME.key.pem (0600) and NAME.pub.pem")
    q.add_argument("--format", choices=("pem", "json"), default="pem")
    q.set_defaults(func=cmd_keygen)
    q = g.add_parser("sign", help="a signed command envelope")
    q.add_argument("--operator-key", required=True, help="NAME.key.pem of keygen")
    q.add_argument("--action", required=True, choices=sorted(ACTIONS))
    q.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="an argument of the action; VALUE is read as JSON if it parses, else as text")
    t = q.add_mutually_exclusive_group(required=True)
    t.add_argument("--target", action="append", metavar="SPIFFE_ID", help="a node the command is for")
    t.add_argument("--pattern", help="a glob over the nodes' SPIFFE IDs, e.g. 'spiffe://td/node/*'")
    q.add_argument("--ttl", type=parse_duration, default=300.0, help="how long the command is valid (default 5m)")
    q.add_argument("--counter", type=int, help="the replay counter (default: the time in milliseconds)")
    q.add_argument("--out", help="write the envelope here instead of stdout")
    q.set_defaults(func=cmd_sign)
    q = g.add_parser("send", help="publish a signed envelope to the broker")
    q.add_argument("envelope", help="the file of `x0tta fleet sign` (- for stdin)")
    q.add_argument("--wait", type=parse_duration, help="then print the results that come within this (e.g. 10s)")
    _connection_flags(q)
    add_json_flag(q)
    q.set_defaults(func=cmd_send)
    q = g.add_parser("status", help="the nodes' results of a command")
    q.add_argument("id", help="the command id (printed by sign and send)")
    q.add_argument("--wait", type=parse_duration, default=3.0, help="collect results for this long (default 3s)")
    _connection_flags(q)
    add_json_flag(q)
    q.set_defaults(func=cmd_status)
    q = g.add_parser("nodes", help="every node's last status and state, signatures checked")
    q.add_argument("--wait", type=parse_duration, default=2.0,
                   help="collect the retained messages for this long (default 2s)")
    q.add_argument("--node-ca", help="the CA of the nodes' fleet certificates, to check births and deaths "
                   "(default: --ca)")
    _connection_flags(q)
    add_json_flag(q)
    q.set_defaults(func=cmd_nodes)


# -- keys and envelopes ---------------------------------------------------------------------------

def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def cmd_keygen(args: argparse.Namespace) -> int:
    key = OperatorKey.generate()
    ext = args.format
    priv, pub = Path(f"{args.name}.key.{ext}"), Path(f"{args.name}.pub.{ext}")
    try:
        write_private(priv, key.to_pem() if ext == "pem" else key.to_json())
    except FileExistsError:
        raise PermanentError(f"{priv} exists: keygen never overwrites a key") from None
    pub.write_bytes(key.public.to_pem() if ext == "pem" else key.public.to_json())
    print(f"operator key {key.key_id}: private {priv} (0600), public {pub} (for [fleet] operator_keys)")
    return 0


def _arg_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build(key: OperatorKey, action: str, args: dict[str, Any], target: Target, ttl: float,
          counter: int | None = None, now: float | None = None) -> Command:
    now = time.time() if now is None else now
    return Command(uuid.uuid4().hex, key.key_id, counter if counter is not None else int(now * 1000),
                   round(now, 3), round(now + ttl, 3), target, action, args)


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_private(Path(args.operator_key).read_bytes())
    cargs = {}
    for item in args.arg:
        name, sep, value = item.partition("=")
        if not sep:
            raise PermanentError(f"--arg {item!r}: NAME=VALUE")
        cargs[name] = _arg_value(value)
    target = Target(pattern=args.pattern) if args.pattern else Target(ids=frozenset(args.target))
    cmd = build(key, args.action, cargs, target, args.ttl, args.counter)
    data = cmdcore.sign(key, cmd)
    try:
        cmdcore.decode(data)  # what a node will check first: refuse to sign what nodes would refuse
    except DecodeError as exc:
        raise PermanentError(f"this command would be refused as malformed: {exc}") from None
    if args.out:
        Path(args.out).write_bytes(data + b"\n")
    else:
        sys.stdout.write(data.decode() + "\n")
    print(f"command {cmd.id} (counter {cmd.counter}, valid until {cmd.expires_at:.0f})", file=sys.stderr)
    return 0


# -- the broker -------------------------------------------------------------------------------

def _settings(host: str, port: int, files: dict[str, str]) -> tuple[FleetSettings, FleetPaths]:
    s = FleetSettings(broker=host, port=port, publish_timeout=15.0, keepalive=30, **files)
    return s, FleetPaths(files["cert_file"], files["key_file"], files["ca_file"], "")


async def publish_command(host: str, port: int, files: dict[str, str], prefix: str, data: bytes,
                          expiry: int) -> int:
    """Publish an envelope on ``<prefix>/commands`` (QoS 1, expiring after ``expiry`` s); the PUBACK's
    reason code. ``files``: ``cert_file``, ``key_file``, ``ca_file`` of the operator's certificate."""
    from x0tta.fleet.mqtt import Connection, tls_context

    s, paths = _settings(host, port, files)
    tls = await asyncio.to_thread(tls_context, paths)
    async with Connection(s, f"operator-{uuid.uuid4().hex[:12]}", tls) as conn:
        return await conn.publish(payloads.Topics(prefix, "operator").commands, data, expiry=expiry)


async def collect(host: str, port: int, files: dict[str, str], topics: list[str], seconds: float,
                  until: Any = None) -> list[tuple[str, bytes]]:
    """(topic, payload) of what arrives on ``topics`` (retained first) within ``seconds``."""
    from x0tta.fleet.mqtt import Connection, tls_context

    s, paths = _settings(host, port, files)
    tls = await asyncio.to_thread(tls_context, paths)
    got: list[tuple[str, bytes]] = []
    async with Connection(s, f"operator-{uuid.uuid4().hex[:12]}", tls) as conn:
        for t in topics:
            await conn.subscribe(t)

        async def read() -> None:
            async for topic, data, _ack in conn.messages():
                got.append((topic, data))
                if until is not None and until(got):
                    return

        with contextlib.suppress(TimeoutError):
            await SYSTEM.wait_for(read(), seconds)
    return got


def _files(args: argparse.Namespace) -> dict[str, str]:
    return {"cert_file": args.cert, "key_file": args.tls_key, "ca_file": args.ca}


def _results(got: list[tuple[str, bytes]], cid: str) -> list[dict[str, Any]]:
    out = []
    for _topic, data in got:
        try:
            obj = payloads.decode(data)
        except DecodeError:
            continue
        if obj["schema"] == payloads.SCHEMA_PREFIX + "result/1" and obj["body"]["command"] == cid:
            out.append({"node": obj["node"], "at": obj["at"], **obj["body"]})
    return list({r["node"]: r for r in out}.values())


def render_results(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no result yet"
    return table([(r["node"], r["outcome"], r["reason"] or "-", r["message"]) for r in rows],
                 ("node", "outcome", "reason", "message"))


def cmd_send(args: argparse.Namespace) -> int:
    data = (sys.stdin.buffer.read() if args.envelope == "-" else Path(args.envelope).read_bytes()).strip()
    cmd = cmdcore.decode(data).command
    left = int(cmd.expires_at - time.time())
    if left <= 0:
        raise PermanentError(f"command {cmd.id} has expired; sign a new one")
    files = _files(args)
    code = asyncio.run(publish_command(args.broker, args.port, files, args.prefix, data, left))
    if code >= 0x80:
        raise PermanentError(f"the broker refused the command (PUBACK 0x{code:02x}): the certificate's user "
                             f"must be allowed to write {args.prefix}/commands (configs/mosquitto/acl)")
    print(f"sent command {cmd.id} ({cmd.action}), expires in {left} s", file=sys.stderr)
    if args.wait:
        got = asyncio.run(collect(args.broker, args.port, files, [f"{args.prefix}/nodes/+/result"], args.wait))
        emit(args, _results(got, cmd.id), render_results)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    got = asyncio.run(collect(args.broker, args.port, _files(args), [f"{args.prefix}/nodes/+/result"],
                              args.wait))
    emit(args, _results(got, args.id), render_results)
    return 0


def nodes_view(got: list[tuple[str, bytes]], cas: list[Any]) -> list[dict[str, Any]]:
    """One row per node from the retained status and state messages; a birth or death whose
    signature does not hold against the fleet's ``cas`` is shown as forged, not believed."""
    nodes: dict[str, dict[str, Any]] = {}
    for topic, data in got:
        parts = topic.split("/")
        if len(parts) < 3 or parts[-1] not in ("status", "state"):
            continue
        row = nodes.setdefault(parts[-2], {"node": parts[-2], "status": "-", "session": None, "signed": "-",
                                           "state": "-", "version": "-", "at": None})
        try:
            obj = payloads.decode(data)
        except DecodeError as exc:
            row["status" if parts[-1] == "status" else "state"] = f"unreadable ({str(exc)[:40]})"
            continue
        body = obj["body"]
        if parts[-1] == "status":
            kind = obj["schema"].rsplit(".", 1)[-1]
            row["status"] = "alive" if kind.startswith("birth") else f"dead ({body.get('reason')})"
            row["session"], row["at"] = body.get("session"), obj["at"]
            try:
                verify_status(obj, cas)
                row["signed"] = "valid"
            except StatusSignatureError as exc:
                row["status"] = f"unknown (forged {kind.split('/')[0]})"
                row["signed"] = f"FORGED: {exc}"
        else:
            row["state"], row["version"] = body["state"], body["version"]
    return sorted(nodes.values(), key=lambda r: r["node"])


def render_nodes(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no node has reported"
    return table([(r["node"], r["status"], r["signed"], r["session"], r["state"], r["version"]) for r in rows],
                 ("node", "status", "signed", "session", "state", "version"))


def cmd_nodes(args: argparse.Namespace) -> int:
    cas = load_cas(Path(args.node_ca or args.ca).read_bytes())
    got = asyncio.run(collect(args.broker, args.port, _files(args),
                              [f"{args.prefix}/nodes/+/status", f"{args.prefix}/nodes/+/state"],
                              args.wait))
    emit(args, nodes_view(got, cas), render_nodes)
    return 0
