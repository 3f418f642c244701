"""Strict readers for values taken out of parsed JSON (state files, level indexes)."""

from __future__ import annotations

from typing import Any


def as_str(value: Any) -> str:
    """``value`` when it is a string. Raises TypeError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def as_int(value: Any) -> int:
    """``value`` when it is an integer (not a bool). Raises TypeError otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value
