"""Every shared test helper is written once: in the test kit (``tests/kit/``), or in the package
module the benchmarks and the lab share it from. A wait loop, a clock, a certificate factory, a
namespace helper, a command runner, a standalone context, a server's stop or a free port written
again in a test module fails here; use the kit's (docs/testing.md, "The test kit") or grow it.

Commands have two runners: ``tests.kit.netns.sh`` on the host (integration tests, host benchmarks)
and ``x0tta.lab.netns.run`` (argv) / ``shell`` (a command line) inside the lab's guest (the engine
and the check modules in tests/lab/). ``run`` itself is not listed: scenario runners, CLI commands
and a lab's ``run`` share the name; its copies go by the names below.

Functions and classes are found by name anywhere in a module - nested in a test too - but not as
methods: a ``wait_for`` method of a clock, or a collector's ``wait_for(keys)``, is that object's
own behaviour, not a copy of a helper.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# name -> the one module that may define it (None: nowhere - a copy by another name of a kit helper)
HOMES: dict[str, str | None] = {
    # waiting on a condition
    "until": "tests/kit/wait.py",
    "until_sync": "tests/kit/wait.py",
    "took": "tests/kit/wait.py",
    "wait_for": None,
    "wait_until": None,
    "_wait": None,
    "_until": None,
    "_wait_for": None,
    "_wait_until": None,
    "poll_until": None,
    "eventually": None,
    # clocks
    "ManualClock": "tests/kit/clock.py",
    "Clock": "x0tta/clock.py",
    "SystemClock": "x0tta/clock.py",
    "FakeClock": None,
    # certificates
    "TestCA": "tests/kit/pki.py",
    "make_cert": None,
    "make_ca": None,
    "make_leaf": None,
    "self_signed": None,
    "issue_cert": None,
    # network namespaces
    "scratch_netns": "tests/kit/netns.py",
    "run_script": "tests/kit/netns.py",
    "netns": "x0tta/lab/netns.py",
    "in_netns": None,
    "setns": None,
    "enter_netns": None,
    # running a command
    "sh": "tests/kit/netns.py",
    "shell": "x0tta/lab/netns.py",
    "_sh": None,
    "_shell": None,
    "run_cmd": None,
    "_run_cmd": None,
    "run_command": None,
    "_run_command": None,
    "netns_exec": None,
    "run_in_netns": None,
    # a subsystem outside the agent
    "StandaloneContext": "x0tta/telemetry/testing.py",
    "FakeContext": "x0tta/peer/testing.py",  # the peer subsystem's, on top of it
    # servers: their ports and their stop
    "free_port": "tests/kit/ports.py",
    "free_ports": "tests/kit/ports.py",
    "stop_process": "tests/kit/procs.py",
    "kill_process": None,
    # fakes of what the services talk to
    "FakeNet": "tests/kit/datanet.py",
    "GoldenKernel": "tests/kit/batadv.py",
    "golden_socket": "tests/kit/batadv.py",
}


def definitions(source: str) -> list[tuple[str, int]]:
    """(name, line) of every function and class in ``source`` that is not a method."""
    tree = ast.parse(source)
    methods = {id(node) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for node in cls.body}
    return [(node.name, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and id(node) not in methods]


def misplaced(files: dict[str, str]) -> list[str]:
    """``path:line name`` for every helper defined outside its home (``files``: path -> source)."""
    out = []
    named = re.compile(r"\b(?:def|class)\s+(?:" + "|".join(map(re.escape, HOMES)) + r")\b")
    for path, source in sorted(files.items()):
        if not named.search(source):  # parse only what may define one of them
            continue
        for name, line in sorted(definitions(source), key=lambda d: d[1]):
            if name in HOMES and HOMES[name] != path:
                home = HOMES[name]
                out.append(f"{path}:{line} {name} (" + (f"use {home}" if home else "a copy of a kit helper") + ")")
    return out


def test_no_shared_test_helper_is_defined_twice():
    files = {str(p.relative_to(ROOT)): p.read_text()
             for tree in ("tests", "x0tta") for p in (ROOT / tree).rglob("*.py")}
    assert misplaced(files) == []
    for name, home in HOMES.items():  # the homes are real: each defines its helper, once
        if home is not None:
            assert [n for n, _ in definitions(files[home])].count(name) == 1, (name, home)


def test_the_check_finds_a_copy_nested_in_a_test_but_not_a_method():
    copy = '''
async def test_something():
    async def until(pred):
        pass

class Collector:
    async def wait_for(self, keys):
        pass

class FakeClock:
    pass

def free_port():
    return 0

def sh(cmd, check=True):
    pass
'''
    assert misplaced({"tests/unit/x/test_copy.py": copy, "tests/kit/wait.py": "async def until(p): pass\n"}) == [
        "tests/unit/x/test_copy.py:3 until (use tests/kit/wait.py)",
        "tests/unit/x/test_copy.py:10 FakeClock (a copy of a kit helper)",
        "tests/unit/x/test_copy.py:13 free_port (use tests/kit/ports.py)",
        "tests/unit/x/test_copy.py:16 sh (use tests/kit/netns.py)",
    ]
