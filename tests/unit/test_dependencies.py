"""pyproject.toml and constraints.txt agree, and the agent declares what it imports and nothing more.

``pyproject.toml`` says which packages x0tta needs and which versions it can work with (ranges);
``constraints.txt`` is the locked set the tests ran with (``make setup`` installs through it, and
``pip-audit`` audits it). Three ways they drift apart, each checked here:

* a declared dependency without a pin, or pinned outside its range;
* a pin for a package nothing needs any more (the dependency that pulled it in was dropped): the
  locked set is exactly the declared packages and what they require, transitively, with every
  extra (``fast``, ``dev``) - each such pin inside the range its dependant asks for;
* a runtime dependency that the code never imports, or a third-party import in ``x0tta/`` that is
  not declared (it would work only because something else happens to pull it in).

The requirement edges are read from the installed distributions' metadata (the venv ``make setup``
built from these two files).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# The installer's own packages: the venv comes with them, constraints.txt does not lock them
# (pip-audit's pip-api asks for pip).
INSTALLER = {"pip", "setuptools", "wheel"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    """Every requirement pyproject.toml lists: the runtime ones and those of every extra."""
    proj = project()
    reqs = [Requirement(r) for r in proj["dependencies"]]
    for extra in proj.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def pins() -> dict[NormalizedName, str]:
    out: dict[NormalizedName, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt: {line!r} is not a NAME==VERSION pin"
        key = canonicalize_name(name)
        assert key not in out, f"constraints.txt pins {name} twice"
        out[key] = version.strip()
    return out


def applies(req: Requirement, extras: set[str]) -> bool:
    marker: Marker | None = req.marker
    if marker is None:
        return True
    return any(marker.evaluate({"extra": e}) for e in extras | {""})


def closure() -> dict[NormalizedName, list[tuple[str, Requirement]]]:
    """Every package the declared ones need, transitively -> who asks for it and with which range."""
    needed: dict[NormalizedName, list[tuple[str, Requirement]]] = {}
    todo = [("pyproject.toml", r, set(r.extras)) for r in declared()]
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while todo:
        who, req, extras = todo.pop()
        name = canonicalize_name(req.name)
        needed.setdefault(name, []).append((who, req))
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            pytest.fail(f"{req.name} (asked for by {who}) is not installed: run make setup")
        for sub in map(Requirement, requires):
            if applies(sub, extras):
                todo.append((req.name, sub, set(sub.extras)))
    return needed


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    locked = pins()
    for req in declared():
        version = locked.get(canonicalize_name(req.name))
        assert version is not None, f"pyproject.toml declares {req} but constraints.txt has no pin for it"
        assert req.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {req.name}=={version}, outside pyproject.toml's range {req}")


def test_the_locked_set_is_exactly_what_the_declared_packages_need() -> None:
    locked, needed = pins(), closure()
    missing = sorted(set(needed) - set(locked) - INSTALLER)
    assert not missing, f"needed but not pinned in constraints.txt: {missing} (asked for by " + \
        ", ".join(f"{n}: {needed[n][0][0]}" for n in missing) + ")"
    unneeded = sorted(set(locked) - set(needed))
    assert not unneeded, f"constraints.txt pins packages nothing needs: {unneeded}"
    for name, asks in needed.items():
        if name in INSTALLER:
            continue
        for who, req in asks:
            assert req.specifier.contains(locked[name], prereleases=True), (
                f"{who} asks for {req}, constraints.txt pins {name}=={locked[name]}")


def imported_modules() -> set[str]:
    """Dotted names of every third-party module x0tta/ imports (both ``a.b`` and ``a.b.c`` forms)."""
    found: set[str] = set()
    for path in (ROOT / "x0tta").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "x0tta"}


def provided_modules(dist: str) -> set[str]:
    mods = set()
    for f in md.distribution(dist).files or ():
        parts = f.parts
        if parts and parts[-1].endswith((".py", ".so")) and ".." not in parts:
            name = [*parts[:-1], parts[-1].split(".")[0]]
            mods.add(".".join(name[:-1] if name[-1] == "__init__" else name))
    return mods


def test_runtime_dependencies_are_imported_and_imports_are_declared() -> None:
    imports = imported_modules()
    runtime = [Requirement(r) for r in project()["dependencies"]]
    fast = [Requirement(r) for r in project()["optional-dependencies"]["fast"]]
    covered: set[str] = set()
    for req in runtime + fast:
        used = imports & provided_modules(req.name)
        assert used, f"pyproject.toml declares {req.name} but nothing in x0tta/ imports it: drop it"
        covered |= used
    # `from a.b import name` also records a.b.name, which is no module when name is a function.
    undeclared = {m for m in imports - covered if not any(m.startswith(c + ".") or c.startswith(m + ".")
                                                           for c in covered)}
    assert not undeclared, f"x0tta/ imports modules of undeclared packages: {sorted(undeclared)}"
