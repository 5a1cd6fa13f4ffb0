"""The repository's docs stand alone: every file they point at is in the repository.

docs/*.md, README.md and CONTRIBUTING.md are read as text (no tool, no network). A relative link
must resolve to a file inside the repository (no ``../shared/...``), and its ``#anchor`` to a
heading or an ``<a id>`` of that file; a Markdown file named anywhere must be one of the
repository's; every test or benchmark script named must exist; and every figure section of
docs/benchmarks.md names the command that produces its figures. A target or a figure cited from a
file the repository does not hold cannot be checked by whoever reads it, so none may be cited.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"

LINK = re.compile(r"\]\(([^)\s]+)\)")
URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s)>\]]+")
EXTERNAL = re.compile(r"\[[^\]]*\]\([a-z][a-z0-9+.-]*://[^)\s]*\)|[a-z][a-z0-9+.-]*://[^\s)>\]]+")
MD_NAME = re.compile(r"(?<![\w/.-])((?:\.\./|\./)*[\w./-]*[\w-]\.md)\b")
TEST_PATH = re.compile(r"(?<![\w/.-])(tests/[\w/.-]+\.py)\b")
BENCH_NAME = re.compile(r"(?<![\w/.-])(bench_\w+\.py)\b")
ANCHOR_ID = re.compile(r'<a id="([^"]+)"></a>')
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(h) for h in HEADING.findall(text)} | set(ANCHOR_ID.findall(text))


def inside(path: Path) -> bool:
    resolved = path.resolve()
    return resolved == ROOT or ROOT in resolved.parents


def repository_markdown() -> set[str]:
    """Names of the Markdown files the repository holds (a doc may name one by its name alone)."""
    names = set()
    for _, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("lab-out", "build", "dist")]
        names.update(f for f in files if f.endswith(".md"))
    return names


def prose(doc: Path) -> str:
    """The doc's text without external links and addresses: what it says of this repository."""
    return EXTERNAL.sub("", doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in LINK.findall(doc.read_text()):
        if URL.match(target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path) if path else doc
        if not inside(dest) or not dest.exists():
            bad.append(f"{target}: not a file of the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading or <a id> '{anchor}' in {rel(dest.resolve())}")
    assert not bad, f"{rel(doc)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_no_path_leaves_the_repository(doc: Path) -> None:
    text = prose(doc)
    # "../x" relative to the doc; ".../x" (an elided prefix) is not a path
    named = [m.group(0).rstrip(".") for m in re.finditer(r"(?<![\w.])(?:\.\./)+[\w./-]*", text)]
    climbing = [n for n in named if not inside(doc.parent / n) or not (doc.parent / n).exists()]
    assert not climbing, f"{rel(doc)} names paths that are not the repository's: {climbing}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_markdown_files_named_are_the_repositorys(doc: Path) -> None:
    known = repository_markdown()
    text = prose(doc)
    missing = sorted({name for name in MD_NAME.findall(text)
                      if Path(name).name not in known or not inside(doc.parent / name)})
    assert not missing, f"{rel(doc)} names Markdown files the repository does not hold: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_test_and_benchmark_scripts_named_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = [p for p in TEST_PATH.findall(text) if not (ROOT / p).is_file()]
    if doc == BENCHMARKS:
        missing += [n for n in BENCH_NAME.findall(text) if not (ROOT / "tests" / "bench" / n).is_file()]
    assert not missing, f"{rel(doc)} names scripts that do not exist: {sorted(set(missing))}"


def test_every_benchmark_section_names_its_command() -> None:
    """Each section with figures (a table) says, in a code span, the command that produces them."""
    text = BENCHMARKS.read_text()
    sections = re.split(r"^(?=#{2,3} )", text, flags=re.M)
    command = re.compile(r"`(?:sudo )?\.venv/bin/(?:python|x0tta)\b[^`]*`")
    without = [s.splitlines()[0] for s in sections
               if s.startswith("#") and "\n|---" in s and not s.startswith("## Targets")
               and not command.search(s)]
    assert not without, f"sections of docs/benchmarks.md with figures and no command: {without}"


def test_every_target_names_a_script_of_the_repository() -> None:
    targets = BENCHMARKS.read_text().split("\n## Targets\n", 1)
    assert len(targets) == 2, "docs/benchmarks.md has no '## Targets' section"
    rows = [line for line in targets[1].splitlines() if line.startswith("| ") and not line.startswith("| area")]
    assert rows
    for row in rows:
        scripts = TEST_PATH.findall(row)
        assert scripts and all((ROOT / s).is_file() for s in scripts), row
