"""scripts/coverage-check.py judges what ran: a package under its floor fails the run, a package the
run never imported is "not run" (not failed), and the reports land where CI keeps them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "coverage-check.py"


def test_under_the_floor_fails_not_run_is_not_judged_and_the_reports_are_written(tmp_path) -> None:
    # coverage data of a run that imports x0tta and x0tta.common and nothing else
    data = tmp_path / ".coverage"
    subprocess.run([sys.executable, "-m", "coverage", "run", f"--rcfile={ROOT / 'pyproject.toml'}",
                    f"--data-file={data}", "-m", "x0tta.common.spiffe_id"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    (tmp_path / "floors.toml").write_text('[floors]\n"x0tta" = 1\n"x0tta.common" = 100\n"x0tta.heal" = 100\n'
                                          '"x0tta.gone" = 50\n')
    res = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--out", str(tmp_path / "out"),
                          "--floors", str(tmp_path / "floors.toml")], capture_output=True, text=True, timeout=120)
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line.startswith("x0tta")}
    assert res.returncode == 1, res.stdout + res.stderr
    assert rows["x0tta"].endswith("ok")
    assert rows["x0tta.common"].endswith("UNDER THE FLOOR")
    assert rows["x0tta.heal"].endswith("not run")
    assert "no floor" in rows["x0tta.peer"]
    assert rows["x0tta.gone"].endswith("no such package: remove its floor")
    assert "FAILED: x0tta.common under the floor" in res.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"coverage.xml", "coverage.txt", "packages.txt"}
