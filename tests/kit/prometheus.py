"""A real Prometheus and a real Alertmanager for the tests, and a webhook that records what
Alertmanager delivers.

:class:`Prometheus` writes a config into a directory (scrape targets through file-based service
discovery, as configs/prometheus/prometheus.yml does; rule files; an Alertmanager to send to),
starts Debian's ``prometheus`` on a free loopback port with its own storage there, and answers
PromQL through the HTTP API (``/api/v1/query``). :class:`Alertmanager` starts
``prometheus-alertmanager`` with clustering off, on a free port. :class:`Webhook` is an HTTP server
on a free port that keeps every JSON body posted to it (Alertmanager's webhook payload, version 4).

A server that cannot start skips the test with its log; under CI=true that skip is a failure
(tests/conftest.py). ``stop()`` ends what was started; use them as context managers.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

from tests.kit.ports import free_port
from tests.kit.procs import stop_process

PACKAGES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager"}


class _Server:
    """A server process with a log file, ready once ``ready_path`` answers 200."""

    exe = ""
    ready_path = "/-/ready"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        raise NotImplementedError

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def start(self, timeout: float = 30.0) -> Self:
        path = shutil.which(self.exe)
        if path is None:
            pytest.skip(f"{self.exe} is not installed (Debian package {PACKAGES[self.exe]}, "
                        "scripts/install-system-deps.sh)")
        with (self.dir / "server.log").open("wb") as log:
            self.proc = subprocess.Popen([path, *self.args()], stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                pytest.skip(f"{self.exe} did not start:\n{self.log()}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(self.url + self.ready_path, timeout=1).status == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        pytest.skip(f"{self.exe} was not ready on {self.url} within {timeout} s\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc, timeout=15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
            return json.load(resp)


class Prometheus(_Server):
    exe = "prometheus"

    def __init__(self, workdir: Path, targets: list[str], *, rule_files: tuple[Path, ...] = (),
                 alertmanager: str = "", interval: str = "1s") -> None:
        super().__init__(workdir)
        (self.dir / "targets").mkdir(exist_ok=True)
        self.set_targets(targets)
        alerting = ("alerting:\n  alertmanagers:\n    - static_configs:\n"
                    f"        - targets: [\"{alertmanager}\"]\n") if alertmanager else ""
        rules = "".join(f"  - {p}\n" for p in rule_files)
        (self.dir / "prometheus.yml").write_text(f"""# tests/kit/prometheus.py, after configs/prometheus/prometheus.yml
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:
{rules or "  []"}
{alerting}
scrape_configs:
  - job_name: x0tta
    scrape_timeout: {interval}
    file_sd_configs:
      - files: ["{self.dir}/targets/*.yml"]
        refresh_interval: 1s
""")

    def set_targets(self, targets: list[str]) -> None:
        """Rewrite the service-discovery file (Prometheus picks it up by itself)."""
        tmp = self.dir / "targets" / ".agents.tmp"
        tmp.write_text("- targets: [" + ", ".join(f'"{t}"' for t in targets) + "]\n")
        tmp.rename(self.dir / "targets" / "agents.yml")

    def args(self) -> list[str]:
        return [f"--config.file={self.dir}/prometheus.yml", f"--storage.tsdb.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (a PromQL error fails with its message)."""
        got = self.get("/api/v1/query", query=expr)
        assert got["status"] == "success", got
        return list(got["data"]["result"])

    def targets_up(self) -> list[str]:
        """Scrape URLs of the targets whose last scrape succeeded."""
        active = self.get("/api/v1/targets")["data"]["activeTargets"]
        return [t["scrapeUrl"] for t in active if t["health"] == "up"]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/alerts")["data"]["alerts"])


class Alertmanager(_Server):
    exe = "prometheus-alertmanager"

    def __init__(self, workdir: Path, config: str) -> None:
        super().__init__(workdir)
        (self.dir / "alertmanager.yml").write_text(config)

    def args(self) -> list[str]:
        # no cluster listener: it would bind 9094 on every address, and tests run side by side
        return [f"--config.file={self.dir}/alertmanager.yml", f"--storage.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class Webhook:
    """An HTTP receiver on a free loopback port; ``posts`` holds (path, JSON body) of each POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        posts, lock = self.posts, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
