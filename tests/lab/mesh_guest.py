"""Check functions for the mesh lab: a small batman-adv mesh with two meshes per node, checked.

The lab (``x0tta.lab``, see :func:`run`) boots User-Mode Linux with one namespace per node, x0m1 ...
x0mN (:func:`topology`: no links of the lab's own); the ``check`` steps here build, in those
namespaces, a line x0m1 - x0m2 - ... (the last one is the gateway server) carrying two meshes, so
both routing algorithms are seen in one boot: ``bat0`` (BATMAN_IV) over veth pairs ``v4*`` and
``bat1`` (BATMAN_V) over pairs ``v5*``. x0mN is a gateway server on both, x0m1 a client; bat0 has
IPv4 addresses and a VLAN 5 on x0m1.

Checks (each builds the mesh, waits for convergence, writes into ``OUT/mesh`` or ``OUT/golden``):
  capture         golden fixtures: raw kernel replies (hex) and batctl's JSON of the same moment, for
                  tests/unit/mesh/golden/
  capture_events  golden fixtures of config events and of the throughput meter
  capture_lan     golden fixtures of BLA claims/backbones and the DAT cache (a LAN behind two nodes)
  lab             on every node compare the client's tables with batctl, then run the mesh service's
                  reconcile, link control, the CLI and the real agent (tests/lab/mesh_checks.py)
  bench           only the originator benchmark

On the host, ``python -m tests.lab.mesh_guest capture OUT [--nodes N]`` (from the checkout, as
root) runs one of them in a fresh lab.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.kit.netns import in_netns
from x0tta.lab.netns import shell
from x0tta.mesh.core.batadv import Cmd
from x0tta.mesh.genl import BatadvSocket

REPO = Path(__file__).resolve().parents[2]
NODES: tuple[str, ...] = ()  # the lab's nodes, set by each check from the running lab


_inside = contextlib.ExitStack()


def enter(ns: str | None) -> None:
    """Move this thread into ``ns`` (None: back to the namespace it started in), with the kit's
    ``in_netns``; the checks below enter and leave across statements rather than in a block."""
    _inside.close()
    if ns is not None:
        _inside.enter_context(in_netns(ns))


def build(lab: Any) -> None:
    """The two meshes, in the namespaces of the lab's nodes (the lab's own bat0, which has no hard
    interface here, makes way for the one built below). VLAN 5 needs 8021q, which the lab does not
    load."""
    global NODES
    NODES = tuple(n.name for n in lab.topology.nodes)
    shell(None, "modprobe -d /run/modroot 8021q", check=False)
    for n in NODES:
        if not Path("/run/netns", n).exists():
            shell(None, f"ip netns add {n}")
        shell(None, f"ip -n {n} link del bat0", check=False)
        shell(None, f"ip -n {n} link set lo up")
    for i, (a, b) in enumerate(itertools.pairwise(NODES)):
        for algo, mesh, prefix in (("BATMAN_IV", "bat0", "v4"), ("BATMAN_V", "bat1", "v5")):
            la, lb = f"{prefix}{i}a", f"{prefix}{i}b"
            shell(None, f"ip link add {la} netns {a} type veth peer name {lb} netns {b}")
            for ns, link in ((a, la), (b, lb)):
                if shell(None, f"ip -n {ns} link show {mesh}", check=False).stdout == "":
                    shell(None, f"ip -n {ns} link add {mesh} type batadv ra {algo}")
                shell(None, f"ip -n {ns} link set {link} mtu 1560 up")
                shell(None, f"ip -n {ns} link set {link} master {mesh}")
    for idx, n in enumerate(NODES, 1):
        for mesh in ("bat0", "bat1"):
            shell(None, f"ip -n {n} link set {mesh} up")
        shell(None, f"ip -n {n} addr add 10.77.0.{idx}/24 dev bat0")
    for mesh in ("bat0", "bat1"):
        shell(None, f"ip netns exec {NODES[-1]} batctl meshif {mesh} gw_mode server 50mbit/10mbit")
        shell(None, f"ip netns exec x0m1 batctl meshif {mesh} gw_mode client")
    shell(None, "ip -n x0m1 link add link bat0 name bat0.5 type vlan id 5")
    shell(None, "ip -n x0m1 link set bat0.5 up")


def converge(timeout: float = 60.0) -> float:
    """Wait until every node sees every other as an originator on both meshes, and x0m1 a gateway."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        ok = True
        for n in NODES:
            enter(n)
            with BatadvSocket() as s:
                for mesh in ("bat0", "bat1"):
                    best = {o.orig_address for o in s.dump(Cmd.GET_ORIGINATORS, mesh) if o.flag_best}
                    if len(best) < len(NODES) - 1:
                        ok = False
                if n == "x0m1":
                    for mesh in ("bat0", "bat1"):
                        if not any(g.flag_best for g in s.dump(Cmd.GET_GATEWAYS, mesh)):
                            ok = False
        enter(None)
        if ok:
            # ARP across the mesh fills the DAT caches and the global translation tables.
            shell(None, f"ip netns exec x0m1 ping -c 2 -i 0.2 -W 1 10.77.0.{len(NODES)}", check=False)
            shell(None, f"ip netns exec {NODES[-1]} ping -c 1 -W 1 10.77.0.2", check=False)
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError("mesh did not converge")


# What to dump, the batctl JSON command showing the same table, and the fixture name.
TABLES = [
    (Cmd.GET_ORIGINATORS, "originators_json", "originators"),
    (Cmd.GET_NEIGHBORS, "neighbors_json", "neighbors"),
    (Cmd.GET_GATEWAYS, "gateways_json", "gateways"),
    (Cmd.GET_HARDIF, "hardifs_json", "hardifs"),
    (Cmd.GET_TRANSTABLE_LOCAL, "transtable_local_json", "translocal"),
    (Cmd.GET_TRANSTABLE_GLOBAL, "transtable_global_json", "transglobal"),
    (Cmd.GET_BLA_CLAIM, "bla_claim_json", "bla_claim"),
    (Cmd.GET_BLA_BACKBONE, "bla_backbone_json", "bla_backbone"),
    (Cmd.GET_DAT_CACHE, "dat_cache_json", "dat_cache"),
    (Cmd.GET_MCAST_FLAGS, "mcast_flags_json", "mcast_flags"),
]


def batctl_json(mesh: str, what: str) -> object:
    out = shell(None, f"batctl meshif {mesh} {what}").stdout
    return json.loads(out) if out.strip() else None


def capture(lab: Any) -> None:
    out = lab.out / "golden"
    build(lab)
    converge()
    out.mkdir(parents=True, exist_ok=True)
    for node, mesh, algo in (("x0m1", "bat0", "iv"), ("x0m1", "bat1", "v"), ("x0m3", "bat0", "iv")):
        enter(node)
        got: list[tuple[Cmd, bytes]] = []
        with BatadvSocket() as s:
            s.capture = lambda cmd, data, got=got: got.append((cmd, data))
            jobs = [(cmd, what, name, (lambda c=cmd, m=mesh: s.dump(c, m))) for cmd, what, name in TABLES]
            jobs.append((Cmd.GET_MESH, "mesh_json", "mesh", lambda m=mesh: s.mesh_info(m)))
            if mesh == "bat0" and node == "x0m1":
                jobs.append((Cmd.GET_VLAN, "vid 5 vlan_json", "vlan", lambda m=mesh: s.vlan(m, 5)))
                jobs.append((Cmd.GET_ROUTING_ALGOS, "", "routing_algos", s.routing_algos))
            for _cmd, what, name, call in jobs:
                got.clear()
                call()
                reference = batctl_json(mesh, what) if what else None
                stem = out / f"{node}_{algo}_{name}"
                stem.with_suffix(".hex").write_text("".join(d.hex() + "\n" for _c, d in got))
                stem.with_suffix(".batctl.json").write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
            (out / f"{node}_{algo}_family.json").write_text(
                json.dumps({"id": s.family.id, "groups": s.family.mcast_groups}) + "\n"
            )
            (out / f"{node}_{algo}_ifnames.json").write_text(
                json.dumps({str(i): n for i, n in socket_ifnames()}, indent=1, sort_keys=True) + "\n"
            )
        enter(None)


def capture_events(lab: Any) -> None:
    """Golden fixtures of what arrives unasked: config events and the throughput meter."""
    import socket as socketmod

    from x0tta.mesh.core.netlink import NETLINK_ADD_MEMBERSHIP, SOL_NETLINK

    out = lab.out / "golden"
    build(lab)
    converge()
    out.mkdir(parents=True, exist_ok=True)
    enter("x0m1")
    with BatadvSocket() as s:
        fam = s.family
        groups = {}
        for name in ("config", "tpmeter"):
            g = socketmod.socket(socketmod.AF_NETLINK, socketmod.SOCK_RAW, 16)
            g.bind((0, 0))
            g.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, fam.mcast_groups[name])
            g.settimeout(15)
            groups[name] = g

        def event(name: str, stem: str, action: object) -> None:
            action()  # type: ignore[operator]
            data = groups[name].recv(65536)
            (out / f"x0m1_iv_{stem}.hex").write_text(data.hex() + "\n")

        event("config", "event_set_mesh", lambda: shell(None, "batctl meshif bat0 orig_interval 1500"))
        event("config", "event_set_hardif", lambda: shell(None, "batctl hardif v40a hop_penalty 42"))
        event("config", "event_set_vlan", lambda: shell(None, "batctl meshif bat0 vid 5 ap_isolation 1"))
        dst = s.dump(Cmd.GET_NEIGHBORS, "bat0")[0].neigh_address
        got: list[bytes] = []
        s.capture = lambda _cmd, data: got.append(data)
        start = s.tp_meter_start("bat0", dst, 500)
        s.capture = None
        (out / "x0m1_iv_tp_meter_reply.hex").write_text("".join(d.hex() + "\n" for d in got))
        data = groups["tpmeter"].recv(65536)
        (out / "x0m1_iv_tp_meter_result.hex").write_text(data.hex() + "\n")
        (out / "x0m1_iv_tp_meter.json").write_text(
            json.dumps({"dst": dst, "cookie": start.tpmeter_cookie}) + "\n"
        )
        for g in groups.values():
            g.close()
    enter(None)


def capture_lan(lab: Any) -> None:
    """Golden fixtures of the tables that need a LAN behind the mesh: BLA claims and backbones
    (x0m1 and x0m2 both bridge bat0 into one LAN with a client on it) and a filled DAT cache."""
    out = lab.out / "golden"
    build(lab)
    converge()
    out.mkdir(parents=True, exist_ok=True)
    for ns in ("x0lan", "x0cli"):
        shell(None, f"ip netns add {ns}")
        shell(None, f"ip -n {ns} link set lo up")
    shell(None, "ip -n x0lan link add lanbr type bridge")
    shell(None, "ip -n x0lan link set lanbr up")
    for node, idx in (("x0m1", 1), ("x0m2", 2)):
        shell(None, f"ip link add l{idx}a netns {node} type veth peer name l{idx}b netns x0lan")
        shell(None, f"ip -n x0lan link set l{idx}b master lanbr up")
        shell(None, f"ip -n {node} link add br0 type bridge")
        shell(None, f"ip -n {node} addr flush dev bat0")
        shell(None, f"ip -n {node} link set bat0 master br0")
        shell(None, f"ip -n {node} link set l{idx}a master br0 up")
        shell(None, f"ip -n {node} addr add 10.77.0.{idx}/24 dev br0")
        shell(None, f"ip -n {node} link set br0 up")
    shell(None, "ip link add c0a netns x0cli type veth peer name c0b netns x0lan")
    shell(None, "ip -n x0lan link set c0b master lanbr up")
    shell(None, "ip -n x0cli addr add 10.77.0.100/24 dev c0a")
    shell(None, "ip -n x0cli link set c0a up")
    deadline = time.monotonic() + 40
    claims: list[object] = []
    while time.monotonic() < deadline:
        shell(None, f"ip netns exec x0cli ping -c 2 -i 0.2 -W 1 10.77.0.{len(NODES)}", check=False)
        enter("x0m1")
        with BatadvSocket() as s:
            claims = s.dump(Cmd.GET_BLA_CLAIM, "bat0")
            backbones = s.dump(Cmd.GET_BLA_BACKBONE, "bat0")
            dat = s.dump(Cmd.GET_DAT_CACHE, "bat0")
        enter(None)
        if claims and len(backbones) >= 2 and dat:
            break
        time.sleep(1)
    enter("x0m1")
    with BatadvSocket() as s:
        got: list[bytes] = []
        s.capture = lambda _cmd, data: got.append(data)
        for cmd, what, name in (
            (Cmd.GET_BLA_CLAIM, "bla_claim_json", "lan_bla_claim"),
            (Cmd.GET_BLA_BACKBONE, "bla_backbone_json", "lan_bla_backbone"),
            (Cmd.GET_DAT_CACHE, "dat_cache_json", "lan_dat_cache"),
            (Cmd.GET_TRANSTABLE_LOCAL, "transtable_local_json", "lan_translocal"),
        ):
            got.clear()
            s.dump(cmd, "bat0")
            stem = out / f"x0m1_iv_{name}"
            stem.with_suffix(".hex").write_text("".join(d.hex() + "\n" for d in got))
            stem.with_suffix(".batctl.json").write_text(
                json.dumps(batctl_json("bat0", what), indent=1, sort_keys=True) + "\n"
            )
    enter(None)


def socket_ifnames() -> list[tuple[int, str]]:
    import socket

    return list(socket.if_nameindex())


def step(cmd: str, timeout: float) -> tuple[int, str]:
    """One check in its own process group, killed whole if it outlives ``timeout``."""
    proc = subprocess.Popen(  # noqa: S602 - the check lines of this file; a shell for their pipes
        cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        text, _ = proc.communicate(timeout=timeout)
        return proc.returncode, text
    except subprocess.TimeoutExpired:
        # Before the kill, what it was waiting for: each process's kernel wait channel, the
        # Python stacks of every thread (the checks register faulthandler on SIGUSR1) and the
        # kernel's last words (a hung task, a device that will not unregister).
        waits = subprocess.run(["ps", "-o", "pid,stat,wchan:32,args", "-g", str(proc.pid)],
                               capture_output=True, text=True, check=False).stdout
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGUSR1)
        time.sleep(1.0)
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        return 124, f"timed out after {timeout} s\n{text}\n--- processes\n{waits}\n--- dmesg\n{kernel}"


def lab(lab: Any) -> dict[str, object]:
    """Everything the lab test checks, in one boot: compare on every node, reconcile, links, CLI, agent.

    Each check runs in its own process with a time limit; ``progress.log`` says which one ran when,
    so a stuck check is named instead of the whole boot timing out silently. Reports go to
    ``OUT/mesh``; the result is each check's exit code.
    """
    out = lab.out / "mesh"
    out.mkdir(parents=True, exist_ok=True)
    progress = open(out / "progress.log", "a", buffering=1)
    t0 = time.monotonic()

    def note(text: str) -> None:
        progress.write(f"{time.monotonic() - t0:7.2f} {text}\n")

    build(lab)
    note("built")
    took = converge()
    note(f"converged in {took:.2f} s")
    py = sys.executable
    results: dict[str, object] = {"converged_s": round(took, 2)}
    jobs = [(f"compare.{n}", f"X0TTA_NS={n} ip netns exec {n} {py} -m tests.lab.mesh_checks node {out}", 60)
            for n in NODES]
    jobs += [(mode, f"ip netns exec x0m1 {py} -m tests.lab.mesh_checks {mode} {out}", limit)
             for mode, limit in (("reconcile", 90), ("links", 90), ("cli", 90), ("agent", 90))]
    for name, cmd, limit in jobs:
        note(f"{name} start")
        code, text = step(cmd, limit)
        note(f"{name} rc={code}")
        results[name] = code
        (out / f"{name}.log").write_text(text)  # what the check printed, for a test that finds no report
        if code:
            print(f"--- {name} rc={code}\n{text}")
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    progress.close()
    return results


def bench(lab: Any) -> None:
    """The originator benchmark on x0m1 (tests/bench/bench_mesh.py), into ``OUT/mesh/bench.json``."""
    out = lab.out / "mesh"
    out.mkdir(parents=True, exist_ok=True)
    build(lab)
    converge()
    shell(None, f"ip netns exec x0m1 {sys.executable} -m tests.lab.mesh_checks bench {out}", timeout=None)


# -- on the host --------------------------------------------------------------------------------
def topology(nodes: int) -> dict[str, Any]:
    """The lab these checks run in: the nodes' namespaces and nothing else (the checks build the
    meshes); room for one agent and the checks' processes, and time for them."""
    return {
        "name": "mesh-checks",
        "description": "namespaces x0m1..x0mN; the check steps build two meshes in them",
        "agents": False,
        "nodes": [f"x0m{i}" for i in range(1, nodes + 1)],
        "mesh": {"primary": "link"},
        "lab": {"mem_mb": 768, "timeout_s": 480},
    }


def run(out: Path, check: str, nodes: int, **kw: Any) -> Any:
    """Boot the lab of ``nodes`` nodes and run the check ``check`` of this module in it."""
    from x0tta.lab.core.topology import topology_from_data
    from x0tta.lab.runner import run_lab

    steps = [{"do": "check", "label": check, "call": f"tests.lab.mesh_guest:{check}"}]
    return run_lab(topology_from_data(topology(nodes), "mesh-checks"), out, scenario=steps,
                   python_path=[REPO], **kw)


def main() -> int:
    ap = argparse.ArgumentParser(description="run one of the mesh lab's checks in a fresh lab")
    ap.add_argument("check", choices=("capture", "capture_events", "capture_lan", "lab", "bench"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    result = run(args.out, args.check, args.nodes, stream=sys.stdout)
    print(json.dumps(result.check(args.check), indent=1))
    return 0 if result.check(args.check)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
