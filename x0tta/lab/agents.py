"""The agents of a lab run inside the guest: one ``x0tta-agent`` per node, in the node's namespace.

Each agent's config was written by the host into ``input/agents/NODE.toml``; its state and sockets
live in the guest's tmpfs (``scratch/NODE``), its log goes to ``agents/NODE.log``. The steps that act
on agents (``kill_agent``, ``start_agent``, ``restart_agent``) are here too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from x0tta.lab.core.steps import KillAgent, RestartAgent, StartAgent, StepFailed

if TYPE_CHECKING:
    from x0tta.lab.guest import Engine

AGENT_STOP_TIMEOUT_S = 5.0


class Agents:
    """The running agents by node. ``event`` records ``agent_start`` on the run's timeline."""

    def __init__(self, out: Path, scratch: Path, spec: dict[str, Any], event: Callable[..., Any]) -> None:
        self.out = out
        self.scratch = scratch
        self.spec = spec
        self.event = event
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def socket(self, node: str) -> str:
        return str(self.spec["agent_sockets"][node])

    def call(self, node: str, command: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """Ask ``node``'s agent over its admin socket (JSON lines, as ``x0tta`` does)."""
        from x0tta.admin.client import call

        return call(self.socket(node), command, args, timeout=timeout)

    def running(self, node: str) -> bool:
        return node in self.procs and self.procs[node].poll() is None

    def start(self, node: str) -> None:
        if self.running(node):
            raise StepFailed(f"the agent of {node} is already running")
        (self.scratch / node).mkdir(parents=True, exist_ok=True)
        (self.out / "agents").mkdir(exist_ok=True)
        config = self.out / "input" / "agents" / f"{node}.toml"
        log = open(self.out / "agents" / f"{node}.log", "ab")  # handed to the child, closed here
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.procs[node] = subprocess.Popen(
            ["ip", "netns", "exec", node, self.spec["agent"], "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        self.event("agent_start", node=node, pid=self.procs[node].pid)

    def stop(self, node: str, sig: int | None = signal.SIGTERM) -> int | None:
        """Signal the agent (None: it was signalled already) and wait; SIGKILL after the timeout."""
        proc = self.procs.get(node)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        if sig is not None:
            proc.send_signal(sig)
        try:
            return proc.wait(AGENT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def not_ready(self, dead: Collection[str]) -> list[str]:
        """Nodes (not in ``dead``) whose agent is running but does not answer ``status`` yet."""
        waiting = []
        for node, proc in self.procs.items():
            if node in dead:
                continue
            if proc.poll() is not None:
                raise StepFailed(f"the agent of {node} exited with {proc.returncode}; see agents/{node}.log")
            try:
                self.call(node, "status", timeout=2.0)
            except Exception:
                waiting.append(node)
        return waiting

    def stop_all(self) -> dict[str, int | None]:
        """Stop every agent (all at once: each may take its shutdown timeout); exit codes by node."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return {node: self.stop(node, None) for node in self.procs}

    def keep_state(self) -> None:
        """The agents' state lives in the guest's tmpfs: copy it into the results."""
        for node in self.procs:
            state = self.scratch / node / "state"
            if state.is_dir():
                shutil.copytree(state, self.out / "state" / node, dirs_exist_ok=True)


# -- the steps ------------------------------------------------------------------------------------
def kill_agent(lab: Engine, step: KillAgent) -> dict[str, Any]:
    proc = lab.agents.procs.get(step.node)
    if proc is None or proc.poll() is not None:
        raise StepFailed(f"no agent running on {step.node}", fatal=False)
    proc.send_signal(getattr(signal, f"SIG{step.signal or 'KILL'}"))
    code = proc.wait(AGENT_STOP_TIMEOUT_S * 2)
    return {"node": step.node, "signal": step.signal, "exit": code}


def start_agent(lab: Engine, step: StartAgent) -> dict[str, Any]:
    lab.agents.start(step.node)
    return {"node": step.node}


def restart_agent(lab: Engine, step: RestartAgent) -> dict[str, Any]:
    code = lab.agents.stop(step.node)
    lab.agents.start(step.node)
    return {"node": step.node, "exit": code}


HANDLERS: dict[type, Callable[[Engine, Any], dict[str, Any]]] = {
    KillAgent: kill_agent, StartAgent: start_agent, RestartAgent: restart_agent,
}
