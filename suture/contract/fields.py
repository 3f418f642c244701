"""The rules a field of a shared format carries, and a validator that reads them.

A format is a ``TypedDict`` whose fields say their rules as ``Annotated``
metadata::

    level: Annotated[int, Whole(0, 1_000_000)]
    patches: Annotated[list[Annotated[str, Text(PATCH, 64)]], Items(64)]

:func:`validate` checks a decoded JSON document against such a form with the
standard library alone (what the agent may use). The server turns the same
hints into pydantic models, so each rule is written once.

Types a form may use: ``str``, ``int`` (never ``bool``), ``bool``, ``Literal``,
``X | None``, ``list[X]``, ``dict[str, X]`` (an object whose keys are data,
such as counts by reason: its keys carry a :class:`Text` rule, the whole an
:class:`Items` rule), and nested forms; keys are required unless
``NotRequired``, and unknown keys are refused.
"""

from __future__ import annotations

import functools
import re
import types
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from suture.errors import FormatError

# Text without control characters, tab and newline aside (error messages have lines).
NO_CONTROL = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f]*$"


@dataclass(frozen=True)
class Text:
    """A string of at most ``max_len`` characters matching ``pattern`` (a full match).

    Without a pattern, any text without control characters (tab and newline
    allowed). Patterns are written so that Python's ``re`` and the server's
    pydantic (Rust ``regex``) read them alike: anchored with ``^...$``, no
    look-around.
    """

    max_len: int
    pattern: str | None = None

    @property
    def form(self) -> str:
        """The pattern that applies."""
        return self.pattern or NO_CONTROL


@dataclass(frozen=True)
class Whole:
    """An integer from ``low`` to ``high`` (a JSON ``true`` is not one)."""

    low: int
    high: int


@dataclass(frozen=True)
class Items:
    """A list of at most ``max_items`` elements (a ``dict``: entries)."""

    max_items: int


def validate(form: type, data: object, at: str = "") -> dict[str, Any]:
    """``data`` when it is a document of ``form``; the fields as given.

    Args:
        form: a ``TypedDict`` whose fields carry :class:`Text`, :class:`Whole`, :class:`Items`.
        data: a decoded JSON value.
        at: the field path of ``data`` in a larger document (``kernel.``), for messages.

    Raises:
        FormatError: a field is missing, unknown or wrong; its ``field`` names which
            (``kernel.build_id``, ``patches[3]``).
    """
    if not isinstance(data, dict):
        raise FormatError(f"{at.rstrip('.') or 'the document'} is not an object", field=at[:-1])
    hints, required, optional = shape(form)
    if missing := sorted(required - data.keys()):
        raise FormatError(f"missing field {at}{missing[0]}", field=f"{at}{missing[0]}")
    if unknown := sorted(str(k) for k in data.keys() - required - optional):
        raise FormatError(f"unknown field {at}{unknown[0][:80]}", field=f"{at}{unknown[0][:80]}")
    for name, value in data.items():
        check(hints[name], value, f"{at}{name}")
    return data


@functools.cache
def shape(form: type) -> tuple[dict[str, Any], frozenset[str], frozenset[str]]:
    """A form's fields: (name -> hint, required names, optional names)."""
    if not is_typeddict(form):
        raise TypeError(f"{form!r} is not a TypedDict")
    hints = get_type_hints(form, include_extras=True)
    required: frozenset[str] = form.__required_keys__  # type: ignore[attr-defined]
    optional: frozenset[str] = form.__optional_keys__  # type: ignore[attr-defined]
    return hints, required, optional


def unwrap(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """A hint without its ``NotRequired`` and ``Annotated`` layers: (the type, its rules)."""
    if get_origin(hint) in (NotRequired, Required):
        hint = get_args(hint)[0]
    if get_origin(hint) is Annotated:
        base, *rules = get_args(hint)
        return base, tuple(rules)
    return hint, ()


def optional_of(hint: Any) -> Any | None:
    """``X`` for ``X | None``; None for any other hint."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0]
    return None


def check(hint: Any, value: object, field: str) -> None:
    """Check one value against its hint (see the module docstring for what hints may be).

    Raises:
        FormatError: it does not pass, naming ``field``.
    """
    base, rules = unwrap(hint)
    if (inner := optional_of(base)) is not None:
        if value is None:
            return
        base = inner
    origin = get_origin(base)
    if origin is Literal:
        choices = get_args(base)
        if not any(type(value) is type(c) and value == c for c in choices):
            said = ", ".join(str(c) for c in choices)
            raise FormatError(f"{field} is not one of {said}", field=field)
    elif base is str:
        _text(value, rules, field)
    elif base is bool:
        if type(value) is not bool:
            raise FormatError(f"{field} is not true or false", field=field)
    elif base is int:
        _whole(value, rules, field)
    elif origin is list:
        _list(get_args(base)[0], value, rules, field)
    elif origin is dict:
        _mapping(get_args(base), value, rules, field)
    elif is_typeddict(base):
        validate(base, value, f"{field}.")
    else:
        raise TypeError(f"{field}: the hint {hint!r} is not one a format may use")


def _list(element: Any, value: object, rules: tuple[Any, ...], field: str) -> None:
    limit = next((r.max_items for r in rules if isinstance(r, Items)), None)
    if limit is None:
        raise TypeError(f"{field}: a list field needs an Items rule")
    if not isinstance(value, list) or len(value) > limit:
        raise FormatError(f"{field} is not a list of at most {limit}", field=field)
    for i, item in enumerate(value):
        check(element, item, f"{field}[{i}]")


def _mapping(args: tuple[Any, ...], value: object, rules: tuple[Any, ...], field: str) -> None:
    limit = next((r.max_items for r in rules if isinstance(r, Items)), None)
    if limit is None:
        raise TypeError(f"{field}: a dict field needs an Items rule")
    if not isinstance(value, dict) or len(value) > limit:
        raise FormatError(f"{field} is not an object of at most {limit} entries", field=field)
    key, element = args
    for k, v in value.items():
        check(key, k, field)  # a bad key names the object: the key itself is not a field
        check(element, v, f"{field}.{k}")


def _text(value: object, rules: tuple[Any, ...], field: str) -> None:
    rule = next((r for r in rules if isinstance(r, Text)), None)
    if rule is None:
        raise TypeError(f"{field}: a string field needs a Text rule")
    if not isinstance(value, str) or len(value) > rule.max_len:
        raise FormatError(
            f"{field} is not a string of at most {rule.max_len} characters", field=field
        )
    if not _compiled(rule.form).fullmatch(value):
        if rule.pattern is None:
            raise FormatError(f"{field} holds control characters", field=field)
        raise FormatError(f"{field} {value[:80]!r} is not well formed", field=field)


def _whole(value: object, rules: tuple[Any, ...], field: str) -> None:
    rule = next((r for r in rules if isinstance(r, Whole)), None)
    if type(value) is not int:
        raise FormatError(f"{field} is not an integer", field=field)
    if rule is not None and not rule.low <= value <= rule.high:
        raise FormatError(f"{field} is not an integer from {rule.low} to {rule.high}", field=field)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # Used with fullmatch: a "$" that matched before a final newline would not do.
    return re.compile(pattern)
