"""Typed reading of a lab file's tables: every problem is collected with its key path, none raised.

Like :func:`x0tta.config.fields.build`, the lab's parsers report *all* the problems they find (e.g.
``steps[3].link: no link 'a-q'``) in one :class:`TopologyError`, so a broken scenario is fixed in one
pass and not one error per lab boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from x0tta.common.errors import PermanentError
from x0tta.lab.core.net import Netem


class TopologyError(PermanentError):
    """A topology that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, source: str, problems: list[str], message: str | None = None) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{message or f'invalid lab topology {source}'}:\n{lines}")


class Reader:
    """Typed access to one table, appending problems with their key path instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[str]) -> None:
        self.data = data
        self.path = path
        self.problems = problems

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def bad(self, key: str, message: str) -> None:
        self.problems.append(f"{self.at(key)}: {message}")

    def unknown(self, known: Iterable[str]) -> None:
        known = list(known)
        for key in self.data:
            if key not in known:
                self.bad(key, f"no such key; known keys: {', '.join(known)}")

    def str_(self, key: str, default: str | None = None, *, choices: tuple[str, ...] | None = None,
             pattern: re.Pattern[str] | None = None) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            self.bad(key, f"got {value!r}; expected a string")
            return None
        if choices and value not in choices:
            self.bad(key, f"got {value!r}; expected one of {', '.join(choices)}")
            return None
        if pattern and not pattern.fullmatch(value):
            self.bad(key, f"got {value!r}; expected a name matching {pattern.pattern}")
            return None
        return value

    def num(self, key: str, default: float | None, lo: float, hi: float, *, integer: bool = False) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        ok_type = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            self.bad(key, f"got {value!r}; expected {'an integer' if integer else 'a number'}")
            return default
        if not lo <= value <= hi:
            self.bad(key, f"got {value!r}; expected between {lo:g} and {hi:g}")
            return default
        return value if integer else float(value)

    def bool_(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.bad(key, f"got {value!r}; expected true or false")
            return default
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.bad(key, f"got {value!r}; expected a table")
            return {}
        return value

    def list_(self, key: str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.bad(key, f"got {value!r}; expected a list")
            return []
        return value


NETEM_KEYS = ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit")


def read_netem(r: Reader, base: Netem) -> Netem:
    """A link's shaping from ``r``'s netem keys, each one absent keeping ``base``'s value."""
    rate = r.num("rate_mbit", base.rate_mbit, 0.001, 100_000.0)
    return Netem(
        delay_ms=r.num("delay_ms", base.delay_ms, 0.0, 60_000.0),
        jitter_ms=r.num("jitter_ms", base.jitter_ms, 0.0, 60_000.0),
        loss_pct=r.num("loss_pct", base.loss_pct, 0.0, 100.0),
        rate_mbit=rate,
    )
