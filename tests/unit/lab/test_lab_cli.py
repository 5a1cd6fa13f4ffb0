"""``x0tta lab``: validation, and a clear refusal where the lab cannot run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from x0tta.cli import lab as lab_cli
from x0tta.lab import runner
from x0tta.lab.core.topology import TopologyError

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "lab"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="x0tta")
    lab_cli.register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def test_validate_checks_topologies_and_agent_configs(capsys):
    args = parse(["lab", "validate", *(str(CONFIGS / f"{n}.toml") for n in ("line", "ring", "grid"))])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ring.toml: ok (5 nodes, 5 links" in out and "grid.toml: ok (9 nodes, 12 links" in out


def test_validate_reports_a_bad_agent_override(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('nodes = [{ name = "a", agent = { logging = { level = "loud" } } }]\n')
    args = parse(["lab", "validate", str(bad)])
    with pytest.raises(TopologyError, match=r"nodes\.a\.agent .*logging\.level"):
        args.func(args)


def test_run_says_why_it_cannot_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(runner.os, "geteuid", lambda: 1000)
    args = parse(["lab", "run", str(CONFIGS / "ring.toml"), "--out", str(tmp_path / "out"), "--no-install"])
    assert args.func(args) == lab_cli.EX_UNAVAILABLE
    err = capsys.readouterr().err
    assert "cannot run the lab on this machine" in err and "needs root" in err


def test_preflight_names_missing_tools(monkeypatch):
    monkeypatch.setattr(runner.os, "geteuid", lambda: 0)
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    with pytest.raises(runner.LabUnavailable, match=r"missing linux\.uml, batctl") as err:
        runner.preflight(install=False)
    assert err.value.code == "uml_missing"
