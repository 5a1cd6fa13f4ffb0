"""Reading settings from a TOML file and ``X0TTA_*`` environment overrides.

Environment overrides name a key path with double underscores between levels:
``X0TTA_METRICS__PORT=9100`` sets ``[metrics] port``. The value is read as a TOML value when it
parses as one (``9100``, ``true``, ``["eth0"]``) and as a plain string otherwise, so
``X0TTA_NODE__ID=r1`` needs no quotes.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from x0tta.common.tables import merge_tables
from x0tta.config.fields import ConfigError, Problem, build
from x0tta.config.schema import AgentSettings

DEFAULT_PATH = "/etc/x0tta/agent.toml"
ENV_PREFIX = "X0TTA_"


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


def parse_settings(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Settings from TOML text plus overrides; raises :class:`ConfigError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", "<file>", f"valid TOML ({exc})")]) from None
    data = merge_tables(data, env_overrides(environ or {}))
    problems: list[Problem] = []
    settings = build(AgentSettings, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return settings


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Read ``path`` (the default path when None; a missing default file means all defaults)."""
    env = os.environ if environ is None else environ
    if path is None:
        p = Path(DEFAULT_PATH)
        if not p.exists():
            return parse_settings("", "<defaults>", env)
    else:
        p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(p), [Problem("", str(p), f"a readable UTF-8 file ({reason})")]) from None
    return parse_settings(text, str(p), env)
