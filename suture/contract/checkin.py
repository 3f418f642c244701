"""The check-in an agent sends about its host (formats 1 and 2), and the parsed form of it.

Format 2 adds optional fields for the fleet view: ``channel``, ``uptime``
(s), ``functions`` (``object:function`` live now) and ``attempted_level``
(the level the agent's last cycle tried; above ``level`` when it failed).

Every field is checked for type, size and form; anything unknown is
refused, so a new field is a new format, never a silent drop. The forms
below are the only definition: :func:`parse` checks them with the standard
library, and the server's pydantic models are built from them.
"""

# No "from __future__ import annotations": TypedDict reads NotRequired off evaluated hints.

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from suture.contract.fields import Items, Text, Whole, validate
from suture.contract.targets import RELEASE
from suture.errors import CheckinError, FormatError

FORMAT = 2  # the newest; format 1 (without the fleet fields) is still read
FORMATS = (1, 2)
MAX_BODY = 64 * 1024  # bytes; a check-in is well under 4 KiB
STATES = ("patched", "unpatched", "failed", "unsupported")
MAX_PATCHES = 64
MAX_LEVEL = 1_000_000
MAX_ERROR = 4096  # characters of last_error
MAX_FUNCTIONS = 512
MAX_UPTIME = 100 * 365 * 86400  # s
DEFAULT_CHANNEL = "stable"

HOST_ID = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # machine-id, UUID, FQDN
HOSTNAME = "^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$"
BUILD_ID_OR_NONE = "^(?:[0-9a-f]{16,128})?$"  # "": a kernel that has none
AGENT_VERSION = "^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,63}$"
PATCH = "^[A-Za-z0-9_-]{1,64}$"  # kernel module names
CHANNEL = "^[a-z][a-z0-9-]{0,31}$"
FUNCTION = "^[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.$-]{1,128}$"

State = Literal["patched", "unpatched", "failed", "unsupported"]
Level = Annotated[int, Whole(0, MAX_LEVEL)]
HostId = Annotated[str, Text(128, HOST_ID)]
Function = Annotated[str, Text(200, FUNCTION)]


class KernelForm(TypedDict):
    """The running kernel: ``uname -r`` and the GNU build id of vmlinux."""

    release: Annotated[str, Text(100, RELEASE)]
    build_id: Annotated[str, Text(128, BUILD_ID_OR_NONE)]


class CheckinCommon(TypedDict):
    """The fields of every check-in format."""

    host_id: HostId
    hostname: Annotated[str, Text(253, HOSTNAME)]
    kernel: KernelForm
    level: Level
    state: State
    last_error: NotRequired[Annotated[str | None, Text(MAX_ERROR)]]
    agent_version: Annotated[str, Text(64, AGENT_VERSION)]
    patches: Annotated[list[Annotated[str, Text(64, PATCH)]], Items(MAX_PATCHES)]


class Checkin1(CheckinCommon):
    """Check-in format 1."""

    format: Literal[1]


class Checkin2(CheckinCommon):
    """Check-in format 2: format 1 and the fleet fields."""

    format: Literal[2]
    channel: NotRequired[Annotated[str, Text(32, CHANNEL)]]
    uptime: NotRequired[Annotated[int, Whole(0, MAX_UPTIME)]]
    functions: NotRequired[
        Annotated[list[Annotated[str, Text(200, FUNCTION)]], Items(MAX_FUNCTIONS)]
    ]
    attempted_level: NotRequired[Level]


FORMS: dict[int, type] = {1: Checkin1, 2: Checkin2}


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
    channel: str = DEFAULT_CHANNEL
    uptime: int | None = None  # s
    functions: tuple[str, ...] = ()
    attempted_level: int = 0  # the level the last cycle tried to apply (0: none)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Checkin":
        """From a document that passed its form (no check here: :func:`parse` checks)."""
        return cls(
            host_id=doc["host_id"],
            hostname=doc["hostname"],
            release=doc["kernel"]["release"],
            build_id=doc["kernel"]["build_id"],
            level=doc["level"],
            state=doc["state"],
            last_error=doc.get("last_error"),
            agent_version=doc["agent_version"],
            patches=tuple(doc["patches"]),
            channel=doc.get("channel", DEFAULT_CHANNEL),
            uptime=doc.get("uptime"),
            functions=tuple(doc.get("functions", ())),
            attempted_level=doc.get("attempted_level", 0),
        )

    def to_document(self) -> Checkin2:
        """The check-in as format 2 (what a current agent sends)."""
        doc: Checkin2 = {
            "format": 2,
            "host_id": self.host_id,
            "hostname": self.hostname,
            "kernel": {"release": self.release, "build_id": self.build_id},
            "level": self.level,
            "state": self.state,  # type: ignore[typeddict-item]
            "agent_version": self.agent_version,
            "patches": list(self.patches),
            "channel": self.channel,
            "functions": list(self.functions),
            "attempted_level": self.attempted_level,
        }
        if self.uptime is not None:
            doc["uptime"] = self.uptime
        if self.last_error is not None:
            doc["last_error"] = self.last_error
        return doc


def form_of(data: object) -> type:
    """The form (:class:`Checkin1` or :class:`Checkin2`) a decoded check-in says it is.

    Raises:
        CheckinError: not an object, or its ``format`` is not one this side reads.
    """
    if not isinstance(data, dict):
        raise CheckinError("the check-in is not a JSON object")
    fmt = data.get("format")
    if type(fmt) is not int or fmt not in FORMS:
        raise CheckinError(
            f"check-in format {fmt!r} is not supported (this side reads {FORMATS})",
            field="format",
            hint="upgrade the server to the agent's version",
        )
    return FORMS[fmt]


def parse(data: object) -> Checkin:
    """Check a decoded check-in against its form.

    Raises:
        CheckinError: its ``field`` names what was refused.
    """
    form = form_of(data)
    try:
        return Checkin.from_document(validate(form, data))
    except FormatError as e:
        raise CheckinError(e.message, field=e.field) from e


def parse_json(body: bytes) -> Checkin:
    """Decode and check a check-in body.

    Raises:
        CheckinError: too large, not JSON, or a field is wrong (``field`` names which).
    """
    if len(body) > MAX_BODY:
        raise CheckinError(f"the check-in is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckinError(f"the check-in is not JSON: {e}") from e
    return parse(data)
