#!/usr/bin/env python3
"""Coverage per package after a test run, held to the floors in tests/coverage-floors.toml.

``make test`` runs pytest under coverage.py (settings in pyproject.toml, ``[tool.coverage.*]``);
this script then reads that run's data and

* prints the line coverage of each package (``x0tta.heal``, ``x0tta.peer``, ... with its
  subpackages; the modules directly under ``x0tta/`` as ``x0tta``);
* writes the reports to OUT (the CI artefact): ``coverage.xml`` (Cobertura), ``coverage.txt``
  (per file) and ``packages.txt`` (the table printed here);
* exits 1 when a package is under its floor. A package without a floor (a new one) is listed
  with "no floor" and does not fail the run: give it one in tests/coverage-floors.toml.

Only what ran is judged: a package none of whose modules this run imported (a run of one tier, or
``-k``) is listed as "not run", not failed. In the full run every package is imported. Code that
runs in other processes (the agents integration tests and the lab start) is not measured.

    python scripts/coverage-check.py [--data FILE] [--out DIR] [--floors FILE]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from xml.etree import ElementTree

import coverage

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ROOT / "tests" / "coverage-floors.toml"


def package_of(path: Path) -> str:
    rel = path.relative_to((ROOT / "x0tta").resolve())
    return "x0tta" if len(rel.parts) == 1 else f"x0tta.{rel.parts[0]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--data", default=str(ROOT / "ci-artifacts" / ".coverage"), help="coverage data file")
    p.add_argument("--out", default=str(ROOT / "ci-artifacts"), help="where the reports go")
    p.add_argument("--floors", default=str(FLOORS), help="the floors per package (TOML)")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"coverage-check: no coverage data at {args.data}: the tests did not run under coverage", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    floors: dict[str, float] = tomllib.loads(Path(args.floors).read_text())["floors"]

    cov = coverage.Coverage(data_file=args.data, config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    data = cov.get_data()
    # modules that ran: coverage also records every unimported module of `source`, with no lines
    measured = {str(Path(f).resolve()) for f in data.measured_files() if data.lines(f)}
    with open(out / "coverage.txt", "w") as f:
        cov.report(file=f, show_missing=True)
    cov.xml_report(outfile=str(out / "coverage.xml"))
    # Per file from the Cobertura report (one <line> per statement, hits 0 when missed): a module
    # no test imported is there too, with every line missed.
    xml = ElementTree.parse(out / "coverage.xml").getroot()  # noqa: S314 - the report written just above
    source = Path(xml.findtext("sources/source") or ROOT / "x0tta")
    totals: dict[str, list[int]] = {}  # package -> [statements, missed, modules run]
    for cls in xml.iter("class"):
        path = (source / cls.attrib["filename"]).resolve()
        hits = [line.attrib["hits"] for line in cls.iter("line")]
        t = totals.setdefault(package_of(path), [0, 0, 0])
        t[0] += len(hits)
        t[1] += hits.count("0")
        t[2] += str(path) in measured

    lines = [f"{'package':<18} {'lines':>6} {'missed':>6} {'cover':>7} {'floor':>6}  verdict"]
    failed = []
    for pkg, (stmts, miss, ran) in sorted(totals.items()):
        pct = 100.0 * (stmts - miss) / stmts if stmts else 100.0
        floor = floors.get(pkg)
        if floor is None:
            verdict = "no floor: add one to tests/coverage-floors.toml"
        elif not ran:
            verdict = "not run"
        elif pct < floor:
            verdict = "UNDER THE FLOOR"
            failed.append(pkg)
        else:
            verdict = "ok"
        lines.append(f"{pkg:<18} {stmts:>6} {miss:>6} {pct:>6.1f}% {floor if floor is not None else '-':>6}  {verdict}")
    lines += [f"{pkg:<18} {'':>6} {'':>6} {'':>7} {floors[pkg]:>6}  no such package: remove its floor"
              for pkg in sorted(set(floors) - set(totals))]
    all_stmts = sum(t[0] for t in totals.values())
    all_miss = sum(t[1] for t in totals.values())
    lines.append(f"{'total':<18} {all_stmts:>6} {all_miss:>6} {100.0 * (all_stmts - all_miss) / all_stmts:>6.1f}%")
    table = "\n".join(lines)
    (out / "packages.txt").write_text(table + "\n")
    print(table)
    print(f"coverage-check: reports in {out}/ (coverage.xml, coverage.txt, packages.txt)")
    if failed:
        print(f"coverage-check: FAILED: {', '.join(failed)} under the floor (tests/coverage-floors.toml)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
