"""Operator commands against a real mosquitto: a signed command runs and its result comes back;
unsigned, unknown key, one signature half invalid, expired, replayed and wrong-target commands are
each refused with their reason and run nothing; the replay counter survives a restart. And the
node's signed birth and death: `x0tta fleet nodes` believes the node's own and shows a forged one.
And the node's persistent session: commands sent while it is away, or received but not handled
when it stopped, run once when it is back, also after a broker restart, unless they expired.

One broker for the module's tests (tests/kit/mosquitto.py, a free loopback port), the node ``n1``
(the fleet subsystem, with the agent's real handler registry from x0tta/agent/wiring.py), an
operator publishing as the ACL's ``fleet-operator`` user, and the fleet-monitor collecting results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.fleet.test_fleet_broker import Collector, agent_settings
from tests.kit.mosquitto import MONITOR, OPERATOR, Broker
from tests.kit.wait import until
from x0tta.agent.wiring import AgentHooks, fleet_actions
from x0tta.fleet.core import command as c
from x0tta.fleet.core.command import Command, Target
from x0tta.fleet.service import FleetService
from x0tta.identity.core.operator import OperatorKey
from x0tta.telemetry.testing import StandaloneContext

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]

NODE = "spiffe://mesh.x0tta/node/n1"  # [identity] defaults: the node's own ID
HEALTH = [{"subsystem": "fleet", "state": "ok", "conditions": []}]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker"), clients=("n1", "n2", MONITOR, OPERATOR))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def keys():
    return OperatorKey.generate(), OperatorKey.generate()  # the authorized operator, a stranger


class Node:
    """The fleet subsystem of node n1, with the agent's handlers and a recorded drain (this host has
    no batman-adv: the drain handler stands in for the mesh subsystem and counts what it is asked)."""

    def __init__(self, broker: Broker, state: Path, key: OperatorKey) -> None:
        state.mkdir(exist_ok=True)
        (state / "operator.pub.pem").write_bytes(key.public.to_pem())
        (state / "stray.pub.pem").write_bytes(b"not a key")  # reported, and the good key still loads
        self.settings = agent_settings(broker, "n1", state, operator_keys=(str(state),))
        self.state = state
        self.drained: list[str] = []
        self.svc = FleetService(self.settings.fleet, subsystem_health=lambda: HEALTH)
        fleet_actions(self.svc.actions, {}, AgentHooks(subsystem_health=lambda: HEALTH))

        async def drain(cmd):
            self.drained.append(cmd.args["interface"])
            return {"interface": cmd.args["interface"], "drained": True}

        self.svc.actions.register("drain", drain)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Node:
        ctx = StandaloneContext(self.settings, name="fleet", node_id="n1", state_dir=self.state)
        self.ctx = ctx
        self.task = asyncio.create_task(self.svc.run(ctx))
        await until(lambda: self.svc.connected and self.svc._counters is not None, 20, what="the node connected")
        await asyncio.sleep(0.2)  # the SUBACK of the command topic follows the birth
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def count(self, outcome: str, reason: str) -> float:
        return self.ctx.registry.get_sample_value("x0tta_fleet_commands_total",
                                                  {"outcome": outcome, "reason": reason}) or 0.0


def command(key: OperatorKey, counter: int, action: str = "drain", args=None, target: Target | None = None,
            issued: float | None = None, ttl: float = 60.0) -> Command:
    now = time.time() if issued is None else issued
    return Command(uuid.uuid4().hex, key.key_id, counter, now, now + ttl, target or Target(ids=frozenset({NODE})),
                   action, args if args is not None else {"interface": "eth1"})


async def send(broker: Broker, data: bytes, expiry: int = 60) -> None:
    from x0tta.cli.fleet import publish_command

    code = await publish_command("127.0.0.1", broker.port, broker.files(OPERATOR), "x0tta", data, expiry)
    assert code < 0x80, f"the broker refused the command: 0x{code:02x}"


def cli(argv: list[str]) -> list[dict]:
    """``x0tta ARGV --json``, as an operator runs it; its JSON output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "x0tta.cli.main", *argv], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def results(col: Collector) -> dict[str, dict]:
    return {o["body"]["command"]: o["body"] for t, o in col.received if o["schema"] == "x0tta.fleet.result/1"}


def swap(data: bytes, half: str, other: OperatorKey) -> bytes:
    env = json.loads(data)
    env["signature"][half] = other.sign(env["command"].encode()).to_json()[half]
    return json.dumps(env).encode()


async def test_a_valid_command_runs_and_each_bad_one_is_refused_with_its_reason(broker, keys, tmp_path):
    key, stranger = keys
    async with Collector(broker) as col, Node(broker, tmp_path / "n1", key) as node:
        good = command(key, 10)
        # the operator's CLI: send it, wait for the result; then ask for it again with status
        (tmp_path / "good.json").write_bytes(c.sign(key, good))
        conn = ["--broker", "127.0.0.1", "--port", str(broker.port), "--cert", broker.files(OPERATOR)["cert_file"],
                "--key", broker.files(OPERATOR)["key_file"], "--ca", broker.files(OPERATOR)["ca_file"], "--json"]
        sent = await asyncio.to_thread(cli, ["fleet", "send", str(tmp_path / "good.json"), "--wait", "3s", *conn])
        assert results(col)[good.id]["outcome"] == "executed" and node.drained == ["eth1"]
        status = await asyncio.to_thread(cli, ["fleet", "status", good.id, "--wait", "1s", *conn])
        for out in (sent, status):
            assert [(r["node"], r["outcome"], r["detail"]) for r in out] == [("n1", "executed",
                                                                              {"interface": "eth1", "drained": True})]
        diag = command(key, 11, "diagnostics", {})
        await send(broker, c.sign(key, diag))
        await until(lambda: diag.id in results(col), 20, what="the diagnostic bundle")
        assert results(col)[diag.id]["detail"]["subsystems"] == HEALTH

        bad = {
            "unsigned": c.unsigned(command(key, 20)),
            "unknown_operator": c.sign(stranger, command(stranger, 21)),
            "bad_ed25519": swap(c.sign(key, command(key, 22)), "ed25519", stranger),
            "bad_mldsa": swap(c.sign(key, command(key, 23)), "mldsa65", stranger),
            "expired": c.sign(key, command(key, 24, issued=time.time() - 120, ttl=60)),
            "replayed": c.sign(key, command(key, 10)),  # the valid command's counter again
            "unsupported": c.sign(key, command(key, 25, "quarantine", {"node": "spiffe://mesh.x0tta/node/n2"})),
        }
        ids = {reason: c.decode(data).command.id for reason, data in bad.items()}
        for data in bad.values():
            await send(broker, data)
        await until(lambda: set(ids.values()) <= set(results(col)), 20, what="a result for every refused command")
        for reason, cid in ids.items():
            r = results(col)[cid]
            assert (r["outcome"], r["reason"]) == ("refused", reason), r
            assert node.count("refused", reason) == 1
        # for another node: counted and logged, not answered (every node reads every command)
        other = command(key, 26, target=Target(ids=frozenset({"spiffe://mesh.x0tta/node/n2"})))
        await send(broker, c.sign(key, other))
        await until(lambda: node.count("refused", "wrong_target") == 1, 20, what="the wrong target refused")
        assert other.id not in results(col)
        assert node.drained == ["eth1"]  # nothing but the valid command ran
        assert node.count("executed", "none") == 2
        # the good counters moved the operator's counter on; refused ones did not - except the
        # unsupported quarantine: accepted, its counter written, then its handler found no guard here
        assert node.svc._last == {key.key_id: 25}


async def test_the_replay_counter_survives_a_restart(broker, keys, tmp_path):
    key, _ = keys
    first = command(key, 5)
    async with Collector(broker) as col:
        async with Node(broker, tmp_path / "n1", key) as node:
            await send(broker, c.sign(key, first))
            await until(lambda: first.id in results(col), 20, what="the first result")
        async with Node(broker, tmp_path / "n1", key) as node:
            again = c.sign(key, first)  # the same envelope, replayed to the restarted node
            await send(broker, again)
            await until(lambda: node.count("refused", "replayed") == 1, 20, what="the replay refused")
            assert node.drained == []


async def test_a_command_sent_while_the_node_is_away_runs_once_when_it_is_back(broker, keys, tmp_path):
    """The node's persistent session: the broker queues what is sent while it is stopped and
    delivers it when it connects again; a command whose MQTT expiry passed meanwhile is dropped by
    the broker, one that outlived its own expiry in the queue is refused by the node."""
    key, _ = keys
    state = tmp_path / "n1"
    async with Collector(broker) as col:
        async with Node(broker, state, key):
            pass  # the first connection: the broker now holds n1's session and its subscription
        dropped = command(key, 40, args={"interface": "eth3"}, ttl=1.0)
        late = command(key, 41, args={"interface": "eth4"}, ttl=1.0)
        await send(broker, c.sign(key, dropped), expiry=1)  # the broker forgets it after 1 s
        await send(broker, c.sign(key, late), expiry=60)  # the broker keeps it past the command's expiry
        # both commands expire while the node is away (mosquitto counts expiry in whole seconds:
        # 1 s of expiry can last up to 2 s)
        await asyncio.sleep(2.5)
        away = command(key, 42, args={"interface": "eth2"})
        await send(broker, c.sign(key, away))
        async with Node(broker, state, key) as node:
            await until(lambda: {late.id, away.id} <= set(results(col)), 20, what="the queued commands' results")
            assert results(col)[away.id]["outcome"] == "executed"
            assert (results(col)[late.id]["outcome"], results(col)[late.id]["reason"]) == ("refused", "expired")
            assert node.drained == ["eth2"] and dropped.id not in results(col)
        async with Node(broker, state, key) as node:  # delivered and acknowledged: not again
            probe = command(key, 43, "diagnostics", {})
            await send(broker, c.sign(key, probe))
            await until(lambda: probe.id in results(col), 20, what="a command after the restart")
            assert node.drained == [] and node.count("executed", "none") == 1


async def test_a_command_received_but_not_handled_before_a_stop_comes_again(broker, keys, tmp_path):
    """Acknowledged once handled, not on arrival: a command the node had received when it stopped,
    before its counter was written, is delivered again by the broker and runs then, once."""
    key, _ = keys
    state = tmp_path / "n1"
    cmd = command(key, 60, args={"interface": "eth6"})
    async with Collector(broker) as col:
        async with Node(broker, state, key) as first:
            received = asyncio.Event()

            async def stalled(ctx, topics, data):  # the agent stops before it decides
                received.set()
                await asyncio.Event().wait()

            first.svc.handle_command = stalled  # type: ignore[method-assign]
            await send(broker, c.sign(key, cmd))
            await asyncio.wait_for(received.wait(), 20)
        async with Node(broker, state, key) as node:
            await until(lambda: cmd.id in results(col), 20, what="the command's result after the restart")
            assert results(col)[cmd.id]["outcome"] == "executed" and node.drained == ["eth6"]


async def test_a_command_queued_for_an_away_node_survives_a_broker_restart(broker, keys, tmp_path):
    """mosquitto keeps the node's session and what is queued for it across a clean restart
    (persistence true), as docs/fleet.md says."""
    key, _ = keys
    state = tmp_path / "n1"
    async with Node(broker, state, key):
        pass
    queued = command(key, 50, args={"interface": "eth5"})
    await send(broker, c.sign(key, queued))
    await asyncio.to_thread(broker.stop)  # SIGTERM: mosquitto writes its persistence file
    await asyncio.to_thread(broker.start)
    async with Collector(broker) as col, Node(broker, state, key) as node:
        await until(lambda: queued.id in results(col), 20, what="the queued command's result")
        assert results(col)[queued.id]["outcome"] == "executed" and node.drained == ["eth5"]


def forged_death(broker: Broker, session: int) -> bytes:
    """A death of n1, signed by node n2's fleet key: what a node that got write access to another's
    status topic could publish."""
    from cryptography.hazmat.primitives import serialization

    from x0tta.fleet.core import payloads
    from x0tta.fleet.core.signing import sign_status

    f2 = broker.files("n2")
    key2 = serialization.load_pem_private_key(Path(f2["key_file"]).read_bytes(), None)
    death = payloads.death("f1", "n1", time.time(), session, "lost")
    return payloads.encode(sign_status(death, key2, Path(f2["cert_file"]).read_bytes()))


async def test_fleet_nodes_believes_signed_status_and_shows_forged_deaths(broker, keys, tmp_path):
    from tests.integration.fleet.test_fleet_broker import _paths
    from x0tta.cli.fleet import collect, nodes_view
    from x0tta.fleet.core.signing import load_cas
    from x0tta.fleet.mqtt import Connection, tls_context

    cas = await asyncio.to_thread(lambda: load_cas(Path(broker.files(OPERATOR)["ca_file"]).read_bytes()))
    topics = ["x0tta/nodes/+/status", "x0tta/nodes/+/state"]

    async def view() -> dict:
        got = await collect("127.0.0.1", broker.port, broker.files(OPERATOR), topics, 1.5)
        return {r["node"]: r for r in nodes_view(got, cas)}

    async with Node(broker, tmp_path / "n1", keys[0]) as node:
        await until(lambda: node.svc.session > 0, 10, what="the birth")
        row = (await view())["n1"]
        assert (row["status"], row["signed"], row["session"]) == ("alive", "valid", node.svc.session), row
        # Someone who can write n1's status topic (here with n1's broker credentials, as the broker
        # itself could) publishes a death signed by node n2: shown as forged, not believed.
        forged = await asyncio.to_thread(forged_death, broker, node.svc.session)
        s = agent_settings(broker, "n1", tmp_path / "x").fleet
        async with Connection(s, "intruder", tls_context(_paths(broker.files("n1")))) as conn:
            assert await conn.publish("x0tta/nodes/n1/status", forged, retain=True) == 0
        row = (await view())["n1"]
        assert row["status"] == "unknown (forged death)" and row["signed"].startswith("FORGED: the certificate is")
    row = (await view())["n1"]  # the node's own death on its clean stop: signed, believed
    assert (row["status"], row["signed"]) == ("dead (shutdown)", "valid"), row
