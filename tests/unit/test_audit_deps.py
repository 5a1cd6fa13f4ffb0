"""scripts/audit-deps.py (make audit, in make ci) over a pip-audit that answers as its services would:
a vulnerability fails unless ignored with a reason, and an audit that could not look packages up
says so instead of passing as clean (pip-audit alone prints "No known vulnerabilities found")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "audit-deps.py"
PINNED = [ln.split("==") for ln in (ROOT / "constraints.txt").read_text().split()]
# pip-audit's stand-in: answers per service from $FAKE_ANSWERS, as the real one does - a JSON report
# written to --output, or (service unreachable) a traceback's last line and no report.
FAKE = """
import json, os, sys
args = sys.argv[1:]
service, output = args[args.index("--vulnerability-service") + 1], args[args.index("--output") + 1]
answer = json.loads(os.environ["FAKE_ANSWERS"])[service]
if answer is None:
    sys.exit("requests.exceptions.ConnectionError: Failed to resolve the " + service + " service")
open(output, "w").write(json.dumps(answer))
"""


def report(skip: bool = False, vulns: dict[str, list[dict]] | None = None) -> dict:
    deps = []
    for name, version in PINNED:
        if skip:
            deps.append({"name": name, "skip_reason": f"Dependency not found on PyPI: {name} ({version})"})
        else:
            deps.append({"name": name, "version": version, "vulns": (vulns or {}).get(name, [])})
    return {"dependencies": deps, "fixes": []}


VULN = {"id": "GHSA-test-0000-0001", "aliases": ["CVE-2026-0001"], "fix_versions": ["99.0"], "description": "x"}


def run(tmp_path: Path, answers: dict, *extra: str, ignore: str = "ignore = []\n") -> subprocess.CompletedProcess:
    fake = tmp_path / "pip-audit"
    fake.write_text(f"#!{sys.executable}\n{FAKE}")
    fake.chmod(0o755)
    (tmp_path / "ignore.toml").write_text(ignore)
    env = {**os.environ, "X0TTA_PIP_AUDIT": str(fake), "FAKE_ANSWERS": json.dumps(answers)}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--ignore",
                           str(tmp_path / "ignore.toml"), *extra], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("pypi", [None, "skipped"], ids=["unreachable", "not-found"])
def test_an_audit_that_could_not_look_up_the_packages_says_so(tmp_path, pypi) -> None:
    answers = {"pypi": report(skip=True) if pypi else None, "osv": None}
    res = run(tmp_path, answers)
    assert res.returncode == 0, res.stderr
    assert "audit-deps: COULD NOT CHECK" in res.stdout and "osv: requests.exceptions.ConnectionError" in res.stdout
    assert "no known vulnerability" not in res.stdout
    assert (tmp_path / "out" / "pip-audit.txt").read_text() == res.stdout
    assert run(tmp_path, answers, "--strict").returncode == 2


def test_the_next_service_is_asked_when_the_first_could_not_look_up_the_packages(tmp_path) -> None:
    res = run(tmp_path, {"pypi": report(skip=True), "osv": report()})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"audit-deps: checked {len(PINNED)} of {len(PINNED)} pinned packages against osv: " \
        "no known vulnerability"


def test_a_vulnerability_fails_unless_ignored_with_a_reason(tmp_path) -> None:
    name = PINNED[0][0]
    answers = {"pypi": report(vulns={name: [VULN]}), "osv": None}
    res = run(tmp_path, answers)
    assert res.returncode == 1
    assert "audit-deps: VULNERABLE" in res.stderr and f"{name}=={PINNED[0][1]}: GHSA-test-0000-0001" in res.stderr

    ok = run(tmp_path, answers, ignore='[[ignore]]\nid = "CVE-2026-0001"\nreason = "not reachable from x0tta"\n')
    assert ok.returncode == 0, ok.stderr
    assert "ignored GHSA-test-0000-0001" in ok.stdout and "not reachable from x0tta" in ok.stdout

    bare = run(tmp_path, answers, ignore='[[ignore]]\nid = "CVE-2026-0001"\n')
    assert bare.returncode != 0 and "has no reason" in bare.stderr
