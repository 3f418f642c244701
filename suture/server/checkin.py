"""The check-in an agent sends (format 1 or 2), validated field by field before anything is stored.

Format 2 adds optional fields for the fleet view: ``channel``, ``uptime``
(s), ``functions`` (``object:function`` live now) and ``attempted_level``
(the level the agent's last cycle tried; above ``level`` when it failed).

Every field is checked for type, size and form; anything unknown is refused,
so a new field is a new format, never a silent drop. See
:func:`suture.server.openapi.document` for the same rules as a schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from suture.errors import CheckinError

FORMAT = 2  # the newest; format 1 (without the fleet fields) is still read
FORMATS = (1, 2)
MAX_BODY = 64 * 1024  # bytes; a check-in is well under 4 KiB
STATES = ("patched", "unpatched", "failed", "unsupported")
MAX_PATCHES = 64
MAX_LEVEL = 1_000_000
MAX_ERROR = 4096  # characters of last_error
MAX_FUNCTIONS = 512
MAX_UPTIME = 100 * 365 * 86400  # s

HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")  # machine-id, UUID, FQDN
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,99}$")  # as suture.repo.layout
_BUILD_ID = re.compile(r"^(?:[0-9a-f]{16,128})?$")  # "": a kernel that has none
_AGENT_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,63}$")
_PATCH = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # kernel module names

REQUIRED = frozenset(
    {"format", "host_id", "hostname", "kernel", "level", "state", "agent_version", "patches"}
)
_OPTIONAL = frozenset({"last_error"})
_OPTIONAL_2 = frozenset({"channel", "uptime", "functions", "attempted_level"})
_CHANNEL = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_FUNCTION = re.compile(r"^[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.$-]{1,128}$")
_KERNEL = frozenset({"release", "build_id"})


@dataclass(frozen=True)
class Checkin:
    """One agent's report on its host: who it is, which kernel build, which level, how it went."""

    host_id: str
    hostname: str
    release: str
    build_id: str
    level: int
    state: str
    last_error: str | None
    agent_version: str
    patches: tuple[str, ...]
    channel: str = "stable"
    uptime: int | None = None  # s
    functions: tuple[str, ...] = ()
    attempted_level: int = 0  # the level the last cycle tried to apply (0: none)


def parse(body: bytes) -> Checkin:
    """Decode and validate a check-in body.

    Raises:
        CheckinError: the body is not JSON, not format 1, or a field is wrong
            (its ``field`` names which).
    """
    if len(body) > MAX_BODY:
        raise CheckinError(f"the check-in is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckinError(f"the check-in is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckinError("the check-in is not a JSON object")
    fmt = data.get("format")
    if type(fmt) is not int or fmt not in FORMATS:
        raise CheckinError(
            f"check-in format {fmt!r} is not supported (this server reads {FORMATS})",
            field="format",
            hint="upgrade the server to the agent's version",
        )
    _keys(data, REQUIRED, _OPTIONAL | (_OPTIONAL_2 if fmt >= 2 else frozenset()), "")
    kernel = data["kernel"]
    if not isinstance(kernel, dict):
        raise CheckinError("kernel is not an object", field="kernel")
    _keys(kernel, _KERNEL, frozenset(), "kernel.")
    last_error = data.get("last_error")
    if last_error is not None:
        last_error = _string(data, "last_error", None, MAX_ERROR)
    patches = data["patches"]
    if not isinstance(patches, list) or len(patches) > MAX_PATCHES:
        raise CheckinError(f"patches is not a list of at most {MAX_PATCHES}", field="patches")
    for i, name in enumerate(patches):
        _string({"name": name}, "name", _PATCH, 64, f"patches[{i}]")
    level = data["level"]
    if type(level) is not int or not 0 <= level <= MAX_LEVEL:
        raise CheckinError(f"level is not an integer from 0 to {MAX_LEVEL}", field="level")
    state = data["state"]
    if not isinstance(state, str) or state not in STATES:
        raise CheckinError(f"state is not one of {', '.join(STATES)}", field="state")
    functions = data.get("functions", [])
    if not isinstance(functions, list) or len(functions) > MAX_FUNCTIONS:
        raise CheckinError(f"functions is not a list of at most {MAX_FUNCTIONS}", field="functions")
    for i, name in enumerate(functions):
        _string({"f": name}, "f", _FUNCTION, 200, f"functions[{i}]")
    return Checkin(
        host_id=_string(data, "host_id", HOST_ID, 128),
        hostname=_string(data, "hostname", _HOSTNAME, 253),
        release=_string(kernel, "release", _RELEASE, 100, "kernel.release"),
        build_id=_string(kernel, "build_id", _BUILD_ID, 128, "kernel.build_id"),
        level=level,
        state=state,
        last_error=last_error,
        agent_version=_string(data, "agent_version", _AGENT_VERSION, 64),
        patches=tuple(patches),
        channel=_string(data, "channel", _CHANNEL, 32) if "channel" in data else "stable",
        uptime=_integer(data, "uptime", MAX_UPTIME) if "uptime" in data else None,
        functions=tuple(functions),
        attempted_level=_integer(data, "attempted_level", MAX_LEVEL)
        if "attempted_level" in data
        else 0,
    )


def _integer(obj: dict[str, Any], key: str, limit: int) -> int:
    value = obj[key]
    if type(value) is not int or not 0 <= value <= limit:
        raise CheckinError(f"{key} is not an integer from 0 to {limit}", field=key)
    return value


def _keys(obj: dict[str, Any], required: frozenset[str], optional: frozenset[str], at: str) -> None:
    if missing := sorted(required - obj.keys()):
        raise CheckinError(f"missing field {at}{missing[0]}", field=f"{at}{missing[0]}")
    if unknown := sorted(obj.keys() - required - optional):
        raise CheckinError(f"unknown field {at}{unknown[0]}", field=f"{at}{unknown[0]}")


def _string(
    obj: dict[str, Any], key: str, form: re.Pattern[str] | None, limit: int, field: str = ""
) -> str:
    value = obj[key]
    field = field or key
    if not isinstance(value, str) or len(value) > limit:
        raise CheckinError(f"{field} is not a string of at most {limit} characters", field=field)
    if form is not None and not form.fullmatch(value):
        raise CheckinError(f"{field} {value[:80]!r} is not well formed", field=field)
    if form is None and any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise CheckinError(f"{field} holds control characters", field=field)
    return value
