"""Ending a server or agent process a test started: ask, wait, then insist.

``stop_process(proc)``: SIGCONT first (a process a test paused with SIGSTOP cannot act on
SIGTERM), SIGTERM, up to ``timeout`` s for it to exit (a server saves its state then), SIGKILL
after that. A process already gone is fine. Returns its exit status.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
