"""Declaring settings, and turning untyped TOML data into them with every problem reported.

Settings are nested frozen dataclasses. Every field is declared with :func:`setting`, which
requires a default and the reason for it (``doc``); bounds and choices live next to it. The
reasons are not decoration: ``configs/agent.toml`` and ``docs/configuration.md`` are checked
against them by the tests, so a new field without a documented reason fails CI.

:func:`build` walks a dataclass type and a dict, and collects *all* the problems it finds (unknown
key, wrong type, out of range, not one of the choices) as :class:`Problem` records with the key
path, the bad value and what was expected, instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from x0tta.common.errors import PermanentError

_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    doc: str,
    default_factory: Any = _MISSING,
    min: float | None = None,  # noqa: A002 - reads best at the call site
    max: float | None = None,  # noqa: A002
    choices: tuple[Any, ...] | None = None,
    pattern: str | None = None,
    unit: str | None = None,
) -> Any:
    """A settings field: a default, the reason for it, and its constraints."""
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "pattern": pattern, "unit": unit}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if default is _MISSING:
        raise TypeError("every setting needs a default")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config: where, what was there, what was expected."""

    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: got {_show(self.value)}; expected {self.expected}"


class ConfigError(PermanentError):
    """A config that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list or origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a table of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if tp is type(None):
        return "nothing (omit the key)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _describe(meta: dict[str, Any], tp: Any) -> str:
    parts = [_type_name(tp)]
    if meta.get("choices"):
        parts = ["one of " + ", ".join(repr(c) for c in meta["choices"])]
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        parts.append(f"between {lo} and {hi}")
    elif lo is not None:
        parts.append(f">= {lo}")
    elif hi is not None:
        parts.append(f"<= {hi}")
    if meta.get("pattern"):
        parts.append(f"matching {meta['pattern']}")
    return " ".join(parts)


def _convert(tp: Any, value: Any, path: str, meta: dict[str, Any], out: list[Problem]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[Problem] = []
            result = _convert(arg, value, path, meta, trial)
            if not trial:
                return result
        out.append(Problem(path, value, _describe(meta, tp)))
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            out.append(Problem(path, value, "a table"))
            return None
        return build(tp, value, path, out)
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            out.append(Problem(path, value, _describe(meta, tp)))
            return None
        items = [_convert(item_tp, v, f"{path}[{i}]", meta, out) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            out.append(Problem(path, value, _describe(meta, tp)))
            return None
        return {str(k): _convert(val_tp, v, f"{path}.{k}", meta, out) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            out.append(Problem(path, value, "a boolean (true or false)"))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(Problem(path, value, _describe(meta, tp)))
            return value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(Problem(path, value, _describe(meta, tp)))
            return value
        value = float(value)
        if not math.isfinite(value):
            out.append(Problem(path, value, "a finite number"))
            return value
    elif tp is str:
        if not isinstance(value, str):
            out.append(Problem(path, value, _describe(meta, tp)))
            return value
    return _check_constraints(value, path, meta, tp, out)


def _check_constraints(value: Any, path: str, meta: dict[str, Any], tp: Any, out: list[Problem]) -> Any:
    choices = meta.get("choices")
    if choices and value not in choices:
        out.append(Problem(path, value, _describe(meta, tp)))
        return value
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and (
        (lo is not None and value < lo) or (hi is not None and value > hi)
    ):
        out.append(Problem(path, value, _describe(meta, tp)))
        return value
    pattern = meta.get("pattern")
    if pattern and isinstance(value, str) and not re.fullmatch(pattern, value):
        out.append(Problem(path, value, _describe(meta, tp)))
    return value


def build(cls: Any, data: dict[str, Any], path: str = "", out: list[Problem] | None = None) -> Any:
    """Build dataclass ``cls`` from ``data``; problems go to ``out`` (raise if ``out`` is None)."""
    top = out is None
    problems: list[Problem] = [] if out is None else out
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else key
        fld = known.get(key)
        if fld is None:
            near = [k for k in known if k.replace("_", "") == key.replace("_", "").replace("-", "")]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(
                Problem(sub, value, f"no such key{hint}; known keys: {', '.join(sorted(known))}")
            )
            continue
        before = len(problems)
        converted = _convert(hints[key], value, sub, dict(fld.metadata), problems)
        if len(problems) == before:
            kwargs[key] = converted
    result = None
    try:
        result = cls(**kwargs)
    except ValueError as exc:  # cross-field checks in __post_init__
        problems.append(Problem(path, data, str(exc)))
    if top and problems:
        raise ConfigError("<data>", problems)
    return result


def to_data(obj: Any) -> Any:
    """Settings back to plain TOML-able data (for ``x0tta config show`` and the admin API)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def walk_fields(cls: Any, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """Every leaf field of a settings tree as ``(dotted.path, field, type)``; for docs and tests."""
    rows: list[tuple[str, dataclasses.Field[Any], Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(walk_fields(tp, key + "."))
        else:
            rows.append((key, f, tp))
    return rows
