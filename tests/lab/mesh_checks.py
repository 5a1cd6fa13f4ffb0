"""Checks run inside the UML guest, one process per node namespace (``ip netns exec``).

``python -m tests.lab.mesh_checks node OUT``: on the node it runs in, for both meshes, reads
originators, neighbours, gateways, hard interfaces and mesh settings through :class:`MeshClient`
and, right after, through ``batctl ... _json``; writes the comparison to OUT/<ns>.json.

``... reconcile OUT``: runs the mesh subsystem (:class:`MeshService`) with a [mesh] section that
changes every tunable, reads each back through batctl, then changes two by hand with batctl and
times how long the service takes to put them back (and whether it counted the drift).

``... bench OUT``: originator dump+decode by the client vs ``batctl meshif bat0 o``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tests.kit.wait import took
from x0tta.config.fields import build
from x0tta.config.schema import AgentSettings
from x0tta.lab.netns import run, shell
from x0tta.mesh.client import LinkControl, LinkEvent, MeshClient
from x0tta.mesh.core import batadv, views
from x0tta.mesh.core.batadv import Cmd, Reply
from x0tta.mesh.genl import BatadvSocket
from x0tta.mesh.service import MeshService

VIEWS = [
    ("originators", Cmd.GET_ORIGINATORS, "originators_json"),
    ("neighbors", Cmd.GET_NEIGHBORS, "neighbors_json"),
    ("gateways", Cmd.GET_GATEWAYS, "gateways_json"),
    ("interfaces", Cmd.GET_HARDIF, "hardifs_json"),
    ("settings", Cmd.GET_MESH, "mesh_json"),
]
KEYS = ("orig_address", "neigh_address", "hard_ifindex", "router")
# Link metrics move with every OGM or ELP probe, also between our read and batctl's (213 vs 217 on
# a busy guest, four reads in a row): equal within a tenth, which no decoding mistake (a byte
# order, a wrong attribute) stays inside.
MOVING = ("tq", "throughput")


def close(a: Any, b: Any) -> bool:
    if not isinstance(a, int) or not isinstance(b, int):
        return a == b
    return abs(a - b) <= max(8, 0.1 * max(abs(a), abs(b)))


T0 = time.monotonic()


def stage(what: str) -> None:
    """Say what the check is doing, at once: a check killed for its time limit shows where it stood."""
    print(f"{time.monotonic() - T0:7.2f} {what}", flush=True)


def batctl(*args: str) -> str:
    return subprocess.run(["batctl", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def differences(ours: Any, theirs: Any) -> list[str]:
    """What differs between our records (batctl vocabulary) and batctl's JSON; ages excepted."""
    if isinstance(theirs, dict):
        ours, theirs = [ours], [theirs]

    def key(e: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(e.get(k)) for k in KEYS)

    a = sorted((views.as_batctl(r) for r in ours), key=key)
    b = sorted((views.from_batctl(e) for e in theirs), key=key)
    if [key(x) for x in a] != [key(x) for x in b]:
        return [f"entries differ: ours {[key(x) for x in a]} batctl {[key(x) for x in b]}"]
    out = []
    for x, y in zip(a, b, strict=True):
        for k, v in y.items():
            if k == "mesh_ifname" and k not in x:
                continue  # batctl looks the name up itself
            if k == "last_seen_msecs":
                if abs(x.get(k, -10_000) - v) > 1500:
                    out.append(f"{key(x)} {k}: ours {x.get(k)} batctl {v}")
            elif k in MOVING and close(x.get(k), v):
                continue
            elif x.get(k) != v:
                out.append(f"{key(x)} {k}: ours {x.get(k)!r} batctl {v!r}")
    return out


async def node(out: Path) -> int:
    ns = os.environ.get("X0TTA_NS", "node")
    report: dict[str, Any] = {}
    bad = 0
    async with MeshClient() as client:
        for mesh in ("bat0", "bat1"):
            for name, cmd, what in VIEWS:
                attempts = 0
                for attempts in range(1, 5):  # noqa: B007 - TQ and throughput move; read both again on a mismatch
                    if cmd == Cmd.GET_MESH:
                        ours: Any = await client.mesh_info(mesh)
                    else:
                        ours = await client.dump(cmd, mesh)
                    theirs = json.loads(batctl("meshif", mesh, what))
                    diff = differences(ours, theirs)
                    if not diff:
                        break
                report[f"{mesh}.{name}"] = {
                    "entries": 1 if cmd == Cmd.GET_MESH else len(ours),
                    "attempts": attempts,
                    "differences": diff,
                }
                bad += bool(diff)
    (out / f"{ns}.json").write_text(json.dumps(report, indent=1) + "\n")
    return 1 if bad else 0


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = error = debug = _add


class _Health:
    def __init__(self) -> None:
        self.conditions: tuple[Any, ...] = ()

    def set(self, *conditions: Any) -> None:
        self.conditions = conditions

    def ok(self) -> None:
        self.conditions = ()


class _Admin:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def register(self, command: str, handler: Any) -> None:
        self.handlers[command] = handler


class _Ctx:
    """The agent's context as the subsystem contract states it (x0tta.common.subsystem.Context)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.name = "mesh"
        self.node_id = "x0m1"
        self.state_dir = Path("/run")
        self.health = _Health()
        self.admin = _Admin()
        self.registry = CollectorRegistry()
        self.tracer = None
        self.log = _Log()
        self._settings = settings

    @property
    def settings(self) -> AgentSettings:
        return self._settings


DESIRED = {
    "interface": "bat0",
    "hard_interfaces": ["v40a"],
    "reconcile_interval": 3.0,
    "orig_interval": 700,
    "hop_penalty": 50,
    "gw_mode": "server",
    "gw_bandwidth_down": 20_000,
    "gw_bandwidth_up": 4_000,
    "bridge_loop_avoidance": False,
    "distributed_arp_table": False,
    "aggregation": False,
    "fragmentation": False,
    "bonding": True,
    "multicast_forceflood": True,
    "multicast_fanout": 8,
    "ap_isolation": True,
    "hardif": {"v40a": {"hop_penalty": 15, "elp_interval": 300, "throughput_override": 5_000}},
}
# batctl command -> what it must print after reconcile
READBACK = [
    (("meshif", "bat0", "orig_interval"), "700"),
    (("meshif", "bat0", "hop_penalty"), "50"),
    (("meshif", "bat0", "gw_mode"), "server (announced bw: 20.0/4.0 MBit)"),
    (("meshif", "bat0", "bridge_loop_avoidance"), "disabled"),
    (("meshif", "bat0", "distributed_arp_table"), "disabled"),
    (("meshif", "bat0", "aggregation"), "disabled"),
    (("meshif", "bat0", "fragmentation"), "disabled"),
    (("meshif", "bat0", "bonding"), "enabled"),
    (("meshif", "bat0", "multicast_forceflood"), "enabled"),
    (("meshif", "bat0", "multicast_fanout"), "8"),
    (("meshif", "bat0", "ap_isolation"), "enabled"),
    (("hardif", "v40a", "hop_penalty"), "15"),
    (("hardif", "v40a", "elp_interval"), "300"),
    (("hardif", "v40a", "throughput_override"), "5.0 MBit"),
]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def reconcile(out: Path) -> int:
    settings = build(AgentSettings, {"mesh": DESIRED, "metrics": {"max_label_values": 1}})
    ctx = _Ctx(settings)
    svc = MeshService()
    task = asyncio.create_task(svc.run(ctx))  # type: ignore[arg-type]
    report: dict[str, Any] = {"readback": {}, "reverts": {}}
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if svc.applied_once:
                break
        for cmd, want in READBACK:
            got = batctl(*cmd).strip()
            report["readback"][" ".join(cmd)] = {"want": want, "got": got, "ok": got == want}
        for cmd, hand in ((("meshif", "bat0", "orig_interval"), "5000"), (("hardif", "v40a", "hop_penalty"), "99")):
            want = dict(READBACK)[cmd]
            drift_key = "orig_interval" if cmd[0] == "meshif" else "set_hardif.hop_penalty"
            before = sample(ctx.registry, "x0tta_mesh_drift_total", setting=drift_key)
            start = time.monotonic()
            batctl(*cmd, hand)
            reverted = None
            while time.monotonic() - start < 2 * DESIRED["reconcile_interval"] + 2:
                if batctl(*cmd).strip() == want:
                    reverted = time.monotonic() - start
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            counted = sample(ctx.registry, "x0tta_mesh_drift_total", setting=drift_key) - before
            report["reverts"][" ".join(cmd)] = {
                "reverted_after_s": reverted,
                "within_period": reverted is not None and reverted <= DESIRED["reconcile_interval"],
                "drift_counted": counted,
            }
        sizes = await svc.observe()
        report["observe"] = sizes
        report["metrics"] = {
            "originators": sample(ctx.registry, "x0tta_mesh_originators"),
            "neighbors": sample(ctx.registry, "x0tta_mesh_neighbors"),
            "gateways": sample(ctx.registry, "x0tta_mesh_gateways"),
            "overflow": sample(
                ctx.registry, "x0tta_mesh_label_overflow_total", metric="x0tta_mesh_neighbor_link_quality"
            ),
            "actions_set_mesh": sample(ctx.registry, "x0tta_mesh_reconcile_actions_total", kind="set_mesh"),
        }
        report["admin"] = {
            name: await handler({}) for name, handler in sorted(ctx.admin.handlers.items()) if name != "mesh.reconcile"
        }
        # a hard interface taken out of the mesh by hand comes back (RTNLGRP_LINK wakes the reconcile)
        start = time.monotonic()
        shell(None, "ip link set v40a nomaster")
        after = await took(
            lambda: '"v40a"' in batctl("meshif", "bat0", "hardifs_json"), 2 * DESIRED["reconcile_interval"], **FIGURE
        )
        report["reattach"] = {"after_s": after, "total_s": time.monotonic() - start, "link_events": svc.link_events}
        report["log_events"] = sorted({e for e, _ in ctx.log.events})
        report["health"] = [c.to_json() for c in ctx.health.conditions]
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=15)
        report["stopped"] = bool(done)  # a stop that hangs is reported, not waited for
        # what was measured so far, even when a step above failed (the test says which is missing)
        (out / "reconcile.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    with BatadvSocket() as s:
        report["reconverged_s"] = await took(
            lambda: bool([o for o in s.dump(Cmd.GET_ORIGINATORS, "bat0") if o.flag_best])
            and bool(s.dump(Cmd.GET_NEIGHBORS, "bat0")),
            20, **FIGURE
        )
    (out / "reconcile.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    ok = all(r["ok"] for r in report["readback"].values()) and all(
        r["within_period"] and r["drift_counted"] >= 1 for r in report["reverts"].values()
    ) and report["reattach"]["after_s"] is not None and report["stopped"]
    return 0 if ok else 1


# a wait that is a figure of the report: polled every 10 ms, None when it is not reached in time
FIGURE: dict[str, Any] = {"interval": 0.01, "missing_ok": True}


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)


async def links(out: Path) -> int:
    """rtnetlink through LinkControl, batadv config events, and the service building a mesh."""
    r: dict[str, Any] = {}
    shell(None, "ip link add x7a type veth peer name x7b")
    link_events: list[LinkEvent] = []
    config_events: list[Any] = []
    async with LinkControl() as lc, MeshClient() as mc:

        async def watch_links() -> None:
            async for ev in lc.events():
                link_events.append(ev)

        async def watch_config() -> None:
            async for ev in mc.config_events():
                config_events.append(ev)

        watchers = [asyncio.create_task(watch_links()), asyncio.create_task(watch_config())]
        await asyncio.sleep(0.3)
        stage("create bat7")
        await lc.create_mesh("bat7", "BATMAN_V")
        r["created_algo"] = (await mc.mesh_info("bat7")).algo_name
        r["created_event"] = await took(lambda: any(e.ifname == "bat7" for e in link_events), 5.0, **FIGURE)
        stage("attach x7a")
        await lc.set_mtu("x7a", 1560)
        await lc.attach("bat7", "x7a")
        await lc.set_up("x7a", True)
        await lc.set_up("bat7", True)
        r["attached"] = [h.hard_ifname for h in await mc.hardifs("bat7")]
        r["mtu"] = (await lc.link("x7a")).mtu
        r["master_is_bat7"] = (await lc.link("x7a")).master == (await lc.link("bat7")).ifindex
        link_events.clear()
        stage("link events")
        await lc.set_up("x7a", False)
        r["down_event_s"] = await took(lambda: any(e.ifname == "x7a" and not e.up for e in link_events), 5.0, **FIGURE)
        await lc.set_up("x7a", True)
        r["up_event_s"] = await took(lambda: any(e.ifname == "x7a" and e.up for e in link_events), 5.0, **FIGURE)
        config_events.clear()
        stage("config events")
        batctl("meshif", "bat7", "orig_interval", "1234")
        r["config_event_s"] = await took(
            lambda: any(getattr(e, "orig_interval", None) == 1234 for e in config_events), 5.0, **FIGURE
        )
        config_events.clear()
        await mc.set_hardif("bat7", "x7a", {"hop_penalty": 77})
        r["hardif_event_s"] = await took(
            lambda: any(getattr(e, "hop_penalty", None) == 77 and getattr(e, "hard_ifname", "") == "x7a"
                        for e in config_events), 5.0, **FIGURE
        )
        stage("detach and delete")
        await lc.detach("x7a")
        r["after_detach"] = [h.hard_ifname for h in await mc.hardifs("bat7")]
        await lc.delete("bat7")
        r["deleted"] = not await lc.exists("bat7")
        r["routing_algos"] = await mc.routing_algos()
        stage("neighbours on bat0")
        # The reconcile check just detached and re-attached this node's hard interface by hand: on a
        # busy guest its neighbours can take a few OGM intervals to come back.
        neighbours: list[Any] = []

        async def has_neighbours() -> bool:
            neighbours[:] = await mc.neighbors("bat0")
            return bool(neighbours)

        r["neighbour_wait_s"] = await took(has_neighbours, 30.0, interval=0.2)
        dst = neighbours[0].neigh_address
        stage(f"tp_meter to {dst}")
        tp = await mc.tp_meter("bat0", dst, 1000)
        r["tp_meter"] = {"result": tp.tpmeter_result, "bytes": tp.tpmeter_bytes, "ms": tp.tpmeter_test_time,
                         "kbit": tp.throughput_kbit, "to": dst}
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        stage("closing")

    # The subsystem builds a mesh from nothing: create with the algorithm, attach, set, per-hardif.
    settings = build(
        AgentSettings,
        {"mesh": {"interface": "bat8", "routing_algo": "BATMAN_V", "hard_interfaces": ["x7b"],
                  "orig_interval": 800, "hardif": {"x7b": {"hop_penalty": 20}}}},
    )
    stage("service builds bat8")
    ctx = _Ctx(settings)
    svc = MeshService()
    task = asyncio.create_task(svc.run(ctx))  # type: ignore[arg-type]
    r["service_built_s"] = await took(lambda: svc.applied_once, 10, **FIGURE)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    r["service_actions"] = [f"{a.kind} {a.target}" for a in svc.last_actions]
    stage("read back bat8")
    r["bat8_algo"] = json.loads(batctl("meshif", "bat8", "mesh_json"))["algo_name"]
    r["bat8_orig_interval"] = batctl("meshif", "bat8", "orig_interval").strip()
    r["bat8_hardifs"] = [h["hard_ifname"] for h in json.loads(batctl("meshif", "bat8", "hardifs_json"))]
    r["x7b_hop_penalty"] = batctl("hardif", "x7b", "hop_penalty").strip()
    r["bat8_up"] = "UP" in shell(None, "ip link show bat8", check=False).stdout
    shell(None, "ip link del bat8; ip link del x7a", check=False)
    (out / "links.json").write_text(json.dumps(r, indent=1) + "\n")
    ok = (
        r["created_algo"] == "BATMAN_V" and r["attached"] == ["x7a"] and r["mtu"] == 1560 and r["master_is_bat7"]
        and None not in (r["created_event"], r["down_event_s"], r["up_event_s"], r["config_event_s"],
                         r["hardif_event_s"], r["service_built_s"])
        and r["after_detach"] == [] and r["deleted"] and r["bat8_algo"] == "BATMAN_V"
        and r["bat8_orig_interval"] == "800" and r["bat8_hardifs"] == ["x7b"] and r["x7b_hop_penalty"] == "20"
    )
    return 0 if ok else 1


async def cli(out: Path) -> int:
    """``x0tta mesh ... --direct --json`` on a node without an agent equals the client's view."""
    r: dict[str, Any] = {}
    for view in views.VIEWS:
        res = run(None, sys.executable, "-m", "x0tta.cli.main", "--socket", "/run/none.sock", "mesh", view, "--json",
                  check=False)
        text = run(None, sys.executable, "-m", "x0tta.cli.main", "--socket", "/run/none.sock", "mesh", view,
                   check=False)
        data = json.loads(res.stdout) if res.returncode == 0 else None
        r[view] = {"rc": res.returncode, "text_rc": text.returncode, "entries": len(data) if data else 0,
                   "stderr": res.stderr[-500:] + text.stderr[-500:], "text": text.stdout[:2000]}
    (out / "cli.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0 if all(v["rc"] == 0 and v["text_rc"] == 0 and v["entries"] for v in r.values()) else 1


def per_call(fn: Any, rounds: int) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) / rounds


AGENT_TOML = """
[node]
id = "x0m1"
state_dir = "/run/x0m-agent/state"
runtime_dir = "/run/x0m-agent/run"
[metrics]
port = 0
[mesh]
interface = "bat0"
gw_mode = "client"
[heal]
enabled = false
[peer]
enabled = false
[identity]
enabled = false
[probes]
enabled = false
"""


async def agent(out: Path) -> int:
    """The real agent (x0tta-agent) on this node: its views through the admin socket equal batctl."""
    base = Path("/run/x0m-agent")
    (base / "state").mkdir(parents=True, exist_ok=True)
    (base / "run").mkdir(parents=True, exist_ok=True)
    (base / "agent.toml").write_text(AGENT_TOML)
    bindir = Path(sys.executable).parent
    proc = spawn([str(bindir / "x0tta-agent"), "-c", str(base / "agent.toml")], out / "agent-x0m1.log")
    sock = base / "run" / "admin.sock"
    r: dict[str, Any] = {}
    try:
        r["ready_s"] = await took(lambda: sock.exists(), 30, **FIGURE)
        x0tta = [str(bindir / "x0tta"), "--socket", str(sock)]
        status: Any = {}
        for _ in range(100):
            status = json.loads(run(None, *x0tta, "status", "--json").stdout)
            mesh = [x for x in status["subsystems"] if x["subsystem"] == "mesh"]
            if mesh and mesh[0]["state"] == "ok":
                break
            await asyncio.sleep(0.1)
        r["status"] = [x for x in status.get("subsystems", []) if x["subsystem"] == "mesh"]
        for view, cmd, what in VIEWS:
            for attempts in range(1, 5):  # noqa: B007 - TQ moves between the two reads
                ours_json = json.loads(run(None, *x0tta, "mesh", view, "--json").stdout)
                ours: Any = (
                    batadv.MeshInfo.from_attrs(ours_json) if cmd == Cmd.GET_MESH
                    else [batadv.RECORD_OF[cmd].from_attrs(e) for e in ours_json]
                )
                diff = differences(ours, json.loads(batctl("meshif", "bat0", what)))
                if not diff:
                    break
            r[view] = {"attempts": attempts, "differences": diff}
        r["gw_mode_applied"] = batctl("meshif", "bat0", "gw_mode").strip()
    finally:
        proc.terminate()
        try:
            r["exit"] = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            r["exit"] = "killed"
    (out / "agent.json").write_text(json.dumps(r, indent=1) + "\n")
    ok = bool(r["status"]) and r["status"][0]["state"] == "ok" and all(
        not r[v]["differences"] for v, _c, _w in VIEWS
    )
    return 0 if ok else 1


async def bench(out: Path) -> int:
    """Originator table: dump+decode by the client (sync in-process, async via the loop), decode
    alone, and batctl's text and JSON commands (each a process, as an operator or script runs it)."""
    rounds, brounds = 300, 40
    with BatadvSocket() as s:
        raw: list[bytes] = []
        s.capture = lambda _cmd, data: raw.append(data)
        n = len(s.dump(Cmd.GET_ORIGINATORS, "bat0"))
        s.capture = None
        fam = s.family.id
        seq = int.from_bytes(raw[0][8:12], "little")

        def decode_only() -> None:
            reply = Reply(fam, seq, dump=True)
            for d in raw:
                reply.feed(d)

        decode_s = per_call(decode_only, rounds)
        sync_s = per_call(lambda: s.dump(Cmd.GET_ORIGINATORS, "bat0"), rounds)
    async with MeshClient() as client:
        t0 = time.perf_counter()
        for _ in range(rounds):
            await client.originators("bat0")
        async_s = (time.perf_counter() - t0) / rounds
    batctl_s = per_call(lambda: run(None, "batctl", "meshif", "bat0", "o"), brounds)
    batctl_json_s = per_call(lambda: run(None, "batctl", "meshif", "bat0", "oj"), brounds)
    spawn_s = per_call(lambda: run(None, "/bin/true"), brounds)
    result = {
        "originator_entries": n,
        "datagrams": len(raw),
        "decode_only_us": round(decode_s * 1e6, 1),
        "client_sync_us": round(sync_s * 1e6, 1),
        "client_async_us": round(async_s * 1e6, 1),
        "batctl_o_us": round(batctl_s * 1e6, 1),
        "batctl_oj_us": round(batctl_json_s * 1e6, 1),
        "process_spawn_us": round(spawn_s * 1e6, 1),
        "ratio_async_vs_batctl_o": round(async_s / batctl_s, 4),
        "ratio_sync_vs_batctl_o": round(sync_s / batctl_s, 4),
    }
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


def main() -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the guest's step asks before a kill
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    modes = {"node": node, "reconcile": reconcile, "bench": bench, "links": links, "cli": cli, "agent": agent}
    return asyncio.run(modes[mode](out))


if __name__ == "__main__":
    sys.exit(main())
