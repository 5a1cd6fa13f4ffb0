"""The heal and peer service tests run on the manual clock: none sleeps for real longer than 0.1 s.

A service's timers (a verification window, a re-authentication before expiry, a session timeout)
are moved by the test on ``tests.kit.clock.ManualClock``; real time is for real I/O, waited on by
condition (``tests.kit.wait.until``), never by a sleep long enough to let a timer run out. This
finds every ``asyncio.sleep(x)`` / ``time.sleep(x)`` (or a ``sleep`` imported from either) whose
``x`` is a number above :data:`LIMIT` - written as a literal or as a module-level constant - in
those test modules and in the Python scripts they embed as strings (run in a network namespace).

The tests that measure real time on a real kernel are named in :data:`REAL_TIME`, each with why.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 0.1

# the heal and peer service tests
SCOPE = ("tests/unit/heal", "tests/unit/peer", "tests/integration/peer", "tests/integration/test_heal_*.py")

# path -> why it may sleep for real
REAL_TIME: dict[str, str] = {
    "tests/integration/test_heal_liveness_net.py": (
        "probers on a real kernel (tc drops, a SIGSTOPped peer agent answered by its kernel): loss and "
        "detection are measured over real windows; the same scenarios run on the manual clock and the "
        "fake datagram net in tests/unit/heal/test_heal_datanet.py"),
}


def _number(node: ast.AST, constants: dict[str, float]) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _is_sleep(func: ast.AST, sleeps: set[str]) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "sleep" and isinstance(func.value, ast.Name) and func.value.id in ("asyncio", "time")
    return isinstance(func, ast.Name) and func.id in sleeps


def long_sleeps(source: str, limit: float = LIMIT) -> list[tuple[int, float]]:
    """(line, seconds) of every real sleep longer than ``limit`` in ``source`` and in the Python
    scripts it holds as string constants (a string that does not parse as Python is not one)."""
    tree = ast.parse(source)
    constants = {
        t.id: n for node in tree.body if isinstance(node, ast.Assign)
        for t in node.targets if isinstance(t, ast.Name) and (n := _number(node.value, {})) is not None
    }
    sleeps = {
        alias.asname or alias.name for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in ("asyncio", "time")
        for alias in node.names if alias.name == "sleep"
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_sleep(node.func, sleeps):
            arg = node.args[0] if node.args else next((k.value for k in node.keywords), None)
            seconds = _number(arg, constants) if arg is not None else None
            if seconds is not None and seconds > limit:
                found.append((node.lineno, seconds))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "sleep(" in node.value:
            try:
                inner = long_sleeps(textwrap.dedent(node.value), limit)
            except SyntaxError:
                continue
            found += [(node.lineno + line - 1, seconds) for line, seconds in inner]
    return sorted(found)


def service_test_files() -> list[Path]:
    files: set[Path] = set()
    for pattern in SCOPE:
        path = ROOT / pattern
        files |= set(path.rglob("*.py")) if path.is_dir() else set(ROOT.glob(pattern))
    return sorted(files)


def test_no_heal_or_peer_service_test_sleeps_for_real_longer_than_a_tenth_of_a_second() -> None:
    files = service_test_files()
    assert len(files) > 20  # the scope still finds the tests
    hits = [
        f"{path.relative_to(ROOT)}:{line}: sleep({seconds:g})"
        for path in files if str(path.relative_to(ROOT)) not in REAL_TIME
        for line, seconds in long_sleeps(path.read_text())
    ]
    assert hits == [], "move these onto tests.kit.clock.ManualClock, or wait on a condition:\n" + "\n".join(hits)


def test_the_real_time_ones_are_there_and_still_need_to_be() -> None:
    for path in REAL_TIME:
        assert long_sleeps((ROOT / path).read_text()), f"{path} no longer sleeps: take it off REAL_TIME"


def test_the_check_finds_each_way_of_writing_a_sleep() -> None:
    source = textwrap.dedent('''
        import asyncio, time
        from asyncio import sleep as nap
        PACE = 0.5
        SHORT = 0.02
        SCRIPT = """
        import asyncio
        async def main():
            await asyncio.sleep(3.0)
        """
        async def t():
            await asyncio.sleep(0.75)
            time.sleep(2)
            await nap(PACE)
            await asyncio.sleep(delay=1.5)
            await asyncio.sleep(0)
            await asyncio.sleep(0.1)
            await asyncio.sleep(SHORT)
            await clock.sleep(60.0)
        ''')
    assert long_sleeps(source) == [(9, 3.0), (12, 0.75), (13, 2.0), (14, 0.5), (15, 1.5)]
