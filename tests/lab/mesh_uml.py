"""Boot User-Mode Linux with the host's root filesystem and run one command inside (test helper).

Why: batman-adv exists only in the UML kernel on this machine (see docs/mesh.md and LAB.md). The
guest sees the host's files (hostfs), so it runs this checkout's venv directly; it writes only to
the output directory handed in, through which results come back. Kernel parameters of the form
``name=value`` that the kernel does not know reach init as environment variables: that is how the
output directory and the command get in.

A stand-in until the mesh lab (``x0tta.lab``) offers the same; it does no more than boot, load
modules, run, halt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from x0tta.lab.runner import GUEST_ENV, halt_command, uml_host_env

UML = "/usr/bin/linux.uml"
REPO = Path(__file__).resolve().parents[2]  # the guest runs `python -m tests.lab...` from here
MODULES = "/usr/lib/uml/modules"

INIT = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{guest_env}
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /run; export TMPDIR=/run HOME=/run
# The host has no /lib/modules; give modprobe a root of its own on the guest's tmpfs.
mkdir -p /run/modroot/lib && ln -s {modules} /run/modroot/lib/modules
for m in batman-adv veth ipv6 sch_netem 8021q; do modprobe -d /run/modroot $m; done
ip link set lo up
cd {cwd}
# The guest halts even if the command hangs: the host-side timeout is only a backstop.
timeout -k 5 "$x0tta_guest_timeout" {command} >"$x0tta_out/guest.log" 2>&1
echo $? >"$x0tta_out/guest.rc"
{halt}
"""


def available() -> str | None:
    """None when UML can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces inside the guest, hostfs writes)"
    if not Path(UML).exists():
        return f"{UML} missing (apt-get install user-mode-linux)"
    if not Path(MODULES).is_dir():
        return f"{MODULES} missing (the user-mode-linux package's modules)"
    if shutil.which("batctl") is None:
        return "batctl missing (apt-get install batctl)"
    if shutil.which("modprobe") is None:
        return "modprobe missing (apt-get install kmod): the guest loads batman-adv with it"
    return None


def run(
    outdir: Path, argv: list[str], *, timeout: float = 240.0, mem: str = "768M", env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``argv`` as root inside a fresh UML guest; returns (exit code, guest output).

    ``env`` reaches the command as environment variables (kernel parameters init inherits).
    """
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    init = outdir / "init.sh"
    command = " ".join(_quote(a) for a in argv)
    init.write_text(INIT.format(guest_env=GUEST_ENV, modules=MODULES, cwd=_quote(str(REPO)), command=command,
                                halt=halt_command(_quote(sys.executable))))
    init.chmod(0o755)
    console = outdir / "console.log"
    argv_uml = [
        UML,
        f"mem={mem}",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={init}",
        f"x0tta_out={outdir}",
        f"x0tta_guest_timeout={max(10, int(timeout) - 15)}",
        *(f"{k}={v}" for k, v in (env or {}).items()),
        "con=null",
        "con0=fd:0,fd:1",
    ]
    with open(console, "wb") as out:
        # UML runs as several host processes: a session of their own, killed whole on timeout.
        proc = subprocess.Popen(
            argv_uml,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=uml_host_env(outdir, {"PATH": "/usr/bin:/bin", "TMPDIR": str(outdir), "HOME": str(outdir)}),
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helper processes a halted kernel left behind
    log = (outdir / "guest.log").read_text(errors="replace") if (outdir / "guest.log").exists() else ""
    rc_file = outdir / "guest.rc"
    if not rc_file.exists():
        return 255, log + "\n--- console ---\n" + console.read_text(errors="replace")[-4000:]
    return int(rc_file.read_text().strip() or 255), log


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


PYTHON = sys.executable


def run_guest(
    outdir: Path, mode: str, *, timeout: float = 240.0, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``tests/lab/mesh_guest.py MODE OUTDIR/out`` in a fresh guest."""
    argv = [PYTHON, "-m", "tests.lab.mesh_guest", mode, str(outdir.resolve() / "out")]
    return run(outdir, argv, timeout=timeout, env=env)
