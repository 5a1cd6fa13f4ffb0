"""The faults a scenario injects in the guest, and their undoing: links cut, made silently lossy or
degraded (netem changed in place through netlink), nodes killed, everything restored, and CPU load.
Each function is the step of the same name (see :mod:`x0tta.lab.scenario`)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from x0tta.lab.core.steps import Degrade, KillNode, LinkDown, LinkUp, Load, LoadStop, Restore, SilentLoss, StepFailed

if TYPE_CHECKING:
    from x0tta.lab.guest import Engine


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM and wait; SIGKILL after ``timeout`` (what it wrote before stays: the pinger flushes)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def link_down(lab: Engine, step: LinkDown) -> dict[str, Any]:
    lab.mesh.set_link(step.link, up=False)
    return {"link": step.link}


def link_up(lab: Engine, step: LinkUp) -> dict[str, Any]:
    lab.mesh.set_link(step.link, up=True)
    return {"link": step.link}


def silent_loss(lab: Engine, step: SilentLoss) -> dict[str, Any]:
    lab.mesh.set_link(step.link, netem=step.netem, only=step.src)
    return {"link": step.link, "loss_pct": step.netem.loss_pct, "from": step.src}


def degrade(lab: Engine, step: Degrade) -> dict[str, Any]:
    lab.mesh.set_link(step.link, netem=step.netem, only=step.src)
    return {"link": step.link, "netem": " ".join(step.netem.tc_args()), "from": step.src}


def restore(lab: Engine, step: Restore) -> dict[str, Any]:
    if step.link:
        lab.mesh.set_link(step.link, up=True, netem=lab.topology.link(step.link).netem)
        return {"link": step.link}
    node = step.node or ""  # the parser sets exactly one of link and node
    for link in lab.topology.links_of(node):
        lab.mesh.set_link(link.name, up=True, netem=link.netem)
    lab.mesh.dead_nodes.discard(node)
    if lab.with_agents and not lab.agents.running(node):
        lab.agents.start(node)
    return {"node": node}


def kill_node(lab: Engine, step: KillNode) -> dict[str, Any]:
    lab.agents.stop(step.node, signal.SIGKILL)
    for link in lab.topology.links_of(step.node):
        lab.mesh.set_link(link.name, up=False)
    lab.mesh.dead_nodes.add(step.node)
    return {"node": step.node}


class Loads:
    """CPU and process-spawn load in the guest's root namespace (:mod:`x0tta.lab.load`), by name."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, step: Load) -> dict[str, Any]:
        name = step.name
        if name in self.procs and self.procs[name].poll() is None:
            raise StepFailed(f"a load named {name!r} is already running", fatal=False)
        proc = subprocess.Popen(
            [sys.executable, "-m", "x0tta.lab.load", str(step.cpu_pct), str(step.spawn_per_s), str(step.seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        if proc.stdout is None or proc.stdout.readline().decode().strip() != "ready":
            raise StepFailed("the load generator did not start", fatal=False)
        self.procs[name] = proc
        return {"name": name, "cpu_pct": step.cpu_pct, "spawn_per_s": step.spawn_per_s, "seconds": step.seconds}

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def load(lab: Engine, step: Load) -> dict[str, Any]:
    return lab.loads.start(step)


def load_stop(lab: Engine, step: LoadStop) -> dict[str, Any]:
    lab.loads.stop(step.name)
    return {"name": step.name}


HANDLERS: dict[type, Callable[[Engine, Any], dict[str, Any]]] = {
    LinkDown: link_down, LinkUp: link_up, SilentLoss: silent_loss, Degrade: degrade, Restore: restore,
    KillNode: kill_node, Load: load, LoadStop: load_stop,
}
