"""Scratch network namespaces for integration tests, Python scripts run inside them, and entering one.

A test builds its topology in a namespace of its own (removed afterwards, whatever happens), runs
a script there with this interpreter, and reads the script's last output line as JSON: the
figures it measured. A script that fails fails the test with the end of its stderr. Scripts can
import the test kit (``tests.kit``): the repository is on their ``PYTHONPATH``.

``sh(cmd)`` runs a command line on the host. ``in_netns(name)`` runs a block of this process in a
namespace (setns, this thread only); it is the lab engine's own (:func:`x0tta.lab.netns.netns`),
which the shipped lab needs as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from x0tta.lab.netns import netns as in_netns

__all__ = ["in_netns", "run_script", "scratch_netns", "sh"]
ROOT = Path(__file__).resolve().parents[2]


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command line (a shell: pipes, ``&&``) run to its end on the host, text out; a failure with
    ``check`` raises ``CalledProcessError``. The host's one command runner: integration tests and
    host benchmarks (code in the lab's guest uses :func:`x0tta.lab.netns.run` and ``shell``)."""
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)  # noqa: S602 - the test's own command lines; a shell for their pipes and redirections


@contextlib.contextmanager
def scratch_netns(prefix: str) -> Iterator[str]:
    """A new network namespace ``PREFIX-PID``, deleted when the block ends."""
    ns = f"{prefix}-{os.getpid()}"
    sh(f"ip netns del {ns}", check=False)  # left over by a run that was killed
    sh(f"ip netns add {ns}")
    try:
        yield ns
    finally:
        sh(f"ip netns del {ns}", check=False)


def run_script(ns: str, script: str, *args: str, env: Mapping[str, str] | None = None,
               timeout: float = 60) -> Any:
    """Run ``script`` (Python source, or a path ending in .py) in ``ns``; its last stdout line, as JSON."""
    argv = [sys.executable, script] if script.endswith(".py") and "\n" not in script else [sys.executable, "-c", script]
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
