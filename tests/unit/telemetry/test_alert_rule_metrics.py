"""The alert rules name only metrics the agent exports: a renamed metric breaks this, not a page."""

from __future__ import annotations

import re

from tests.conftest import ROOT

RULES = ROOT / "configs/prometheus/x0tta-alerts.yml"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


def exported() -> set[str]:
    """Metric names declared in the agent's code (Counter names get their ``_total`` at export)."""
    names = set()
    for path in (ROOT / "x0tta").rglob("*.py"):
        names |= set(re.findall(r"\"(x0tta_[a-z0-9_]+)\"", path.read_text()))
    return names


def not_exported(used: set[str]) -> set[str]:
    """The names in ``used`` the agent does not export (with or without an exposition suffix)."""
    known = exported()
    missing = set()
    for name in used:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        if name not in known and base not in known:
            missing.add(name)
    return missing


def test_every_metric_in_the_rules_is_exported() -> None:
    used = set(re.findall(r"\b(x0tta_[a-z0-9_]+)", RULES.read_text()))
    assert used, "no metric found in the rules"
    missing = not_exported(used)
    assert not missing, f"rules use metrics the agent does not export: {sorted(missing)}"


def test_the_critical_threat_alert_covers_exactly_the_high_severity_signatures() -> None:
    from x0tta.guard.core.detect import SEVERITY_HIGH, SIGNATURES

    text = RULES.read_text()
    high = re.search(r'x0tta_guard_threats_total\{signature=~"([a-z_|]+)"\}', text)
    rest = re.search(r'x0tta_guard_threats_total\{signature!~"([a-z_|]+)"\}', text)
    assert high and rest and high.group(1) == rest.group(1)
    assert set(high.group(1).split("|")) == {n for n, s in SIGNATURES.items() if s.severity == SEVERITY_HIGH}
