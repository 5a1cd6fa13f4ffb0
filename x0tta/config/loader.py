"""Reading settings from a TOML file and ``X0TTA_*`` environment overrides.

Environment overrides name a key path with double underscores between levels:
``X0TTA_METRICS__PORT=9100`` sets ``[metrics] port``. The value is read as a TOML value when it
parses as one (``9100``, ``true``, ``["eth0"]``) and as a plain string otherwise, so
``X0TTA_NODE__ID=r1`` needs no quotes.

Keys that moved to another section (:data:`MOVED`) are still taken where they were: the value is
moved to its new place before the settings are built, and each move is reported back to the
caller as a :class:`MovedKey` (the agent logs ``config_key_deprecated``, ``x0tta config check``
prints it). Setting both the old and the new key to different values is a problem, not a guess.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from x0tta.common.tables import merge_tables
from x0tta.config.fields import ConfigError, Problem, build
from x0tta.config.schema import AgentSettings

DEFAULT_PATH = "/etc/x0tta/agent.toml"
ENV_PREFIX = "X0TTA_"

# (old section, old key) -> (new section, new key). The guard's keys left [probes] when the guard
# became a subsystem of its own (2026-12); drop an entry once no supported config can carry it.
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("probes", "guard_mode"): ("guard", "mode"),
    ("probes", "admitted_macs"): ("guard", "admitted_macs"),
    ("probes", "admitted_map_size"): ("guard", "admitted_map_size"),
}


@dataclass(frozen=True)
class MovedKey:
    """A deprecated key found in a config (or an X0TTA_* variable) and taken as its new one."""

    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.old} is deprecated and was taken as {self.new}: rename it to {self.new}"


def move_keys(data: Mapping[str, Any], problems: list[Problem]) -> tuple[dict[str, Any], list[MovedKey]]:
    """``data`` with every key of :data:`MOVED` at its new place, and what was moved."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    moved: list[MovedKey] = []
    for (section, key), (new_section, new_key) in MOVED.items():
        old_table = out.get(section)
        if not isinstance(old_table, dict) or key not in old_table:
            continue
        value = old_table.pop(key)
        old, new = f"{section}.{key}", f"{new_section}.{new_key}"
        target = out.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue  # the build reports the new section itself as not a table
        if new_key in target and target[new_key] != value:
            expected = f"nothing: it is the deprecated name of {new}, which is also set; keep {new} only"
            problems.append(Problem(old, value, expected))
            continue
        target[new_key] = value
        moved.append(MovedKey(old, new))
    return out, moved


def parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = parse_env_value(raw)
    return tree


def parse_settings(
    text: str,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    moved: list[MovedKey] | None = None,
) -> AgentSettings:
    """Settings from TOML text plus overrides; raises :class:`ConfigError` listing every problem.
    Deprecated keys that were taken are appended to ``moved`` when given."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", "<file>", f"valid TOML ({exc})")]) from None
    data = merge_tables(data, env_overrides(environ or {}))
    problems: list[Problem] = []
    data, found = move_keys(data, problems)
    if moved is not None:
        moved.extend(found)
    settings = build(AgentSettings, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return settings


def load_settings(
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    moved: list[MovedKey] | None = None,
) -> AgentSettings:
    """Read ``path`` (the default path when None; a missing default file means all defaults).
    Deprecated keys that were taken are appended to ``moved`` when given."""
    env = os.environ if environ is None else environ
    if path is None:
        p = Path(DEFAULT_PATH)
        if not p.exists():
            return parse_settings("", "<defaults>", env, moved)
    else:
        p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(p), [Problem("", str(p), f"a readable UTF-8 file ({reason})")]) from None
    return parse_settings(text, str(p), env, moved)
