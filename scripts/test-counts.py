#!/usr/bin/env python3
"""How many tests each tier holds today, counted by pytest's own collection (nothing is run).

    .venv/bin/python scripts/test-counts.py            # print the table
    .venv/bin/python scripts/test-counts.py --write    # and put it, dated, in docs/testing.md

The tiers are those of docs/testing.md, told apart by marker as the Makefile and CI tell them
(``slow`` first: a slow test counts there, not in the tier of its other marker). Counts written by
hand drift as soon as a test is added; these are collected, one collection of the whole suite
(a few seconds), and ``--write`` replaces the block between the ``test-counts`` markers of
docs/testing.md with them and the date, so the page says when they were true.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- test-counts:begin -->", "<!-- test-counts:end -->"
# (tier, the -m expression that selects exactly its tests), in the order of docs/testing.md's table;
# a test with two tier markers counts in the first of PRECEDENCE it has
TIERS = (
    ("unit", "not integration and not lab and not fuzz and not slow"),
    ("fuzz", "fuzz and not integration and not lab and not slow"),
    ("integration", "integration and not lab and not slow"),
    ("lab", "lab and not slow"),
    ("slow", "slow"),
)
PRECEDENCE = ("slow", "lab", "integration", "fuzz")


def tier(markers: set[str]) -> str:
    return next((name for name in PRECEDENCE if name in markers), "unit")


class Collector:
    """A pytest plugin that keeps the marker names of every collected test."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self.counts[tier({m.name for m in item.iter_markers()})] += 1


def count() -> Counter[str]:
    collector = Collector()
    os.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the list of every test: only wanted when collection fails
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")],
                           plugins=[collector])
    if code != 0:
        print(out.getvalue(), file=sys.stderr)
        raise SystemExit(f"pytest could not collect the suite (exit {code})")
    return collector.counts


def table(counts: Counter[str], day: datetime.date) -> str:
    rows = [f"| {name} | `-m \"{expr}\"` | {counts[name]} |" for name, expr in TIERS]
    return "\n".join([
        f"Tests per tier on {day.isoformat()} (`scripts/test-counts.py --write`; run it for today's):",
        "",
        "| tier | selected by | tests |",
        "|---|---|---|",
        *rows,
        f"| all | | {sum(counts.values())} |",
    ])


def write(block: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC.relative_to(ROOT)} has no {BEGIN} ... {END} block")
    DOC.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text, count=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the dated block in docs/testing.md")
    args = ap.parse_args()
    block = table(count(), datetime.datetime.now(datetime.UTC).date())
    print("\n" + block)
    if args.write:
        write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
