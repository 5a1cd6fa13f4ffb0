"""The import contracts in .importlinter hold, and they would catch a break (proved on a copy).

The layers contract keeps subsystems in their order (nothing below imports anything above, and
siblings never import each other); the purity contract keeps cores free of I/O, clocks and
randomness. Both run in ``make lint``; these tests show the contracts are not vacuous: the same
linter, run on a temporary copy of the package with one bad import added, reports it broken.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
# Modules the purity contract covers (its source_modules), as paths under x0tta/.
PURE_GLOBS = ("common/*.py", "config/fields.py", "config/schema.py", "*/core.py", "*/core/**/*.py")
WALL_CLOCKS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
               ("time", "time"), ("time", "monotonic")}


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(tree / ".importlinter"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "x0tta", tree / "x0tta", ignore=shutil.ignore_patterns("__pycache__", "*.o"))
    shutil.copy(ROOT / ".importlinter", tree / ".importlinter")
    return tree


def pure_modules() -> list[Path]:
    pkg = ROOT / "x0tta"
    found = {p for g in PURE_GLOBS for p in pkg.glob(g)}
    return sorted(found)


def test_the_contracts_hold_on_the_tree(copy: Path) -> None:
    res = lint(copy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Pure cores do no I/O KEPT" in res.stdout and "Subsystems in layers KEPT" in res.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("heal/core/plan.py", "import socket", "Pure cores do no I/O"),
        ("identity/core/types.py", "import os", "Pure cores do no I/O"),
        ("common/spiffe_id.py", "import random", "Pure cores do no I/O"),
        ("peer/core/frames.py", "import ssl", "Pure cores do no I/O"),
        ("mesh/client.py", "import x0tta.heal", "Subsystems in layers"),
        ("config/identity.py", "import x0tta.identity.ca", "Subsystems in layers"),
        ("heal/service.py", "import x0tta.peer.service", "Subsystems in layers"),
        ("lab/guest.py", "import x0tta.cli.main", "Subsystems in layers"),
    ],
)
def test_one_bad_import_breaks_its_contract(copy: Path, module: str, line: str, contract: str) -> None:
    target = copy / "x0tta" / module
    original = target.read_text()
    try:
        target.write_text(original + f"\n{line}  # added by the layers test\n")
        res = lint(copy)
    finally:
        target.write_text(original)
    assert res.returncode != 0, res.stdout
    assert f"{contract} BROKEN" in res.stdout, res.stdout


def test_the_purity_contract_covers_every_core_module() -> None:
    modules = {p.relative_to(ROOT / "x0tta").as_posix() for p in pure_modules()}
    # new cores are covered by their place, not by a list: a module added under a core package is in
    assert {"heal/core/plan.py", "identity/core/types.py", "identity/core/certs.py", "common/spiffe_id.py",
            "mesh/core/views.py", "admin/core.py", "guard/core/admission.py", "guard/core/detect.py",
            "guard/core/threats.py", "probes/core.py"} <= modules


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: p.relative_to(ROOT / "x0tta").as_posix())
def test_no_core_reads_a_wall_clock(path: Path) -> None:
    """Cores take ``now`` as an argument; datetime.now() and friends are the ones import rules miss."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if (name, node.func.attr) in WALL_CLOCKS:
                calls.append(f"line {node.lineno}: {name}.{node.func.attr}()")
    assert not calls, calls
