"""The alert rules and the Prometheus and Alertmanager examples, as Prometheus's and Alertmanager's
own tools read them: ``promtool check rules``, ``promtool check config`` of the scrape config, the
rules' unit tests (``promtool test rules``), ``amtool check-config``, and where the example routes
a critical and a warning alert."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

RULES = ROOT / "configs/prometheus/x0tta-alerts.yml"
RULE_TESTS = ROOT / "tests/integration/alerts/x0tta-alerts-test.yml"
ALERTMANAGER = ROOT / "configs/prometheus/alertmanager.yml"
SCRAPE = ROOT / "configs/prometheus/prometheus.yml"
PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which(tool)
    assert path, f"{tool} is required (Debian package {PACKAGES[tool]}, scripts/install-system-deps.sh)"
    return subprocess.run([path, *args], capture_output=True, text=True, cwd=ROOT, check=False)


def test_promtool_checks_the_rules() -> None:
    res = run("promtool", "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_checks_the_scrape_config_example() -> None:
    res = run("promtool", "check", "config", str(SCRAPE))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "is valid prometheus config file syntax" in res.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    res = run("promtool", "test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr


def test_amtool_checks_the_alertmanager_example() -> None:
    res = run("amtool", "check-config", str(ALERTMANAGER))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("labels", "receiver"), [
    (["alertname=X0ttaThreatHigh", "severity=critical"], "mesh-oncall"),
    (["alertname=X0ttaSubsystemDegraded", "severity=warning"], "mesh-ops"),
])
def test_the_example_routes_by_severity(labels: list[str], receiver: str) -> None:
    res = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == [receiver]
