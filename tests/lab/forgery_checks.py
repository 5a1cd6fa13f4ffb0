"""Guest-side checks of the forgery lab (tests/lab/test_forgery_lab.py): an attacker on a mesh link.

The attacker sits on the link n2-n3: it hears what arrives at n3 over that link (a capture in n3's
namespace) and sends from n2's end of it (a socket in n2's namespace), as a device spliced into
the cable would. It never holds a session key. What it sends, over a few seconds:

* unkeyed probes from a fake neighbour, which then falls silent (with unauthenticated probes, the
  classic way to make the victim declare its link dead and steer traffic off it);
* unkeyed probes in n2's name acknowledging none of n3's probes (fakes loss on the link);
* the same, tagged with a key of no session (wrongly keyed);
* real probes and alerts of n2, captured earlier, with one byte changed (forged tags);
* real probes and alerts of n2 captured earlier, sent again (replays);
* alerts with a fake origin: unkeyed, wrongly keyed, and over bat0's flood.

Run as a script it is the capture: ``python forgery_checks.py capture IFACE SECONDS OUT``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from x0tta.heal.core.alert import Alert
from x0tta.heal.core.alert import encode as encode_alert
from x0tta.heal.core.linkkeys import key_id
from x0tta.heal.core.liveness import Ack, Probe, encode
from x0tta.heal.liveness import open_link_socket
from x0tta.lab.core.topology import veth_mac

# (imported here, when the first check loads this file, before anything is measured: a module read
# from the guest's hostfs stalls the whole guest for a moment, and late probes read as suspect links)
PROBE_PORT, ALERT_PORT = 4305, 4306
FAKE = "02:66:66:66:66:66"


def _auth(lab: Any, node: str) -> dict[str, Any]:
    return lab.agent_call(node, "heal.state")["authentication"]


def sessions_up(lab: Any, node: str, timeout: float = 90.0, required: bool = True) -> float:
    """Seconds until the node's agent keys its probes with a session on every link to a neighbour
    (``required`` False, for agents without identities: nothing to wait for)."""
    if not required:
        return 0.0
    links = [ifname for ifname in lab.topology.hard_interfaces(node) if ifname.startswith("to-")]
    start = time.monotonic()
    while True:
        try:
            keyed = _auth(lab, node)["link_keys"]
        except Exception:
            keyed = {}
        if all(keyed.get(ifname) for ifname in links):
            return round(time.monotonic() - start, 2)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{node}: links without a session key after {timeout} s: {keyed}")
        time.sleep(0.5)


def start_capture(lab: Any, node: str, ifname: str, seconds: float) -> str:
    """Capture in the background what arrives at ``node`` over ``ifname`` (probe port: probes and
    hop-by-hop alerts), for ``seconds``; the datagrams land in ``OUT/capture-NODE.json``."""
    out = Path(lab.out) / f"capture-{node}.json"
    with open(Path(lab.out) / f"capture-{node}.log", "wb") as log:
        subprocess.Popen(["ip", "netns", "exec", node, sys.executable, __file__, "capture", ifname, str(seconds),
                          str(out)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return str(out)


def _captured(lab: Any, node: str, at_least: int = 0, wait: float = 60.0) -> list[bytes]:
    """What the capture of ``node`` holds so far, once it holds ``at_least`` probes (a cold Python
    in the guest takes seconds to start)."""
    path = Path(lab.out) / f"capture-{node}.json"
    end = time.monotonic() + wait
    while True:
        got = [bytes.fromhex(h) for h in json.loads(path.read_text())] if path.exists() else []
        if path.exists() and sum(1 for d in got if d[:4] == b"X0LP") >= at_least:
            return got
        if time.monotonic() > end:
            log = Path(lab.out) / f"capture-{node}.log"
            raise AssertionError(f"capture holds {len(got)} datagrams after {wait} s: "
                                 f"{log.read_text() if log.exists() else ''}")
        time.sleep(0.2)


def capture(ifname: str, seconds: float, out: str) -> None:
    sock, _ = open_link_socket(ifname, PROBE_PORT)
    sock.setblocking(True)
    sock.settimeout(0.2)
    probes: collections.deque[str] = collections.deque(maxlen=40)  # the newest only: a small file, cheap
    alerts: list[str] = []  # to rewrite on the guest's hostfs twice a second, which a busy guest feels
    end = time.monotonic() + seconds
    written = -1.0
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            data = sock.recv(4096)
            if data[:4] == b"X0MA" and len(alerts) < 50:
                alerts.append(data.hex())
            else:
                probes.append(data.hex())
        if time.monotonic() - written >= 0.5:  # what is captured so far, readable at any moment
            tmp = Path(f"{out}.tmp")
            tmp.write_text(json.dumps([*probes, *alerts]))
            tmp.replace(out)
            written = time.monotonic()


def refusals(lab: Any, node: str) -> dict[str, Any]:
    st = lab.agent_call(node, "heal.state")
    a = st["authentication"]
    return {"mode": a["mode"], "probes_refused": a["probes_refused"], "alerts_refused": a["alerts_refused"],
            "alerts_relayed": a["alerts_relayed"], "peers": sorted({p["peer"] for p in st["probes"]})}


def forge(lab: Any, node: str, capture_of: str, victim: str, what: str = "probes",
          seconds: float = 4.0) -> dict[str, int]:
    """From ``node``'s end of its link to ``victim``, send forgeries; returns how many of each went
    out. ``what``: ``probes`` (every probe forgery, and alerts of a fake origin) or ``alerts`` (real
    alerts from the capture, forged and replayed). ``capture_of``: whose capture to take them from."""
    captured = _captured(lab, capture_of, at_least=20 if what == "probes" else 0)
    probes = [d for d in captured if d[:4] == b"X0LP"]
    fake_origin = bytes.fromhex(FAKE.replace(":", ""))
    alerts = [d for d in captured if d[:4] == b"X0MA" and d[12:18] != fake_origin]  # real ones, not ours
    ifname, meshif = f"to-{victim}", "bat0"
    with lab.netns(node):
        link, index = open_link_socket(ifname, PROBE_PORT)
        flood, mindex = open_link_socket(meshif, ALERT_PORT)
    topo = lab.topology  # (the guest's /sys shows the root namespace: MACs come from the topology)
    me = veth_mac(topo.node(node), topo.link(f"{node}-{victim}"))
    victim_mac = veth_mac(topo.node(victim), topo.link(f"{node}-{victim}"))
    wrong = os.urandom(32)
    wrong_keys = [(key_id(wrong), wrong)]
    sent: dict[str, int] = {}

    def send(kind: str, data: bytes, to: tuple[socket.socket, int, int] | None = None) -> None:
        sock, idx, port = to or (link, index, PROBE_PORT)
        try:
            sock.sendto(data, ("ff02::1", port, 0, idx))
            sent[kind] = sent.get(kind, 0) + 1
        except OSError:
            sent[f"{kind}_failed"] = sent.get(f"{kind}_failed", 0) + 1

    if what == "alerts":
        sent["replayed_ids"] = [[d[12:18].hex(":"), int.from_bytes(d[8:12], "big")] for d in alerts]  # type: ignore
        for d in alerts:
            send("forged_alert", d[:12] + bytes([d[12] ^ 0x01]) + d[13:])  # the origin changed
            send("replayed_alert", d)
            time.sleep(0.05)
    else:
        seq = 10**6
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seq += 1
            now = time.monotonic_ns()
            lossy = Probe(seq=seq, sender=me, sent=now, acks=(Ack(victim_mac, 0, 0, 0, 1000),))
            send("fake_peer", encode(Probe(seq=seq, sender=FAKE, sent=now)))
            send("unkeyed", encode(lossy))
            send("wrong_key", encode(lossy, link_keys=wrong_keys))
            time.sleep(0.1)
        for d in probes[-20:]:
            send("forged_probe", d[:8] + bytes([d[8] ^ 0x01]) + d[9:])  # the sequence number changed
        for d in probes[-20:]:
            send("replayed_probe", d)
        fake = Alert(FAKE, 1, "link_down", 30_000)
        send("unkeyed_alert", encode_alert(fake))
        send("wrong_key_alert", encode_alert(fake, link_keys=wrong_keys))
        send("flooded_alert", encode_alert(fake), (flood, mindex, ALERT_PORT))
    link.close()
    flood.close()
    return sent


if __name__ == "__main__" and sys.argv[1] == "capture":
    capture(sys.argv[2], float(sys.argv[3]), sys.argv[4])
