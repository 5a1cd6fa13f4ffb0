"""The guest's one command runner, ``x0tta.lab.netns.run`` (argv) and ``shell`` (a command line), as the
engine and the lab's check modules call it: text out, a failure with ``check`` a StepFailed that says
the command, its exit code and stderr. Run here in this process's namespace (node None): no root."""

from __future__ import annotations

import pytest

from x0tta.lab.core.steps import StepFailed
from x0tta.lab.netns import run, shell


def test_run_gives_the_output_and_a_failure_names_the_command_code_and_stderr() -> None:
    assert run(None, "printf", "%s|", "a b", "c").stdout == "a b|c|"
    assert run(None, "cat", stdin="fed\n").stdout == "fed\n"
    assert run(None, "false", check=False).returncode == 1
    with pytest.raises(StepFailed, match=r"^/bin/sh -c echo no >&2; exit 3 failed \(3\): no$"):
        run(None, "/bin/sh", "-c", "echo no >&2; exit 3")


def test_shell_runs_a_command_line_with_its_pipes_and_lists() -> None:
    assert shell(None, "echo a | tr a b; echo c >&2").stdout == "b\n"
    assert shell(None, "echo a | tr a b; echo c >&2").stderr == "c\n"
    assert shell(None, "exit 4", check=False).returncode == 4
    assert shell(None, "true && echo then", timeout=None).stdout == "then\n"
    with pytest.raises(StepFailed, match=r"failed \(2\): only stdout$"):
        shell(None, "echo only stdout; exit 2")  # no stderr: the output says why
