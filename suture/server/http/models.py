"""The API's typed models (pydantic): they validate bodies and queries, and make the document.

``/openapi.json`` is generated from these models (:mod:`suture.server.http.openapi`).

The formats the agent speaks are not written here: :func:`model_of` builds
their models from the ``TypedDict`` forms of :mod:`suture.contract`, rule for
rule (a :class:`~suture.contract.fields.Text` becomes a pattern and a maximum
length, a :class:`~suture.contract.fields.Whole` a range...). The operators'
formats (keys, rollouts, queries, answers) are the server's own and are
written here.

Request models are strict (``"2"`` is not a level, ``true`` is not 1) and
closed (an unknown field is refused). Query strings are text: their whole
numbers are read by :data:`QueryInt`, which takes ASCII digits only (``²``
passes ``str.isdigit``).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Annotated, Any, Literal, Optional, get_args, get_origin, is_typeddict

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
)

from suture import timefmt
from suture.contract import checkin, directive, enrolment
from suture.contract.fields import Items, Text, Whole, optional_of, shape, unwrap
from suture.contract.targets import CHANNELS, RELEASE
from suture.server.fleet import paging
from suture.server.fleet.views import CVE_ID, INACTIVE_AFTER, MAX_INACTIVE_AFTER, STATUSES

STRICT = ConfigDict(strict=True, extra="forbid")
MAX_TAGS = 32
TAG = "^[A-Za-z0-9][A-Za-z0-9._:/=+-]{0,63}$"  # no quotes, no spaces: labels
TIME = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"  # ISO 8601, UTC

# --- models of the contract's forms ------------------------------------------------------

_NAMES = {
    checkin.Checkin3: "Checkin",
    checkin.Checkin2: "Checkin2",
    checkin.Checkin1: "Checkin1",
    checkin.KernelForm: "Kernel",
    checkin.LibraryForm: "Library",
    checkin.ProcessesForm: "Processes",
    enrolment.EnrolRequest: "Enrolment",
    enrolment.EnrolAnswer: "EnrolAnswer",
    directive.DirectiveForm: "Directive",
    directive.CheckinAnswer: "CheckinAnswer",
}


@functools.cache
def model_of(form: type) -> type[BaseModel]:
    """The strict, closed pydantic model of a contract form (built once per form)."""
    hints, required, _ = shape(form)
    fields: dict[str, Any] = {
        key: (_type(hint), ... if key in required else None) for key, hint in hints.items()
    }
    return create_model(_NAMES.get(form, form.__name__), __config__=STRICT, **fields)


def _type(hint: Any) -> Any:  # noqa: PLR0911 - one return per kind of hint
    base, rules = unwrap(hint)
    if (inner := optional_of(base)) is not None:
        return Optional[_type(Annotated[(inner, *rules)] if rules else inner)]  # noqa: UP045
    if get_origin(base) is Literal or base is bool:
        return base
    if base is str:
        text = next(r for r in rules if isinstance(r, Text))
        return Annotated[str, StringConstraints(max_length=text.max_len, pattern=text.form)]
    if base is int:
        whole = next((r for r in rules if isinstance(r, Whole)), None)
        return Annotated[int, Field(ge=whole.low, le=whole.high)] if whole else int
    if get_origin(base) is list:
        items = next(r for r in rules if isinstance(r, Items))
        return Annotated[list[_type(get_args(base)[0])], Field(max_length=items.max_items)]  # type: ignore[misc]
    if get_origin(base) is dict:
        items = next(r for r in rules if isinstance(r, Items))
        key, value = get_args(base)
        return Annotated[dict[_type(key), _type(value)], Field(max_length=items.max_items)]  # type: ignore[misc]
    if is_typeddict(base):
        return model_of(base)
    raise TypeError(f"no model for the hint {hint!r}")


Checkin = model_of(checkin.Checkin3)
Checkin2 = model_of(checkin.Checkin2)
Checkin1 = model_of(checkin.Checkin1)
Library = model_of(checkin.LibraryForm)
Enrolment = model_of(enrolment.EnrolRequest)
EnrolAnswer = model_of(enrolment.EnrolAnswer)
CheckinAnswer = model_of(directive.CheckinAnswer)

# --- the operators' request bodies -------------------------------------------------------

Level = Annotated[int, Field(ge=0, le=checkin.MAX_LEVEL)]
Tag = Annotated[str, StringConstraints(pattern=TAG, max_length=64)]
Hours = Annotated[float, Field(ge=0, allow_inf_nan=False)]
BuildId = Annotated[str, StringConstraints(pattern=checkin.BUILD_ID_OR_NONE, max_length=128)]
Release = Annotated[str, StringConstraints(pattern=RELEASE, max_length=100)]


def _when(text: str) -> str:
    timefmt.parse(text)  # a ValueError refuses it
    return text


def unix_time(text: str) -> float:
    """A time of :data:`TIME` form as unix time."""
    return timefmt.parse(text)


class KeyRequest(BaseModel):
    """A new registration key."""

    model_config = STRICT
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = []
    note: Annotated[str, StringConstraints(max_length=200, pattern="^[^\\x00-\\x1f\\x7f]*$")] = ""
    max_hosts: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    expires_at: Annotated[str, StringConstraints(pattern=TIME), AfterValidator(_when)] | None = None


class Halt(BaseModel):
    """An operator's halt: of every build, or of one (``release`` and ``build_id``)."""

    model_config = STRICT
    level: Level
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
    release: Release | None = None
    build_id: BuildId | None = None


class Resume(BaseModel):
    """Lift the halts: every one, or one build's."""

    model_config = STRICT
    release: Release | None = None
    build_id: BuildId | None = None


class LevelBody(BaseModel):
    """A level."""

    model_config = STRICT
    level: Level


class Unroll(BaseModel):
    """Send hosts back to a level; null ends the unroll."""

    model_config = STRICT
    level: Level | None


class HostRevoke(BaseModel):
    """Revoke a host's token."""

    model_config = STRICT
    allow_reenrol: bool = False


class HaltRecord(BaseModel):
    """A halt of one kernel build."""

    level: Level
    reason: str = ""
    at: str = ""


class Policy(BaseModel):
    """A channel's rollout policy (see suture.server.fleet.rollout)."""

    model_config = STRICT
    delay_hours: Hours = 0.0
    canary_tags: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
        Field(max_length=MAX_TAGS),
    ] = []
    canary_percent: Annotated[int, Field(ge=0, le=100)] = 0
    canary_hours: Hours | None = None
    promoted_level: Level = 0
    sticky: dict[Annotated[str, StringConstraints(max_length=64)], Level] = {}
    failure_threshold: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.2
    min_attempts: Annotated[int, Field(ge=1, le=10_000_000)] = 5
    halted_level: Level | None = None
    halt_reason: Annotated[str, StringConstraints(max_length=200)] = ""
    halted_at: Annotated[str, StringConstraints(max_length=40)] = ""
    resumed_level: Level | None = None
    build_halts: dict[Annotated[str, StringConstraints(max_length=300)], HaltRecord] = {}
    build_resumed: dict[Annotated[str, StringConstraints(max_length=300)], Level] = {}
    unroll_to: Level | None = None


# --- query strings ---------------------------------------------------------------------


def _digits(value: object) -> object:
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise ValueError("not a whole number")
        return int(value)
    return value


def _flag(value: object) -> object:
    if isinstance(value, str):
        if value not in ("true", "false", "1", "0"):
            raise ValueError("not true or false")
        return value in ("true", "1")
    return value


def _blank(value: object) -> object:
    return None if value == "" else value


QueryInt = Annotated[int, BeforeValidator(_digits)]
QueryFlag = Annotated[bool, BeforeValidator(_flag)]
QUERY = ConfigDict(strict=True, extra="forbid")
Limit = Annotated[QueryInt, Field(ge=1, le=paging.MAX_LIMIT, description="rows in a page (200)")]
Cursor = Annotated[
    str,
    StringConstraints(pattern="^[A-Za-z0-9_-]{1,400}$"),
    Field(description="the next_cursor of the page before"),
]
InactiveAfter = Annotated[
    QueryInt,
    Field(ge=1, le=MAX_INACTIVE_AFTER, description=f"s of silence: inactive ({INACTIVE_AFTER})"),
]
Cve = Annotated[str, StringConstraints(pattern=CVE_ID)]


class HostsQuery(BaseModel):
    """Filters of GET /api/v1/hosts (they combine)."""

    model_config = QUERY
    release: Annotated[str, StringConstraints(max_length=128)] = ""
    build_id: Annotated[str, StringConstraints(max_length=128)] = ""
    level: Annotated[QueryInt, Field(ge=0, le=checkin.MAX_LEVEL)] | None = None
    state: Annotated[
        Literal["patched", "unpatched", "failed", "unsupported"] | None, BeforeValidator(_blank)
    ] = None
    status: Annotated[Literal[STATUSES] | None, BeforeValidator(_blank)] = None  # type: ignore[valid-type]
    tag: Annotated[str, StringConstraints(max_length=64)] = ""
    channel: Annotated[str, StringConstraints(max_length=32)] = ""
    cve: Annotated[Cve | None, BeforeValidator(_blank)] = None
    inactive_after: InactiveAfter | None = None
    cursor: Cursor | None = None
    limit: Limit | None = None


class ExposedQuery(BaseModel):
    """GET /api/v1/exposed."""

    model_config = QUERY
    cve: Cve
    inactive_after: InactiveAfter | None = None
    kind: Literal["exposed", "partial", "no_fix", "fixed"] | None = None
    cursor: Cursor | None = None
    limit: Limit | None = None


class InactiveQuery(BaseModel):
    """Only the inactivity threshold."""

    model_config = QUERY
    inactive_after: InactiveAfter | None = None


class ExportQuery(BaseModel):
    """GET /api/v1/export."""

    model_config = QUERY
    format: Literal["json", "csv"] = "json"
    inactive_after: InactiveAfter | None = None
    cursor: Cursor | None = None
    limit: Limit | None = None


class VexQuery(BaseModel):
    """GET /api/v1/hosts/{host_id}/vex."""

    model_config = QUERY
    format: Literal["signed", "openvex"] = "signed"


class EventsQuery(BaseModel):
    """A host's history, a page at a time."""

    model_config = QUERY
    cursor: Cursor | None = None
    limit: Limit | None = None


class KeyRevokeQuery(BaseModel):
    """DELETE /api/v1/registration-keys/{key_id}."""

    model_config = QUERY
    revoke_hosts: QueryFlag = False


# --- answers (for the document; handlers build the JSON, the tests check it) ----------------


class Answer(BaseModel):
    """Every answer carries format 1."""

    format: Literal[1]


class Error(Answer):
    """A refusal or a failure."""

    ok: Literal[False]
    error: str = Field(description="e.g. CheckinError, unauthorized, not_found")
    message: str
    field: str | None = Field(default=None, description="the refused field, when one is")


class KernelOut(BaseModel):
    """A kernel build."""

    release: str
    build_id: str


class Host(BaseModel):
    """A host with its last report."""

    host_id: str
    hostname: str
    kernel: KernelOut
    level: int
    state: Literal["patched", "unpatched", "failed", "unsupported"]
    active: bool = Field(description="checked in within inactive_after seconds")
    status: Literal[STATUSES]  # type: ignore[valid-type]
    last_error: str | None
    agent_version: str
    patches: list[str]
    channel: str
    uptime: int | None
    functions: list[str]
    attempted_level: int
    userspace: list[Library] = Field(  # type: ignore[valid-type]
        description="its library builds with a userspace level, as its last check-in gave them"
    )
    tags: list[str]
    address: str
    first_seen: str
    last_seen: str
    token: Literal["active", "revoked", "none"] = Field(description="its host token")
    key_id: str


class HostBrief(BaseModel):
    """A host in a list of exposure or export."""

    host_id: str
    hostname: str
    kernel: KernelOut
    channel: str
    level: int
    state: Literal["patched", "unpatched", "failed", "unsupported"]
    active: bool
    status: Literal[STATUSES]  # type: ignore[valid-type]
    last_seen: str
    fixed_by: dict[str, Any] | None = None
    reason: str | None = None
    libraries: list[dict[str, Any]] | None = Field(
        default=None,
        description="its library builds that have or lack the CVE's fix (userspace rows)",
    )


class ExportRow(HostBrief):
    """A host in the export."""

    tags: list[str]
    cves_fixed: list[str]
    cves_partial: list[str] = Field(description="fixed in memory in some processes only")


class Event(BaseModel):
    """A change of a host's kernel, level, attempted level or state."""

    seq: int
    at: str
    kernel: KernelOut
    level: int
    attempted_level: int
    state: str
    last_error: str | None


class LevelInfo(BaseModel):
    """A live level of one kernel build and channel, from the signed metadata."""

    release: str
    build_id: str
    channel: str
    level: int
    name: str
    cves: list[str]
    published: float | None = Field(description="unix time, s")
    tested: Literal["passed", "failed", "untested"]
    kind: Literal["kernel", "userspace"] = Field(
        description="userspace: a library build's level (release is its soname)"
    )


class RegistrationKey(BaseModel):
    """A registration key (never its secret)."""

    key_id: str
    tags: list[str]
    note: str
    created_at: str
    revoked: bool
    max_hosts: int | None
    expires_at: str | None
    expired: bool
    enrolled: int


class HostsAnswer(Answer):
    """A page of hosts."""

    hosts: list[Host]
    next_cursor: str | None


class HostAnswer(Answer):
    """One host and the newest page of its history."""

    host: Host
    cves_fixed: list[str] = Field(description="by its live kernel level, or in every process")
    cves_partial: list[str] = Field(description="fixed in memory in some processes only")
    history: list[Event]
    history_next_cursor: str | None


class EventsAnswer(Answer):
    """A page of a host's history."""

    events: list[Event]
    next_cursor: str | None


class Done(Answer):
    """An action done."""

    ok: Literal[True]


class HostDone(Done):
    """An action on a host."""

    host_id: str


class LevelsAnswer(Answer):
    """Every live level."""

    levels: list[LevelInfo]


class PolicyAnswer(Answer):
    """A channel's policy."""

    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    policy: Policy


class PolicyDone(PolicyAnswer):
    """A channel's policy, changed."""

    ok: Literal[True]


class KeysAnswer(Answer):
    """The registration keys."""

    keys: list[RegistrationKey]


class NewKey(RegistrationKey):
    """A new key, with its secret (shown once)."""

    format: Literal[1]
    ok: Literal[True]
    registration_key: str


class KeyRevoked(Done):
    """A revoked key."""

    key_id: str
    revoked: Literal[True]
    hosts_revoked: int


class Counts(BaseModel):
    """Hosts of each kind."""

    exposed: int
    partial: int = Field(description="fixed in some processes of a library build only")
    fixed: int
    no_fix: int


class ExposedAnswer(Answer):
    """Hosts exposed to a CVE, with no fix for their build, fixed; a page of each."""

    cve: str
    inactive_after: int
    counts: Counts
    builds_with_fix: list[dict[str, Any]]
    exposed: list[HostBrief]
    partial: list[HostBrief]
    no_fix: list[HostBrief]
    fixed: list[HostBrief]
    next_cursors: dict[str, str | None]


class SummaryAnswer(Answer):
    """Hosts per build, level and state; failures; totals."""

    inactive_after: int
    totals: dict[str, Any]
    groups: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    libraries: list[dict[str, Any]] = Field(
        description="hosts per library build, channel, userspace level and state"
    )


class ExportAnswer(Answer):
    """A page of the export."""

    hosts: list[ExportRow]
    next_cursor: str | None


class OpenVEX(BaseModel):
    """An OpenVEX v0.2.0 document."""

    model_config = ConfigDict(populate_by_name=True)
    context: Literal["https://openvex.dev/ns/v0.2.0"] = Field(alias="@context")
    id: str = Field(alias="@id")
    author: str
    role: str
    timestamp: str
    version: int
    tooling: str
    statements: list[dict[str, Any]]


class SignedVex(Answer):
    """An OpenVEX document and its Ed25519 signature."""

    document: OpenVEX
    algorithm: Literal["Ed25519"]
    signature: str = Field(description="base64 Ed25519 over the canonical JSON")
    public_key: str = Field(description="base64, the 32 raw bytes")


class VexKey(Answer):
    """The key OpenVEX signatures verify with."""

    algorithm: Literal["Ed25519"]
    key_id: str
    public_key: str
    public_key_pem: str
    signed_bytes: str


class Health(Answer):
    """The server, its database and the repository's metadata."""

    ok: bool
    checks: dict[str, Any]


def is_finite(value: float) -> bool:
    """True for a number that is neither infinite nor NaN."""
    return math.isfinite(value)


def ascii_digits(text: str) -> bool:
    """True for whole numbers written in ASCII digits (what a form field may hold)."""
    return bool(re.fullmatch("[0-9]{1,18}", text))
