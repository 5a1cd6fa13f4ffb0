"""The Debian package on this machine with dpkg: build, install, run as its own user, upgrade, purge.

`scripts/build-deb.sh` (what `make deb` runs) builds two packages of this tree, versions
``<version>~deb1`` and ``<version>~deb2``; the test installs the first with ``dpkg -i``, runs the agent
as the unit file says, upgrades to the second and purges it. The machine is left as it was: the
package is purged, the network namespace and the notify socket removed, bpffs unmounted if the test
mounted it.

systemd is not PID 1 here (nor, usually, in CI), so the agent is started the way the unit says,
with its settings parsed from ``systemd/x0tta-agent.service``: the ``ExecStartPre=+`` commands as
root, then ``ExecStart=`` under ``setpriv`` with ``User=``/``Group=``, the capabilities of
``AmbientCapabilities=`` (inheritable and ambient) and ``CapabilityBoundingSet=``, ``NoNewPrivileges=``,
``SecureBits=`` and ``UMask=``; ``StateDirectory=``/``RuntimeDirectory=`` made with their owner and
mode; ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` as for ``Type=notify``. One addition: the agent runs in
a scratch network namespace (``nsenter --net``), so that on a kernel with batman-adv it creates no
bat0 on the host and its ports meet no other test's. The sandboxing options (ProtectSystem=, the
system-call filter) need systemd and are not applied; ``test_systemd_unit.py`` verifies and scores them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shlex
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_root
from tests.kit.netns import scratch_netns, sh
from tests.kit.wait import until_sync

pytestmark = pytest.mark.integration

UNIT = ROOT / "systemd/x0tta-agent.service"
STATE, CONF, RUN, BPFFS = Path("/var/lib/x0tta"), Path("/etc/x0tta"), Path("/run/x0tta"), Path("/sys/fs/bpf")
PYTHON = "/usr/bin/python3.11"
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_BPF": 39, "CAP_PERFMON": 38, "CAP_NET_BIND_SERVICE": 10,
            "CAP_SYS_ADMIN": 21}
SECUREBITS = {"noroot": "noroot", "noroot-locked": "noroot_locked", "no-setuid-fixup": "no_setuid_fixup",
              "no-setuid-fixup-locked": "no_setuid_fixup_locked", "keep-caps": "keep_caps",
              "keep-caps-locked": "keep_caps_locked"}


def unit_settings(text: str) -> dict[str, list[str]]:
    """The [Service] settings of a unit file: name -> every value given, in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def setpriv_argv(unit: dict[str, list[str]]) -> list[str]:
    """``setpriv`` with the credentials and capabilities the unit gives ``ExecStart=``."""
    ambient = [c.lower().removeprefix("cap_") for v in unit["AmbientCapabilities"] for c in v.split()]
    bounding = [c.lower().removeprefix("cap_") for v in unit["CapabilityBoundingSet"] for c in v.split()]
    caps, bset = ",".join(f"+{c}" for c in ambient), ",".join(f"+{c}" for c in bounding)
    argv = ["setpriv", f"--reuid={unit['User'][-1]}", f"--regid={unit['Group'][-1]}", "--init-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{bset}"]
    if unit.get("NoNewPrivileges", ["no"])[-1] == "yes":
        argv.append("--no-new-privs")
    bits = [SECUREBITS[b] for v in unit.get("SecureBits", []) for b in v.split()]
    if "noroot_locked" in bits:
        bits.insert(0, "noroot")  # systemd sets the bit it locks as well
    if bits:
        argv.append("--securebits=" + ",".join(f"+{b}" for b in dict.fromkeys(bits)))
    return [*argv, "--", *shlex.split(unit["ExecStart"][-1])]


def test_setpriv_argv_follows_the_unit():
    unit = unit_settings(UNIT.read_text())
    argv = setpriv_argv(unit)
    assert argv[:3] == ["setpriv", "--reuid=x0tta", "--regid=x0tta"]
    assert "--ambient-caps=-all,+net_admin,+bpf,+net_raw" in argv
    assert "--no-new-privs" in argv and "--securebits=+noroot,+noroot_locked" in argv
    assert argv[argv.index("--") + 1:] == ["/usr/bin/x0tta-agent", "--config", "/etc/x0tta/agent.toml"]


def sha256_tree(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def dpkg(*args: str) -> str:
    res = subprocess.run(["dpkg", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, f"dpkg {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout + res.stderr


def installed_version() -> str | None:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", "x0tta"], capture_output=True, text=True)
    parts = res.stdout.split()
    return parts[-1] if res.returncode == 0 and "installed" in parts[:3] else None


def build(version: str, out: Path) -> tuple[Path, float]:
    t0 = time.monotonic()
    env = {**os.environ, "DEB_VERSION": version, "OUT": str(out)}
    res = subprocess.run(["bash", str(ROOT / "scripts/build-deb.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    deb = out / f"x0tta_{version}_amd64.deb"
    assert deb.is_file(), res.stdout
    return deb, time.monotonic() - t0


@contextlib.contextmanager
def bpffs_on_sys() -> Iterator[None]:
    """/sys/fs/bpf as systemd leaves it at boot (bpffs, mode 0700); put back as found afterwards."""
    def fstype() -> str:
        return sh(f"stat -f -c %T {BPFFS}").stdout.strip()

    mounted = fstype() != "bpf_fs"
    if mounted:
        sh(f"mount -t bpf -o mode=0700 bpf {BPFFS}")
    mode = stat.S_IMODE(BPFFS.stat().st_mode)
    try:
        yield
    finally:
        if mounted:
            sh(f"umount {BPFFS}", check=False)
        else:
            os.chmod(BPFFS, mode)


class UnitRunner:
    """Runs the agent of the installed package as systemd would run the unit (see the module doc)."""

    def __init__(self, ns: str, notify_dir: Path) -> None:
        self.unit = unit_settings(UNIT.read_text())
        self.ns, self.notify_path = ns, notify_dir / "notify"
        self.proc: subprocess.Popen[str] | None = None
        self.sock: socket.socket | None = None

    def _directories(self) -> None:
        user = pwd.getpwnam(self.unit["User"][-1])
        for key, base in (("StateDirectory", "/var/lib"), ("RuntimeDirectory", "/run")):
            path = Path(base) / self.unit[key][-1]
            path.mkdir(exist_ok=True)
            os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, int(self.unit[f"{key}Mode"][-1], 8))

    def start(self) -> int:
        """Start the agent; its pid once it sent READY=1."""
        self._directories()
        for pre in self.unit.get("ExecStartPre", []):
            prefix = re.match(r"[-+!@:]*", pre).group(0)
            assert "+" in prefix, f"ExecStartPre={pre}: only full-privilege ('+') commands are emulated"
            res = subprocess.run(shlex.split(pre[len(prefix):]), capture_output=True, text=True)
            assert res.returncode == 0 or "-" in prefix, f"ExecStartPre={pre}: {res.stderr}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        os.chmod(self.notify_path, 0o666)  # noqa: S103 - the agent runs as x0tta and must write to it
        watchdog = re.fullmatch(r"(\d+)s", self.unit["WatchdogSec"][-1])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "NOTIFY_SOCKET": str(self.notify_path),
               "WATCHDOG_USEC": str(int(watchdog.group(1)) * 1_000_000)}
        argv = ["nsenter", f"--net=/run/netns/{self.ns}", "--", *setpriv_argv(self.unit)]
        self.proc = subprocess.Popen(argv, env=env, cwd="/", umask=int(self.unit["UMask"][-1], 8),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.sock.settimeout(0.2)
        fields: dict[str, str] = {}

        def ready() -> bool:
            assert self.proc.poll() is None, f"the agent exited {self.proc.returncode}: {self.proc.stdout.read()}"
            with contextlib.suppress(TimeoutError):
                data = self.sock.recv(4096).decode()
                fields.update(line.split("=", 1) for line in data.splitlines() if "=" in line)
            return fields.get("READY") == "1"

        until_sync(ready, timeout=90, interval=0)
        return self.proc.pid  # nsenter and setpriv exec: the pid is the agent's

    def stop(self) -> str:
        """SIGTERM, as systemctl stop; the agent's log. RuntimeDirectory= goes with the service."""
        out = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    out, _ = self.proc.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    out, _ = self.proc.communicate()
                    raise AssertionError(f"the agent did not stop on SIGTERM: {out[-3000:]}") from None
            else:
                out = self.proc.stdout.read()
            code = self.proc.returncode
            self.proc = None
            assert code == 0, f"agent exit {code}: {out[-3000:]}"
        if self.sock is not None:
            self.sock.close()
            self.notify_path.unlink(missing_ok=True)
            self.sock = None
        sh(f"rm -rf {RUN}", check=False)
        return out


def status() -> dict:
    res = subprocess.run(["/usr/bin/x0tta", "status", "--json"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def as_x0tta(code: str) -> str:
    """Python run by the installed package's interpreter and library, as the x0tta user."""
    prog = f"import sys; sys.path.append('/opt/x0tta/lib')\n{code}"
    res = subprocess.run(["runuser", "-u", "x0tta", "--", PYTHON, "-IS", "-c", prog], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


CONFIG = """
[node]
id = "deb1"

[logging]
format = "json"

[identity]
trust_domain = "deb.test"

[probes]
interfaces = ["x0deb0"]
poll_interval = 0.5
"""


def enrol(ca_dir: Path) -> None:
    """A node identity from a built-in CA, copied in as getting-started.md says (mode 0600, x0tta's)."""
    x0tta = ["/usr/bin/x0tta", "ca", "--dir", str(ca_dir)]
    subprocess.run([*x0tta, "init", "--trust-domain", "deb.test"], check=True, capture_output=True)
    subprocess.run([*x0tta, "issue", "--node", "deb1", "--ttl", "2h", "--out", str(ca_dir / "deb1")],
                   check=True, capture_output=True)
    sh(f"install -d -m 0700 -o x0tta -g x0tta {STATE}/identity")
    for name in ("svid.pem", "svid.key", "bundle.pem", "crl.pem"):
        sh(f"install -m 0600 -o x0tta -g x0tta {ca_dir}/deb1/{name} {STATE}/identity/{name}")


def check_running(pid: int) -> dict:
    """The agent: user x0tta, only the unit's capabilities, and READY with no subsystem failing."""
    uid, gid = pwd.getpwnam("x0tta").pw_uid, pwd.getpwnam("x0tta").pw_gid
    st = proc_status(pid)
    assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(gid)] * 4, st
    want = sum(1 << CAP_BITS[c] for c in ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF"))
    for field in ("CapEff", "CapPrm", "CapAmb", "CapBnd", "CapInh"):
        assert int(st[field], 16) == want, f"{field}={st[field]}, want {want:016x} (NET_ADMIN, NET_RAW, BPF)"
    assert st["NoNewPrivs"].strip() == "1"
    got = status()
    assert got["pid"] == pid
    subsystems = {s["subsystem"]: s for s in got["subsystems"]}
    assert not [n for n, s in subsystems.items() if s["state"] == "failing"], got
    # eBPF loaded and attached with CAP_BPF + CAP_NET_ADMIN alone (no PERFMON, no SYS_ADMIN), the
    # node identity read as x0tta: both would be degraded with a reason otherwise
    assert subsystems["probes"]["state"] == "ok", f"probes: {subsystems['probes']} (CAP_PERFMON needed here?)"
    assert subsystems["identity"]["state"] == "ok", subsystems["identity"]
    pins = list((BPFFS / "x0tta").iterdir())
    assert pins and all(p.stat().st_uid == uid for p in pins), pins
    return subsystems


def test_install_run_upgrade_purge(tmp_path):
    require_root()
    for tool in ("dpkg-deb", "setpriv", "nsenter", "runuser", PYTHON):
        assert sh(f"command -v {tool}", check=False).returncode == 0, f"{tool} is required"
    assert installed_version() is None and not CONF.exists() and not STATE.exists(), \
        "x0tta is already installed here (or /etc/x0tta, /var/lib/x0tta exist): this test would remove them"
    from x0tta import __version__

    v1, v2 = f"{__version__}~deb1", f"{__version__}~deb2"
    deb1, t1 = build(v1, tmp_path / "dist")
    deb2, t2 = build(v2, tmp_path / "dist")
    print(f"\nbuild-deb: {t1:.0f} s and {t2:.0f} s; {deb1.stat().st_size / 2**20:.1f} MiB")
    notify_dir = Path(f"/run/x0tta-test-notify-{os.getpid()}")
    notify_dir.mkdir(mode=0o755, exist_ok=True)
    with scratch_netns("x0deb") as ns, bpffs_on_sys():
        runner = UnitRunner(ns, notify_dir)
        sh(f"ip -n {ns} link set lo up && ip -n {ns} link add x0deb0 type veth peer name x0deb1 && "
           f"ip -n {ns} link set x0deb0 up && ip -n {ns} link set x0deb1 up")
        try:
            # --- install -----------------------------------------------------------------------------
            dpkg("-i", str(deb1))
            assert installed_version() == v1
            user = pwd.getpwnam("x0tta")
            assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin", user
            assert stat.S_IMODE(STATE.stat().st_mode) == 0o700 and STATE.stat().st_uid == user.pw_uid
            conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "x0tta"], capture_output=True,
                                       text=True).stdout
            assert "/etc/x0tta/agent.toml" in conffiles
            assert Path("/opt/x0tta/lib/x0tta/probes/bpf/x0tta_probes.o").is_file()
            unit = Path("/lib/systemd/system/x0tta-agent.service")
            assert unit.read_text() == UNIT.read_text()
            verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
            assert verify.returncode == 0 and "x0tta" not in verify.stderr, verify.stderr
            for cmd in ("x0tta", "x0tta-agent"):
                out = subprocess.run([f"/usr/bin/{cmd}", "--version"], capture_output=True, text=True, check=True)
                assert __version__ in out.stdout

            # the operator's settings, in the conffile
            (CONF / "agent.toml").write_text(CONFIG)
            enrol(tmp_path / "ca")
            # a knowledge store written by this version's code, as the agent's user
            as_x0tta("from x0tta.heal.store import Store\n"
                     "s = Store('/var/lib/x0tta/heal.sqlite3')\n"
                     "s.write([('incident', {'id': 'inc-deb1', 'symptom': {'kind': 'link_down', 'target': 'x0deb0'},"
                     " 'status': 'closed', 'opened': 1.0, 'onset': 1.0, 'closed': 2.0})])\n"
                     "s.close()")

            # --- run as the unit says ----------------------------------------------------------------
            pid = runner.start()
            subsystems = check_running(pid)
            print(f"running as x0tta, pid {pid}: " + ", ".join(f"{n} {s['state']}" for n, s in subsystems.items()))
            print(" ".join(f"{k}={v}" for k, v in proc_status(pid).items() if k.startswith(("Cap", "Uid"))))
            runner.stop()

            # --- upgrade -----------------------------------------------------------------------------
            kept = sha256_tree(STATE, CONF)
            assert f"{STATE}/identity/svid.key" in kept and f"{STATE}/heal.sqlite3" in kept
            dpkg("-i", str(deb2))
            assert installed_version() == v2
            assert pwd.getpwnam("x0tta").pw_uid == user.pw_uid
            assert sha256_tree(STATE, CONF) == kept, "files in /var/lib/x0tta or /etc/x0tta changed on upgrade"
            # the new code opens the old store (migrating it if its schema moved on): the record is there
            out = as_x0tta("import json\nfrom x0tta.heal.store import SCHEMA_VERSION, Store\n"
                           "s = Store('/var/lib/x0tta/heal.sqlite3')\n"
                           "v = s.db.execute('PRAGMA user_version').fetchone()[0]\n"
                           "ids = [r[0] for r in s.db.execute('SELECT id FROM incidents')]\n"
                           "print(json.dumps([v, SCHEMA_VERSION, ids]))")
            version, schema, ids = json.loads(out)
            assert version == schema and ids == ["inc-deb1"], out
            pid = runner.start()
            check_running(pid)
            runner.stop()

            # --- purge -------------------------------------------------------------------------------
            dpkg("--purge", "x0tta")
            assert installed_version() is None
            for gone in (STATE, CONF, RUN, Path("/opt/x0tta"), Path("/usr/bin/x0tta"), Path("/usr/bin/x0tta-agent"),
                         unit, BPFFS / "x0tta"):
                assert not gone.exists(), f"{gone} left after purge"
            for db in ("passwd", "group"):
                assert subprocess.run(["getent", db, "x0tta"], capture_output=True).returncode == 2, db
        finally:
            with contextlib.suppress(Exception):
                runner.stop()
            if installed_version() is not None or subprocess.run(["dpkg-query", "-W", "x0tta"],
                                                                 capture_output=True).returncode == 0:
                subprocess.run(["dpkg", "--purge", "x0tta"], capture_output=True, stdin=subprocess.DEVNULL)
            sh(f"rm -rf {notify_dir}", check=False)
