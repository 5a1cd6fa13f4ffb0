"""Check functions of the rollout lab (tests/lab/test_rollout_lab.py), run inside the UML guest.

``etcd_up`` gives every node a management link to the guest's root namespace, off the mesh, and
starts one etcd member there: the coordination plane must stay reachable while a rollout breaks a
node's mesh, as a gateway's out-of-band link does in the field. Each node's ``mgmt0`` (10.98.1.N/32)
is a veth to ``m-NODE`` in the root namespace, which holds 10.98.0.1/32 on every such veth, with a
host route to each node: no bridge module, no address shared by two links' subnets.

``start_rollout`` waits until every agent registered, then writes the rollout the host signed;
``rollout_end`` waits until it is done or rolled back and returns its state and records.

Files (certificates, the signed document) come from the host in ``files`` (the run's ``rollout/``);
etcd's data lives in the guest's tmpfs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

ETCD_IP = "10.98.0.1"
ENDPOINT = f"https://{ETCD_IP}:2379"
PREFIX = "/x0tta-lab"
DATA_DIR = "/run/rollout-etcd"  # the guest's tmpfs


def node_ip(index: int) -> str:
    return f"10.98.1.{index}"


def etcd_up(lab, files):
    d = Path(files)
    lab.run(None, "ip", "link", "set", "lo", "up")  # the guest's own loopback (etcd's peer URL) starts down
    for i, node in enumerate((n.name for n in lab.topology.nodes), start=1):
        lab.run(None, "ip", "link", "add", f"m-{node}", "type", "veth", "peer", "name", "mgmt0", "netns", node)
        lab.run(None, "ip", "addr", "add", f"{ETCD_IP}/32", "dev", f"m-{node}")
        lab.run(None, "ip", "link", "set", f"m-{node}", "up")
        lab.run(None, "ip", "route", "add", f"{node_ip(i)}/32", "dev", f"m-{node}")
        lab.run(node, "ip", "addr", "add", f"{node_ip(i)}/32", "dev", "mgmt0")
        lab.run(node, "ip", "link", "set", "mgmt0", "up")
        lab.run(node, "ip", "route", "add", f"{ETCD_IP}/32", "dev", "mgmt0")
    log = open(d / "etcd.log", "wb")  # handed to etcd, closed here
    subprocess.Popen([
        "etcd", "--name", "lab", "--data-dir", DATA_DIR,
        "--listen-client-urls", ENDPOINT, "--advertise-client-urls", ENDPOINT,
        "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "lab=http://127.0.0.1:2380", "--initial-cluster-state", "new",
        "--cert-file", str(d / "etcd.pem"), "--key-file", str(d / "etcd.key"),
        "--client-cert-auth", "--trusted-ca-file", str(d / "ca.pem"),
        # one CPU for five agents and etcd: a heartbeat that a busy guest still keeps
        "--heartbeat-interval", "200", "--election-timeout", "2000",
    ], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return asyncio.run(_with_etcd(_answers, d, 60, "etcd did not answer"))


async def _answers(client):
    await client.range("/")
    return {"endpoint": ENDPOINT}


async def _with_etcd(probe, d, timeout, what):
    """``await probe(client)`` with one etcd client every 0.5 s until it returns something true;
    etcd not answering (yet) is tried again."""
    from tests.kit.wait import until
    from x0tta.coord.etcd import EtcdClient, EtcdUnavailable

    async with EtcdClient([ENDPOINT], cert_file=str(d / "operator.pem"), key_file=str(d / "operator.key"),
                          ca_file=str(d / "ca.pem"), timeout=2.0) as client:
        return await until(lambda: probe(client), timeout, interval=0.5, ignore=(EtcdUnavailable,), what=what)


async def start_rollout(lab, files):
    """Every agent registered, then the signed rollout written (as ``x0tta rollout start`` does)."""
    from x0tta.coord.core.rollout import Rollout
    from x0tta.coord.store import RolloutStore

    d = Path(files)
    nodes = {n.name for n in lab.topology.nodes}

    async def registered(client):
        got = set(await RolloutStore(client, PREFIX).registered())
        return sorted(got) if got >= nodes else None

    seen = await _with_etcd(registered, d, 90, "not every agent registered")

    async def create(client):
        doc = Rollout.from_json(json.loads((d / "doc.json").read_text()))
        await RolloutStore(client, PREFIX).create(doc, (d / "doc.sig").read_bytes(), time.time())
        return doc.id

    rid = await _with_etcd(create, d, 10, "the rollout was not written")
    return {"registered": seen, "rollout": rid, "t": lab.now()}


async def rollout_end(lab, files, rollout, timeout=240):
    """The rollout's state once done or rolled back, with every node's apply records."""
    from x0tta.coord.core.rollout import FINAL
    from x0tta.coord.store import RolloutStore

    async def final(client):
        view = await RolloutStore(client, PREFIX).load(rollout)
        if view is None or view.state is None or view.state.phase not in FINAL:
            return None
        return {"state": view.state.to_json(), "records": list(view.records.values()),
                "fenced": list(view.fenced.values()), "t": lab.now()}

    return await _with_etcd(final, Path(files), timeout, f"rollout {rollout} did not end")


def hardifs_active(lab, node):
    """batctl on ``node``: every link of the node is a hard interface of bat0 again, active."""
    rows = lab.batctl_json(node, "hardifs")
    active = sorted(r["hard_ifname"] for r in rows if r.get("active"))
    links = {f"to-{peer}" for peer in lab.topology.neighbours(node)}
    assert links <= set(active), f"{node}: active {active}, links {sorted(links)}"
    return active
