"""Health conditions are declared as data, and every declared code is documented.

Each subsystem declares its conditions in ``x0tta/<subsystem>/conditions.py``; the supervisor's
are in ``x0tta/common/health.py``; ``x0tta.cli.conditions_registry`` gathers them. These tests
hold that registry to three things: no code is declared twice, docs/troubleshooting.md has an entry (an
``<a id>`` anchor in a row naming the code and its state) for every code and no anchor for a code
that is gone, and nothing outside the tables builds a condition or a missing capability from a
bare string, so every condition an operator can see carries a declared code.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from x0tta.cli import status
from x0tta.cli.conditions_registry import TABLES, declared
from x0tta.cli.main import build_parser
from x0tta.common.errors import CapabilityMissing
from x0tta.common.health import Condition, ConditionSpec, Severity

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "troubleshooting.md"
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
# Where a ConditionSpec may be built: the tables, and common/health.py (the type, the supervisor's).
DECLARING = {"common/health.py"} | {str(p.relative_to(ROOT / "x0tta")) for p in ROOT.glob("x0tta/*/conditions.py")}


def sources() -> list[tuple[str, ast.Module]]:
    pkg = ROOT / "x0tta"
    return [(str(p.relative_to(pkg)), ast.parse(p.read_text(), str(p))) for p in sorted(pkg.rglob("*.py"))]


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls of ``name`` or ``x.name`` (but not the lock ``threading.Condition`` or ``asyncio.Condition``)."""
    def named(f: ast.expr) -> bool:
        if isinstance(f, ast.Name):
            return f.id == name
        return (isinstance(f, ast.Attribute) and f.attr == name
                and getattr(f.value, "id", None) not in ("threading", "asyncio"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and named(n.func)]


def test_no_code_is_declared_twice() -> None:
    codes = [spec.code for _, specs in TABLES for spec in specs]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert len(declared()) == len(codes)
    anchors = [spec.anchor for spec in declared().values()]
    assert len(anchors) == len(set(anchors))


def test_codes_are_stable_snake_case() -> None:
    for spec in declared().values():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", spec.code), spec.code
        assert spec.summary and spec.summary[-1] not in ".:", spec.code


def test_every_table_module_is_in_the_registry() -> None:
    """A conditions.py whose table the registry forgot would raise codes no test documents."""
    registered = {spec for _, specs in TABLES for spec in specs}
    for rel in sorted(DECLARING):
        module = importlib.import_module("x0tta." + rel.removesuffix(".py").replace("/", "."))
        specs = {v for v in vars(module).values() if isinstance(v, ConditionSpec)}
        assert specs, rel
        assert specs == set(module.CONDITIONS), f"{rel}: a spec not in its CONDITIONS"
        assert specs <= registered, f"{rel}: not gathered by x0tta.cli.conditions_registry"


def test_troubleshooting_documents_every_declared_code() -> None:
    lines = DOC.read_text().splitlines()
    found: dict[str, list[str]] = {}
    for line in lines:
        for anchor in ANCHOR.findall(line):
            found.setdefault(anchor, []).append(line)
    specs = declared()
    missing = sorted(s.code for s in specs.values() if s.anchor not in found)
    assert not missing, f"docs/troubleshooting.md has no entry (<a id=...>) for {missing}"
    stale = sorted(set(found) - {s.anchor for s in specs.values()})
    assert not stale, f"docs/troubleshooting.md has anchors of no declared code: {stale}"
    for spec in specs.values():
        assert len(found[spec.anchor]) == 1, f"anchor {spec.anchor} appears more than once"
        row = [cell.strip() for cell in found[spec.anchor][0].strip("|").split("|")]
        assert f"`{spec.code}`" in row[0], f"the row of anchor {spec.anchor} does not name `{spec.code}`"
        label = spec.severity.label
        assert row[1].startswith(label), f"{spec.code}: docs say {row[1]!r}, declared {label}"
        assert all(row[2:]), f"{spec.code}: the row has an empty cell (what it means, what to do)"


def test_nothing_builds_a_condition_from_a_bare_string() -> None:
    """Services raise declared specs by reference; only the tables build specs."""
    for rel, tree in sources():
        if rel not in DECLARING:
            assert not calls(tree, "ConditionSpec"), f"x0tta/{rel} declares a condition outside a conditions table"
        if rel != "common/health.py":
            assert not calls(tree, "Condition"), f"x0tta/{rel} builds a Condition: call its spec instead"
        for call in calls(tree, "CapabilityMissing"):
            assert call.args and not isinstance(call.args[0], ast.Constant | ast.JoinedStr | ast.BinOp), (
                f"x0tta/{rel}:{call.lineno}: CapabilityMissing takes a declared spec, not a string"
            )


def test_a_bare_code_is_refused_at_runtime() -> None:
    with pytest.raises(TypeError):
        Condition("made_up", "message")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CapabilityMissing("made_up", "message")  # type: ignore[arg-type]


def test_a_spec_raises_its_condition() -> None:
    spec = ConditionSpec("thing_broken", Severity.DEGRADED, "the thing is broken")
    c = spec("since 3 s")
    assert (c.code, c.severity, c.message) == ("thing_broken", Severity.DEGRADED, "since 3 s")
    assert c.to_json() == {"code": "thing_broken", "severity": "degraded", "message": "since 3 s"}
    assert spec.docs == "docs/troubleshooting.md#thing_broken"
    assert CapabilityMissing(spec, "no thing").code == "thing_broken"


def test_status_explain_adds_summary_and_docs() -> None:
    st = {
        "node": "r1", "version": "0", "pid": 1, "uptime_seconds": 5, "state": "degraded",
        "subsystems": [
            {"subsystem": "mesh", "state": "degraded", "restarts": 0, "since": 0.0,
             "conditions": [{"code": "batman_adv_missing", "severity": "degraded", "message": "no batadv"}]},
            {"subsystem": "other", "state": "degraded", "restarts": 0, "since": 0.0,
             "conditions": [{"code": "from_a_newer_agent", "severity": "degraded", "message": "?"}]},
        ],
    }
    out = status.explain(st)
    mesh, other = (s["conditions"][0] for s in out["subsystems"])
    assert mesh["docs"] == "docs/troubleshooting.md#batman_adv_missing" and "batman-adv" in mesh["summary"]
    assert "docs" not in other
    text = status.render(out)
    assert "mesh: batman_adv_missing (degraded) - " in text
    assert "see docs/troubleshooting.md#batman_adv_missing" in text and "from_a_newer_agent (" not in text
    assert build_parser().parse_args(["status", "--explain"]).explain
