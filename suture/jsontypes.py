"""Strict JSON: a parser that refuses what Python's would accept, and readers of its values.

``json.loads`` takes ``NaN`` and ``Infinity``, turns ``1e400`` into infinity,
and raises ``RecursionError`` (not ``ValueError``) on ``[[[[...``. Anything
Suture reads from outside (manifests, level indexes, state files, a server's
answers) goes through :func:`loads`, which raises ``ValueError`` for all of
them.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def loads(raw: bytes | str) -> Any:
    """Parse JSON strictly.

    Raises:
        ValueError: not UTF-8, not JSON, nested too deeply, ``NaN``/``Infinity``,
            a number out of range, or an integer of more digits than Python reads.
    """
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as e:
        raise ValueError("the JSON is nested too deeply") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8: {e}") from e


def as_str(value: Any) -> str:
    """``value`` when it is a string. Raises TypeError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def as_int(value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` when it is an integer (not a bool, not a float) within [low, high].

    Raises:
        TypeError: not an integer.
        ValueError: out of range.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {str(value)[:40]!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{str(value)[:40]} is not within {low}..{high}")
    return value
