"""Nested tables (parsed TOML): layering one over another. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_tables(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base`` table by table: a key in both takes ``over``'s value, except
    where both values are tables, which merge the same way. Neither argument is changed."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out
