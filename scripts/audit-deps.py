#!/usr/bin/env python3
"""Audit the locked set (constraints.txt) for known vulnerabilities with pip-audit; say what it could
not check.

pip-audit asks a vulnerability service about each pinned package: PyPI's (per release) first, OSV's
when PyPI's cannot answer. Three outcomes, each printed on a line that starts with ``audit-deps:``:

* **vulnerable** (exit 1): a pinned release has a known vulnerability that scripts/audit-ignore.toml
  does not list with a reason;
* **checked** (exit 0): every package was looked up and none is vulnerable (or each finding is
  listed in the ignore file, printed with its reason);
* **COULD NOT CHECK** (exit 0, loudly): no service answered for some or all packages (a network
  without them, a mirror without PyPI's per-release API). pip-audit itself reports "No known
  vulnerabilities found" then, with the packages "skipped": this script never lets that pass as a
  clean audit. ``--strict`` makes it exit 2 instead, for a pipeline that must not go on unaudited.

The JSON of each pip-audit run (``pip-audit-SERVICE.json``) and the summary (``pip-audit.txt``) go
to OUT (the CI artefact). ``X0TTA_PIP_AUDIT`` names another pip-audit executable (the tests use one
that answers as a service would).

    python scripts/audit-deps.py [--out DIR] [--strict] [--ignore FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKED = ROOT / "constraints.txt"
IGNORE = ROOT / "scripts" / "audit-ignore.toml"
SERVICES = ("pypi", "osv")
TIMEOUT = 180  # seconds per pip-audit run (70-odd lookups, 15 s socket timeout each)


def ignored(path: Path) -> dict[str, str]:
    """Vulnerability id -> why it does not apply (every entry must say why)."""
    entries = tomllib.loads(path.read_text()).get("ignore", [])
    out = {}
    for e in entries:
        if not str(e.get("reason", "")).strip():
            raise SystemExit(f"audit-deps: {path.name}: {e.get('id')!r} has no reason; every ignored "
                             "vulnerability says why it does not apply")
        out[e["id"]] = e["reason"]
    return out


def audit(service: str, report: Path) -> tuple[dict | None, str]:
    """One pip-audit run -> (its JSON report, or None when the service could not be used; the error)."""
    pip_audit = os.environ.get("X0TTA_PIP_AUDIT") or Path(sys.executable).with_name("pip-audit")
    cmd = [str(pip_audit), "--disable-pip", "--no-deps", "-r", str(LOCKED), "--vulnerability-service", service,
           "--format", "json", "--output", str(report), "--progress-spinner", "off", "--desc", "on"]
    report.unlink(missing_ok=True)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)  # noqa: S603 - fixed argv
    except subprocess.TimeoutExpired:
        return None, f"pip-audit gave no answer within {TIMEOUT} s"
    if not report.exists():  # it stopped before auditing: the service could not be reached
        err = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        return None, err[-1] if err else f"pip-audit exited {res.returncode} with no report"
    return json.loads(report.read_text()), ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", default=str(ROOT / "ci-artifacts"), help="where the report goes")
    p.add_argument("--strict", action="store_true", help="exit 2 when some packages could not be checked")
    p.add_argument("--ignore", default=str(IGNORE), help="the vulnerabilities not to fail on, with reasons (TOML)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    allowed = ignored(Path(args.ignore))
    pinned = sum(1 for ln in LOCKED.read_text().splitlines() if ln.split("#", 1)[0].strip())

    lines: list[str] = []
    # the report that checked the most packages, from the first service that checked them all
    report, service, unchecked, errors = None, "", [], []
    for name in SERVICES:
        got, error = audit(name, out / f"pip-audit-{name}.json")
        if got is None:
            errors.append(f"{name}: {error}")
            continue
        skipped = [d for d in got["dependencies"] if "skip_reason" in d]
        if report is None or len(skipped) < len(unchecked):
            report, service, unchecked = got, name, skipped
        if not skipped:
            break
        errors.append(f"{name}: {len(skipped)} of {len(got['dependencies'])} packages not found "
                      f"({skipped[0]['skip_reason']})")

    if report is None:
        lines.append(f"audit-deps: COULD NOT CHECK the {pinned} pinned packages for known vulnerabilities: no "
                     "vulnerability service answered")
        lines += [f"audit-deps:   {e}" for e in errors]
        return finish(out, lines, 2 if args.strict else 0)

    found = [(d["name"], d["version"], v) for d in report["dependencies"] for v in d.get("vulns", [])]
    checked = len(report["dependencies"]) - len(unchecked)
    failing = []
    for name, version, vuln in found:
        ids = [vuln["id"], *vuln.get("aliases", [])]
        reason = next((allowed[i] for i in ids if i in allowed), None)
        fix = ", ".join(vuln.get("fix_versions", [])) or "none yet"
        if reason:
            lines.append(f"audit-deps: ignored {vuln['id']} in {name}=={version} (fixed in {fix}): {reason}")
        else:
            failing.append(f"{name}=={version}: {vuln['id']} (fixed in {fix})")
    if unchecked:
        which = "any" if len(unchecked) == pinned else f"{len(unchecked)}"
        lines.append(f"audit-deps: COULD NOT CHECK {which} of the {pinned} pinned packages for known "
                     f"vulnerabilities: {', '.join(d['name'] for d in unchecked)}")
        lines += [f"audit-deps:   {e}" for e in errors]
    if failing:
        lines.append(f"audit-deps: VULNERABLE: {len(failing)} known vulnerabilities in the locked set "
                     f"(upgrade the pin, or list the id in {os.path.relpath(args.ignore, ROOT)} with the reason "
                     "it does not apply):")
        lines += [f"audit-deps:   {f}" for f in failing]
        return finish(out, lines, 1)
    if checked:
        lines.append(f"audit-deps: checked {checked} of {pinned} pinned packages against {service}: no known "
                     "vulnerability" + (" that is not ignored" if found else ""))
    return finish(out, lines, 2 if unchecked and args.strict else 0)


def finish(out: Path, lines: list[str], code: int) -> int:
    (out / "pip-audit.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
