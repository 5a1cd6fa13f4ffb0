"""A real 3-member etcd cluster for the coordination tests: loopback, free ports, TLS with client
certificates on both the client and the peer side.

:class:`Cluster` writes an ECDSA P-256 CA (:class:`tests.kit.pki.TestCA` with ``kind="p256"``:
etcd is written in Go, whose TLS cannot verify ML-DSA, the way the fleet plane's broker needs a
classical certificate, docs/fleet.md), one server certificate per member (IP SAN 127.0.0.1,
which etcd checks on its peers) and client certificates, then starts Debian's ``etcd`` (3.4) three
times. Members can be killed (SIGKILL) and restarted on their data, paused and resumed.

``partition(i)`` cuts member ``i`` off with SIGSTOP. The host has no iptables, and loopback
connections cannot be told apart by address (every one leaves from 127.0.0.1), so the member is
frozen instead: it sends nothing and answers nothing, to its peers and to clients, which is what
the others and the agents see of a member behind a partition. What it does not reproduce is a cut-off
member running on by itself (campaigning with higher terms, answering serializable reads): etcd's
raft handles that; the tests are about the agents, who see requests to that member time out
either way.

A cluster that cannot start skips the test with the members' logs; under CI=true that skip is a
failure (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.kit.pki import TestCA
from tests.kit.ports import free_ports
from tests.kit.procs import stop_process


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def server_cert(ca: TestCA, where: Path, name: str, ips: tuple[str, ...] = ("127.0.0.1",)) -> None:
    """``where/NAME.pem`` and ``.key``: a server-and-client certificate of ``ca`` for an etcd member.
    etcd presents it to clients and to peers, and verifies a peer's against the peer URL's address
    (the IP SANs, ``ips``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([*sans, x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (where / f"{name}.pem").write_bytes(_pem(cert))
    (where / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    address: str = "127.0.0.1"

    @property
    def client_url(self) -> str:
        return f"https://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.address}:{self.peer_port}"


class Cluster:
    """Three etcd members (``size``) under ``workdir``; ``files(name)`` gives a client's TLS files.
    ``address``: where the members listen (loopback for the tests; a lab node's mesh address for a
    benchmark that runs etcd inside the lab guest, see tests/bench/bench_heal_cpu.py)."""

    def __init__(self, workdir: Path, size: int = 3, clients: tuple[str, ...] = ("operator",),
                 address: str = "127.0.0.1") -> None:
        self.dir = workdir
        self.address = address
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = TestCA("etcd.test", kind="p256")
        (self.dir / "ca.pem").write_bytes(self.ca.cert_pem)
        ports = free_ports(2 * size)
        self.members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.dir / f"m{i}.etcd", address=address)
                        for i in range(size)]
        for m in self.members:
            self._server_cert(m.name)
        for name in clients:
            self.add_client(name)

    # -- certificates -----------------------------------------------------------------------------

    def _server_cert(self, name: str) -> None:
        server_cert(self.ca, self.dir, name, ips=(self.address,))

    def add_client(self, name: str) -> dict[str, str]:
        """A client certificate (an ECDSA X509-SVID of the test CA) for ``name``; its files."""
        leaf = self.ca.issue(path=f"/node/{name}", kind="p256", ttl=86400.0)
        (self.dir / f"{name}.pem").write_bytes(leaf.cert_pem)
        (self.dir / f"{name}.key").write_bytes(leaf.key_pem)
        return self.files(name)

    def coord_toml(self, name: str, operator_key: Path, prefix: str, poll_interval: float = 0.2) -> str:
        """An agent's ``[coord]`` section for client ``name`` of this cluster (turns of 3 s)."""
        files = self.files(name)
        return (f"[coord]\nendpoints = {json.dumps(self.endpoints)}\ncert_file = \"{files['cert_file']}\"\n"
                f"key_file = \"{files['key_file']}\"\nca_file = \"{files['ca_file']}\"\n"
                f"operator_key_file = \"{operator_key}\"\nprefix = \"{prefix}\"\npoll_interval = {poll_interval}\n"
                "turn_ttl = 3\nrequest_timeout = 1.0\n")

    def files(self, name: str) -> dict[str, str]:
        """``cert_file``, ``key_file`` and ``ca_file`` of client ``name``."""
        return {"cert_file": str(self.dir / f"{name}.pem"), "key_file": str(self.dir / f"{name}.key"),
                "ca_file": str(self.dir / "ca.pem")}

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    # -- processes --------------------------------------------------------------------------------

    def _argv(self, m: Member, state: str) -> list[str]:
        d = self.dir
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        return [
            shutil.which("etcd") or "/usr/bin/etcd",
            "--name", m.name, "--data-dir", str(m.data),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"x0tta-test-{self.members[0].client_port}",
            "--cert-file", str(d / f"{m.name}.pem"), "--key-file", str(d / f"{m.name}.key"),
            "--client-cert-auth", "--trusted-ca-file", str(d / "ca.pem"),
            "--peer-cert-file", str(d / f"{m.name}.pem"), "--peer-key-file", str(d / f"{m.name}.key"),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(d / "ca.pem"),
            # Short timeouts: a lost leader is replaced within a second, not after etcd's 1 s default
            # election timeout plus backoff; a busy 2-core test machine still holds a 100 ms heartbeat.
            "--heartbeat-interval", "100", "--election-timeout", "1000",
            "--logger", "zap", "--log-outputs", str(d / f"{m.name}.log"),
            "--snapshot-count", "10000", "--quota-backend-bytes", str(256 * 1024 * 1024),
        ]

    def log(self, m: Member | None = None) -> str:
        out = []
        for one in [m] if m else self.members:
            p = self.dir / f"{one.name}.log"
            out.append(f"--- {one.name}\n" + (p.read_text()[-2000:] if p.exists() else "(no log)"))
        return "\n".join(out)

    def _spawn(self, m: Member, state: str) -> None:
        m.proc = subprocess.Popen(self._argv(m, state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m.paused = False

    def start(self, timeout: float = 30.0) -> None:
        if shutil.which("etcd") is None and not Path("/usr/bin/etcd").exists():
            pytest.skip("etcd is not installed (scripts/install-system-deps.sh installs etcd-server)")
        for m in self.members:
            self._spawn(m, "new")
        try:
            self.wait_healthy(timeout)
        except TimeoutError as exc:
            self.stop()
            pytest.skip(f"etcd did not start: {exc}\n{self.log()}")

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start member ``i`` again on its data (after :meth:`kill`)."""
        m = self.members[i]
        assert m.proc is None, f"{m.name} is running"
        self._spawn(m, "existing")
        self.wait_healthy(timeout)

    def kill(self, i: int) -> None:
        m = self.members[i]
        proc, m.proc = m.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()

    def partition(self, i: int) -> None:
        """Cut member ``i`` off (SIGSTOP; see the module's docstring for why that stands for it)."""
        m = self.members[i]
        assert m.proc is not None
        m.proc.send_signal(signal.SIGSTOP)
        m.paused = True

    def heal(self, i: int) -> None:
        m = self.members[i]
        assert m.proc is not None
        m.proc.send_signal(signal.SIGCONT)
        m.paused = False

    def stop(self) -> None:
        for m in self.members:
            proc, m.proc = m.proc, None
            if proc is not None:
                stop_process(proc)

    # -- looking at it ----------------------------------------------------------------------------

    def _ssl(self, client: str = "operator") -> ssl.SSLContext:
        f = self.files(client)
        ctx = ssl.create_default_context(cafile=f["ca_file"])
        ctx.load_cert_chain(f["cert_file"], f["key_file"])
        return ctx

    def call(self, m: Member, path: str, body: dict[str, object], timeout: float = 2.0) -> dict[str, object]:
        """One request to the gRPC-JSON gateway of member ``m`` (blocking: for the test's own checks)."""
        req = urllib.request.Request(m.client_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout, context=self._ssl()) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def status(self, m: Member) -> dict[str, object]:
        return self.call(m, "/v3/maintenance/status", {})

    def leader(self) -> int:
        """Index of the current leader, asked of the running members."""
        for m in self.members:
            if m.proc is None or m.paused:
                continue
            with contextlib.suppress(OSError, ValueError):
                st = self.status(m)
                lead = str(st.get("leader", ""))
                for i, o in enumerate(self.members):
                    if o.proc is not None and not o.paused and str(self.status(o)["header"]["member_id"]) == lead:  # type: ignore[index]
                        return i
        raise TimeoutError("no running member knows a leader")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running member answers and a linearizable read goes through."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                for m in self.members:
                    if m.proc is not None and m.proc.poll() is not None:
                        raise TimeoutError(f"{m.name} exited with {m.proc.returncode}")
                running = [m for m in self.members if m.proc is not None and not m.paused]
                for m in running:
                    self.call(m, "/v3/kv/range", {"key": "aGVhbHRo"})
                self.leader()
                return
            except TimeoutError:
                raise
            except (OSError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"etcd not healthy within {timeout} s (last: {last!r})")
