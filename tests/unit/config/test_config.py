from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.conftest import ROOT
from x0tta.config.fields import ConfigError, walk_fields
from x0tta.config.loader import env_overrides, load_settings, parse_settings
from x0tta.config.reference import markdown_reference, toml_reference
from x0tta.config.schema import AgentSettings


def problems(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "t.toml", env)
    return [str(p) for p in info.value.problems]


def test_empty_config_is_all_defaults():
    assert parse_settings("") == AgentSettings()


def test_unknown_key_is_named_with_its_path_and_the_known_keys():
    (msg,) = problems("[metrics]\nprot = 9100\n")
    assert msg.startswith("metrics.prot: got 9100; expected no such key")
    assert "port" in msg


def test_wrong_type_names_expected_type():
    (msg,) = problems('[metrics]\nport = "9100"\n')
    assert msg == "metrics.port: got '9100'; expected an integer between 0 and 65535"


def test_out_of_range_value():
    assert problems("[tracing]\nsample_ratio = 1.5\n") == [
        "tracing.sample_ratio: got 1.5; expected a number between 0.0 and 1.0"
    ]


def test_bad_choice_and_all_problems_reported_at_once():
    got = problems('[logging]\nlevel = "loud"\n[metrics]\nport = -1\nenabled = "yes"\n')
    assert len(got) == 3
    assert any(m.startswith("logging.level: got 'loud'; expected one of 'debug'") for m in got)
    assert any(m.startswith("metrics.enabled: got 'yes'; expected a boolean") for m in got)


def test_invalid_toml():
    (msg,) = problems("[metrics\nport=1")
    assert "valid TOML" in msg


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "missing.toml", {})
    assert "a readable UTF-8 file (No such file or directory)" in str(info.value)


def test_env_overrides_parse_toml_values_and_plain_strings():
    s = parse_settings("[metrics]\nport = 1\n", environ={"X0TTA_METRICS__PORT": "9100", "X0TTA_NODE__ID": "r7"})
    assert s.metrics.port == 9100
    assert s.node.id == "r7"
    assert env_overrides({"X0TTA_LOGGING__LEVELS__MESH": "debug", "OTHER": "x"}) == {
        "logging": {"levels": {"mesh": "debug"}}
    }


def test_bad_env_override_is_reported_like_a_file_value():
    assert problems("", X0TTA_METRICS__PORT="99999") == [
        "metrics.port: got 99999; expected an integer between 0 and 65535"
    ]


def test_per_subsystem_levels_validated():
    (msg,) = problems('[logging]\nlevels = {mesh = "chatty"}\n')
    assert "logging.levels values must be one of" in msg


def test_every_field_has_a_reason():
    for path, field, _ in walk_fields(AgentSettings):
        assert len(field.metadata.get("doc", "")) > 10, f"{path} needs a doc= reason"
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        assert has_default, path


def test_committed_reference_files_are_current():
    """configs/agent.toml and docs/configuration.md are generated; regenerate with make config-reference."""
    assert (ROOT / "configs/agent.toml").read_text() == toml_reference()
    assert (ROOT / "docs/configuration.md").read_text() == markdown_reference()


def test_reference_config_and_dev_config_are_valid():
    assert load_settings(ROOT / "configs/agent.toml", {}) == AgentSettings()
    load_settings(ROOT / "configs/dev.toml", {})


def test_config_show_reads_the_global_config_option(tmp_path, capsys):
    import json

    from x0tta.cli import main as cli

    cfg = tmp_path / "a.toml"
    cfg.write_text("[metrics]\nport = 9100\n")
    assert cli.main(["--config", str(cfg), "config", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["port"] == 9100
    assert cli.main(["config", "show", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["port"] == 9100


def test_guard_keys_under_probes_are_taken_as_guard_keys():
    from x0tta.config.loader import MovedKey

    moved: list[MovedKey] = []
    old = 'guard_mode = "enforce"\nadmitted_macs = ["02:00:00:00:00:0a"]\nadmitted_map_size = 64\n'
    s = parse_settings("[probes]\npoll_interval = 1.0\n" + old, moved=moved)
    assert (s.guard.mode, s.guard.admitted_macs, s.guard.admitted_map_size) == ("enforce", ("02:00:00:00:00:0a",), 64)
    assert s.probes.poll_interval == 1.0
    assert [(m.old, m.new) for m in moved] == [
        ("probes.guard_mode", "guard.mode"),
        ("probes.admitted_macs", "guard.admitted_macs"),
        ("probes.admitted_map_size", "guard.admitted_map_size"),
    ]
    assert str(moved[0]) == "probes.guard_mode is deprecated and was taken as guard.mode: rename it to guard.mode"
    # from the environment too, and checked like the new key
    moved.clear()
    assert parse_settings("", environ={"X0TTA_PROBES__GUARD_MODE": "enforce"}, moved=moved).guard.mode == "enforce"
    assert [m.old for m in moved] == ["probes.guard_mode"]
    expected = "guard.mode: got 'block'; expected one of 'auto', 'observe', 'enforce'"
    assert problems('[probes]\nguard_mode = "block"\n') == [expected]


def test_old_and_new_guard_key_both_set():
    assert parse_settings('[probes]\nguard_mode = "enforce"\n[guard]\nmode = "enforce"\n').guard.mode == "enforce"
    (msg,) = problems('[probes]\nguard_mode = "enforce"\n[guard]\nmode = "observe"\n')
    assert msg.startswith("probes.guard_mode: got 'enforce'; expected nothing: it is the deprecated name of guard.mode")


async def test_the_agent_logs_each_deprecated_key_it_takes(tmp_path):
    from structlog.testing import capture_logs

    from x0tta.agent.app import Agent

    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[node]\nstate_dir = "{tmp_path}/s"\nruntime_dir = "{tmp_path}/r"\n')
    agent = Agent(load_settings(cfg, {}), config_path=str(cfg), environ={})
    cfg.write_text(cfg.read_text() + '[probes]\nguard_mode = "enforce"\n')
    with capture_logs() as logs:
        assert await agent.reload() is True
    assert agent.settings.guard.mode == "enforce"
    (warned,) = [e for e in logs if e["event"] == "config_key_deprecated"]
    assert (warned["log_level"], warned["old"], warned["new"]) == ("warning", "probes.guard_mode", "guard.mode")


def test_config_check_names_deprecated_keys(tmp_path, capsys):
    from x0tta.cli import main as cli

    cfg = tmp_path / "a.toml"
    cfg.write_text('[probes]\nadmitted_macs = ["02:00:00:00:00:0a"]\n')
    assert cli.main(["config", "check", str(cfg)]) == 0
    out = capsys.readouterr()
    assert "ok (1 deprecated key(s))" in out.out
    assert "probes.admitted_macs is deprecated and was taken as guard.admitted_macs" in out.err
