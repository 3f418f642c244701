"""The check-in an agent sends about its host (formats 1 to 3), and the parsed form of it.

Format 2 adds optional fields for the fleet view: ``channel``, ``uptime``
(s), ``functions`` (``object:function`` live now) and ``attempted_level``
(the level the agent's last cycle tried; above ``level`` when it failed).
Format 3 is format 2 and ``userspace``: one row per library build with a
userspace level (docs/adr/0018-userspace-live-patches.md), its level, CVEs,
state and process counts. A row's ``state`` must agree with its counts
(``patched``: every process of that build runs the level; ``partial``: some
do; ``unpatched``: none), and a build has one row: what a form cannot say
is checked by :func:`accept`.

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
from suture.contract.targets import BUILD_ID, RELEASE
from suture.errors import CheckinError, FormatError

FORMAT = 3  # the newest; formats 1 (without the fleet fields) and 2 (without userspace) are read
FORMATS = (1, 2, 3)
MAX_BODY = 64 * 1024  # bytes; a check-in is well under 4 KiB
STATES = ("patched", "unpatched", "failed", "unsupported")
MAX_PATCHES = 64
MAX_LEVEL = 1_000_000
MAX_ERROR = 4096  # characters of last_error
MAX_FUNCTIONS = 512
MAX_UPTIME = 100 * 365 * 86400  # s
DEFAULT_CHANNEL = "stable"
MAX_LIBRARIES = 32  # userspace rows (a host runs a handful of library builds)
MAX_CVES = 128  # CVE ids of one userspace row
MAX_PROCESSES = 4_194_304  # a count of processes: PID_MAX_LIMIT on 64-bit kernels
MAX_REASONS = 16  # reasons processes were refused, in one row

HOST_ID = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # machine-id, UUID, FQDN
HOSTNAME = "^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$"
BUILD_ID_OR_NONE = "^(?:[0-9a-f]{16,128})?$"  # "": a kernel that has none
AGENT_VERSION = "^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,63}$"
PATCH = "^[A-Za-z0-9_-]{1,64}$"  # kernel module names
CHANNEL = "^[a-z][a-z0-9-]{0,31}$"
FUNCTION = "^[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.$-]{1,128}$"
CVE = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # CVE-2026-1234, GHSA-...: no quotes, no spaces
REASON = "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"  # why a process was refused: init, seccomp, ...

State = Literal["patched", "unpatched", "failed", "unsupported"]
Level = Annotated[int, Whole(0, MAX_LEVEL)]
HostId = Annotated[str, Text(128, HOST_ID)]
Function = Annotated[str, Text(200, FUNCTION)]
Count = Annotated[int, Whole(0, MAX_PROCESSES)]


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


class ProcessesForm(TypedDict):
    """The processes that map one library build: how many run the level, and why others do not."""

    patched: Count
    unpatched: Count  # not reached yet (started since, say)
    failed: Count  # the apply failed in them
    refused: Annotated[dict[Annotated[str, Text(64, REASON)], Count], Items(MAX_REASONS)]


class LibraryForm(TypedDict):
    """One library build with a userspace level: ``libc.so.6`` of one GNU build id, say."""

    soname: Annotated[str, Text(100, RELEASE)]  # named in the repository as a kernel release is
    build_id: Annotated[str, Text(128, BUILD_ID)]
    level: Level
    name: Annotated[str, Text(64, PATCH)]
    cves: Annotated[list[Annotated[str, Text(64, CVE)]], Items(MAX_CVES)]
    state: Literal["patched", "partial", "unpatched"]
    processes: ProcessesForm


class Checkin3(CheckinCommon):
    """Check-in format 3: format 2 and the userspace rows."""

    format: Literal[3]
    channel: NotRequired[Annotated[str, Text(32, CHANNEL)]]
    uptime: NotRequired[Annotated[int, Whole(0, MAX_UPTIME)]]
    functions: NotRequired[
        Annotated[list[Annotated[str, Text(200, FUNCTION)]], Items(MAX_FUNCTIONS)]
    ]
    attempted_level: NotRequired[Level]
    userspace: Annotated[list[LibraryForm], Items(MAX_LIBRARIES)]


FORMS: dict[int, type] = {1: Checkin1, 2: Checkin2, 3: Checkin3}


@dataclass(frozen=True)
class Library:
    """A userspace row of a check-in: one library build, its level, and its processes."""

    soname: str
    build_id: str
    level: int
    name: str
    cves: tuple[str, ...]
    state: str  # patched, partial or unpatched (see the module docstring)
    patched: int  # processes
    unpatched: int
    failed: int
    refused: tuple[tuple[str, int], ...] = ()  # (reason, processes), by reason

    @property
    def left(self) -> int:
        """Processes of this build that do not run the level (unpatched, failed or refused)."""
        return self.unpatched + self.failed + sum(n for _, n in self.refused)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Library":
        """From a row that passed its form."""
        p = doc["processes"]
        return cls(
            soname=doc["soname"],
            build_id=doc["build_id"],
            level=doc["level"],
            name=doc["name"],
            cves=tuple(doc["cves"]),
            state=doc["state"],
            patched=p["patched"],
            unpatched=p["unpatched"],
            failed=p["failed"],
            refused=tuple(sorted(p["refused"].items())),
        )

    def to_document(self) -> LibraryForm:
        """The row as the check-in (and the server's API) gives it."""
        return {
            "soname": self.soname,
            "build_id": self.build_id,
            "level": self.level,
            "name": self.name,
            "cves": list(self.cves),
            "state": self.state,  # type: ignore[typeddict-item]
            "processes": {
                "patched": self.patched,
                "unpatched": self.unpatched,
                "failed": self.failed,
                "refused": dict(self.refused),
            },
        }


def library_state(patched: int, left: int) -> str:
    """The state a row's counts give: every process patched, some, or none."""
    if not patched:
        return "unpatched"
    return "partial" if left else "patched"


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
    userspace: tuple[Library, ...] = ()  # by build id

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> "Checkin":
        """From a document that passed its form (no check here: :func:`accept` checks)."""
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
            userspace=tuple(
                sorted(
                    (Library.from_document(row) for row in doc.get("userspace", ())),
                    key=lambda row: row.build_id,
                )
            ),
        )

    def to_document(self) -> Checkin2 | Checkin3:
        """The check-in as format 3 with userspace rows, else as format 2 (what agents send)."""
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
        if self.userspace:
            rows = [row.to_document() for row in self.userspace]
            return {**doc, "format": 3, "userspace": rows}
        return doc


def form_of(data: object) -> type:
    """The form (:class:`Checkin1`, :class:`Checkin2`, :class:`Checkin3`) a check-in says it is.

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
        return accept(validate(form, data))
    except FormatError as e:
        raise CheckinError(e.message, field=e.field) from e


def accept(doc: dict[str, Any]) -> Checkin:
    """A document that passed its form, once the checks a form cannot say pass too.

    Each userspace row's ``state`` must be the one its process counts give
    (a row that says ``patched`` while processes run the old code would make
    its CVEs look fixed), and a library build has one row.

    Raises:
        CheckinError: ``field`` names the row's field (``userspace[1].state``).
    """
    seen: set[str] = set()
    for i, row in enumerate(doc.get("userspace", ())):
        if row["build_id"] in seen:
            raise CheckinError(
                f"userspace[{i}].build_id: library build {row['build_id']} has a row already",
                field=f"userspace[{i}].build_id",
            )
        seen.add(row["build_id"])
        lib = Library.from_document(row)
        if lib.state != library_state(lib.patched, lib.left):
            raise CheckinError(
                f"userspace[{i}].state: {lib.state} does not agree with the process counts "
                f"({lib.patched} patched, {lib.left} not)",
                field=f"userspace[{i}].state",
            )
    return Checkin.from_document(doc)


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
