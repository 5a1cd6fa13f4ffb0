"""The scenario runner inside the guest: the steps one after another, each dispatched on its record
type (:mod:`x0tta.lab.core.steps`) to its handler and recorded as an event on the run's timeline.

The measuring steps are here (converge, sleep, ping, snapshot, wait_route, check); the faults are in
:mod:`x0tta.lab.faults`, the agent steps in :mod:`x0tta.lab.agents`. A handler returns the event's
fields; :class:`StepFailed` marks the step failed (a fatal one ends the scenario), any other
exception is a bug and ends it too, keeping what was measured.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from x0tta.lab import agents, faults
from x0tta.lab.core.steps import (
    Check,
    Converge,
    Ping,
    PingStop,
    Sleep,
    Snapshot,
    Step,
    StepFailed,
    WaitRoute,
)
from x0tta.lab.core.timeline import best_routes, missing_views, outages, reachable, samples_from_rows
from x0tta.lab.netns import BATCTL_TABLES
from x0tta.lab.pinger import read_samples

if TYPE_CHECKING:
    from x0tta.lab.guest import Engine

POLL_S = 0.05


def run_steps(lab: Engine, steps: Iterable[Step]) -> None:
    for step in steps:
        if step.after_s:
            time.sleep(step.after_s)
        handler = HANDLERS[type(step)]
        t = lab.now()
        try:
            fields = handler(lab, step) or {}
        except StepFailed as exc:
            lab.event(step.do, t=t, label=step.label, ok=False, error=str(exc))
            lab.errors.append(f"step {step.label}: {exc}")
            if exc.fatal:
                lab.errors.append("scenario stopped after a failed step")
                return
            continue
        except Exception as exc:  # a bug or an unexpected kernel answer: stop, keep what was measured
            lab.event(step.do, t=t, label=step.label, ok=False, error=f"{type(exc).__name__}: {exc}")
            lab.errors.append(f"step {step.label} crashed: {traceback.format_exc()}")
            lab.errors.append("scenario stopped after a failed step")
            return
        lab.event(step.do, t=t, label=step.label, ok=fields.pop("ok", True), took=round(lab.now() - t, 6), **fields)


def sleep(lab: Engine, step: Sleep) -> dict[str, Any]:
    time.sleep(step.seconds)
    return {"seconds": step.seconds}


def converge(lab: Engine, step: Converge) -> dict[str, Any]:
    start = lab.now()
    deadline = start + step.timeout_s
    want_agents = lab.with_agents if step.agents is None else step.agents
    expected = reachable(lab.alive_nodes(), lab.carrying_links())
    missing: dict[str, list[str]] = {}
    waiting: list[str] = []
    mesh_done: float | None = None
    while lab.now() < deadline:
        if mesh_done is None:
            views = {n: lab.routes(n) for n in lab.alive_nodes()}
            missing = missing_views(views, expected)
            if not missing:
                mesh_done = lab.now()
        if mesh_done is not None:
            waiting = lab.agents.not_ready(lab.mesh.dead_nodes) if want_agents else []
            if not waiting:
                seconds = round(mesh_done - start, 6)
                lab.measurements["convergence"].append({"t": round(start, 6), "seconds": seconds,
                                                        "label": step.label})
                if "converged_s" not in lab.boot:  # the first convergence: the lab is up
                    lab.boot["mesh_converged_s"] = round(mesh_done, 6)
                    lab.boot["converged_s"] = round(lab.now(), 6)
                return {"seconds": seconds, "agents_ready_s": round(lab.now() - start, 6) if want_agents else None}
        time.sleep(POLL_S)
    what = f"nodes missing originators: {missing}" if missing else f"agents not answering: {waiting}"
    raise StepFailed(f"not converged within {step.timeout_s} s; {what}")


def ping(lab: Engine, step: Ping) -> dict[str, Any]:
    lab.ping_files += 1
    path = lab.scratch / "pings" / f"{lab.ping_files}.samples"
    path.parent.mkdir(parents=True, exist_ok=True)
    interval = step.interval_ms / 1000.0
    proc = subprocess.Popen(
        ["ip", "netns", "exec", step.src, sys.executable, "-m", "x0tta.lab.pinger",
         lab.topology.node(step.dst).address, str(interval), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    line = proc.stdout.readline().decode().strip() if proc.stdout is not None else ""
    if line != "ready":
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise StepFailed(f"pinger did not start: {line} {err}".strip())
    lab.pings[step.name] = {"proc": proc, "path": path, "from": step.src, "to": step.dst,
                            "interval_ms": step.interval_ms}
    return {"name": step.name, "from": step.src, "to": step.dst, "interval_ms": step.interval_ms}


def ping_stop(lab: Engine, step: PingStop) -> dict[str, Any]:
    stop_ping(lab, step.name)
    return {"name": step.name}


def stop_ping(lab: Engine, name: str) -> None:
    ping = lab.pings.pop(name)
    proc = ping["proc"]
    faults.terminate(proc)
    rows = read_samples(ping["path"]) if ping["path"].exists() else []
    if not rows:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        lab.errors.append(f"ping {name} left no samples (exit {proc.returncode}): {err[-500:]}")
    # the pinger's clock is the guest's monotonic clock; move the samples onto the timeline
    rows = [[s, round(sent - lab.t0, 6), None if rcv is None else round(rcv - lab.t0, 6)]
            for s, sent, rcv in rows]
    samples = samples_from_rows(rows)
    lab.measurements["pings"][name] = {
        "from": ping["from"], "to": ping["to"], "interval_ms": ping["interval_ms"],
        "sent": len(samples), "lost": sum(1 for s in samples if s.lost),
        "outages": [o.to_json() for o in outages(samples)],
        "samples": rows,
    }


def snapshot(lab: Engine, step: Snapshot) -> dict[str, Any]:
    where = lab.out / "snapshots" / safe_name(step.label)
    where.mkdir(parents=True, exist_ok=True)
    nodes = list(step.nodes) if step.nodes else lab.alive_nodes()
    for node in nodes:
        doc: dict[str, Any] = {"t": round(lab.now(), 6), "node": node}
        for table in BATCTL_TABLES:
            doc[table] = lab.batctl_json(node, table)
        doc["routes"] = best_routes(doc["originators"], lab.topology.mac_owner(), lab.topology.originator_owner())
        (where / f"{node}.json").write_text(json.dumps(doc, indent=1))
        lab.measurements["routes"].append({"t": doc["t"], "label": step.label, "node": node,
                                           "routes": doc["routes"]})
    return {"dir": str(where.relative_to(lab.out)), "nodes": nodes}


def wait_route(lab: Engine, step: WaitRoute) -> dict[str, Any]:
    start = lab.now()
    hop = None
    while lab.now() - start < step.timeout_s:
        hop = lab.routes(step.src).get(step.dst)
        if hop is not None and (hop == step.via if step.via else hop != step.not_via):
            return {"from": step.src, "to": step.dst, "next_hop": hop, "seconds": round(lab.now() - start, 6)}
        time.sleep(POLL_S)
    return {"ok": False, "from": step.src, "to": step.dst, "next_hop": hop, "timeout_s": step.timeout_s}


def check(lab: Engine, step: Check) -> dict[str, Any]:
    try:
        fn = load_callable(step.call, step.label)
    except Exception as exc:
        raise StepFailed(f"cannot load {step.call}: {type(exc).__name__}: {exc}", fatal=False) from None
    if step.each_node:
        result: dict[str, Any] = {}
        ok = True
        for node in list(step.nodes or lab.alive_nodes()):
            one = call_check(fn, (lab, node), step.args)
            result[node] = one
            ok = ok and one["ok"]
        outcome = {"ok": ok, "per_node": result}
    else:
        outcome = call_check(fn, (lab,), step.args)
    lab.measurements["checks"][step.label] = outcome
    return {"call": step.call, "ok": outcome["ok"]}


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def load_callable(ref: str, label: str) -> Any:
    """``package.module:function`` or ``/path/to/file.py:function``."""
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"x0tta_lab_check_{safe_name(label)}", target)
        if spec is None or spec.loader is None:
            raise StepFailed(f"cannot load {target}", fatal=False)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, attr)


def call_check(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one check: its return value is the result; an exception (an assert) makes it fail."""
    try:
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            import asyncio

            async def wait() -> Any:
                return await value

            value = asyncio.run(wait())
        json.dumps(value)
        return {"ok": True, "result": value}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


# Every step type's handler: a step type without one fails the unit tier (tests/unit/lab).
HANDLERS: dict[type, Callable[[Engine, Any], dict[str, Any]]] = {
    Converge: converge, Sleep: sleep, Ping: ping, PingStop: ping_stop, Snapshot: snapshot,
    WaitRoute: wait_route, Check: check, **faults.HANDLERS, **agents.HANDLERS,
}
