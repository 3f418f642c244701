"""The OpenAPI 3.1 description of the server, served at ``/openapi.json``.

Hand-written: the API is small, and the rules in :mod:`suture.server.checkin`,
:mod:`suture.server.rollout` and the routes are the source of truth; the
schemas take their patterns and limits from there. ``tests/unit/test_server.py``
checks that every route is described, and ``tests/unit/test_fleet_queries.py``
that answers match their schemas. The dashboard's HTML pages are not part of it.
"""

from __future__ import annotations

from typing import Any

from suture import __version__
from suture.repo.layout import CHANNELS
from suture.server import checkin, queries

# --- schemas ------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], closed: bool = False, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


_STRING = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_LEVEL = {"type": "integer", "minimum": 0, "maximum": checkin.MAX_LEVEL}
_NULLABLE_LEVEL = {"type": ["integer", "null"], "minimum": 0}
_TAGS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}}
_KERNEL = _object(
    ["release", "build_id"],
    closed=True,
    release={"type": "string", "pattern": checkin._RELEASE.pattern, "description": "uname -r"},
    build_id={
        "type": "string",
        "pattern": checkin._BUILD_ID.pattern,
        "description": "GNU build id of vmlinux; empty: none (unsupported)",
    },
)
_KERNEL_OUT = _object(["release", "build_id"], release=_STRING, build_id=_STRING)
_NO_CONTROL = "^[^\\x00-\\x08\\x0b-\\x1f]*$"  # checkin.parse: no control characters but \t \n

_CHECKIN_1 = _object(
    sorted(checkin.REQUIRED),  # the same set the parser uses
    closed=True,
    format={"const": 1},
    host_id={"type": "string", "pattern": checkin.HOST_ID.pattern},
    hostname={"type": "string", "maxLength": 253, "pattern": checkin._HOSTNAME.pattern},
    kernel=_KERNEL,
    level=_LEVEL,
    state={"enum": list(checkin.STATES)},
    last_error={
        "type": ["string", "null"],
        "maxLength": checkin.MAX_ERROR,
        "pattern": _NO_CONTROL,
    },
    agent_version={"type": "string", "pattern": checkin._AGENT_VERSION.pattern},
    patches={
        "type": "array",
        "maxItems": checkin.MAX_PATCHES,
        "items": {"type": "string", "pattern": checkin._PATCH.pattern},
    },
)
_CHECKIN_2 = _object(
    sorted(checkin.REQUIRED),
    closed=True,
    **{
        **_CHECKIN_1["properties"],
        "format": {"const": 2},
        "channel": {"type": "string", "pattern": checkin._CHANNEL.pattern},
        "uptime": {"type": "integer", "minimum": 0, "maximum": checkin.MAX_UPTIME},
        "functions": {
            "type": "array",
            "maxItems": checkin.MAX_FUNCTIONS,
            "items": {"type": "string", "pattern": checkin._FUNCTION.pattern, "maxLength": 200},
        },
        "attempted_level": _LEVEL,
    },
)

_STATE = {"enum": list(checkin.STATES), "description": "unsupported for kernels without build id"}
_STATUS = {"enum": list(queries.STATUSES), "description": "inactive, or the state"}
_HOST = _object(
    [
        "host_id",
        "hostname",
        "kernel",
        "level",
        "state",
        "active",
        "status",
        "last_error",
        "agent_version",
        "patches",
        "channel",
        "uptime",
        "functions",
        "attempted_level",
        "tags",
        "address",
        "first_seen",
        "last_seen",
    ],
    host_id=_STRING,
    hostname=_STRING,
    kernel=_KERNEL_OUT,
    level={"type": "integer", "minimum": 0},
    state=_STATE,
    active={"type": "boolean", "description": "checked in within inactive_after seconds"},
    status=_STATUS,
    last_error={"type": ["string", "null"]},
    agent_version=_STRING,
    patches={"type": "array", "items": _STRING},
    channel=_STRING,
    uptime={"type": ["integer", "null"], "minimum": 0},
    functions={"type": "array", "items": _STRING},
    attempted_level={"type": "integer", "minimum": 0},
    tags={"type": "array", "items": _STRING},
    address={"type": "string", "description": "where the last check-in came from"},
    first_seen=_TIME,
    last_seen=_TIME,
)
_BRIEF = _object(
    ["host_id", "hostname", "kernel", "channel", "level", "state", "active", "status", "last_seen"],
    host_id=_STRING,
    hostname=_STRING,
    kernel=_KERNEL_OUT,
    channel=_STRING,
    level={"type": "integer", "minimum": 0},
    state=_STATE,
    active={"type": "boolean"},
    status=_STATUS,
    last_seen=_TIME,
    fixed_by=_object(["level", "name"], level={"type": "integer"}, name=_STRING),
    reason={"const": queries.NO_FIX},
)
_EVENT = _object(
    ["at", "kernel", "level", "attempted_level", "state", "last_error"],
    at=_TIME,
    kernel=_KERNEL_OUT,
    level={"type": "integer"},
    attempted_level={"type": "integer"},
    state=_STRING,
    last_error={"type": ["string", "null"]},
)
_LEVEL_INFO = _object(
    ["release", "build_id", "channel", "level", "name", "cves", "published", "tested"],
    release=_STRING,
    build_id=_STRING,
    channel=_STRING,
    level={"type": "integer"},
    name=_STRING,
    cves={"type": "array", "items": _STRING},
    published={"type": ["number", "null"], "description": "unix time, s"},
    tested={
        "enum": ["passed", "failed", "untested"],
        "description": "its signed lab test result (suture test); untested: published so",
    },
)
_NUMBER = {"type": "number", "minimum": 0}
_POLICY = _object(
    [],
    closed=True,
    delay_hours=_NUMBER,
    canary_tags={"type": "array", "items": {"type": "string", "minLength": 1}},
    canary_percent={"type": "integer", "minimum": 0, "maximum": 100},
    canary_hours={"type": ["number", "null"], "minimum": 0},
    promoted_level={"type": "integer", "minimum": 0},
    sticky={"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
    failure_threshold={"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    min_attempts={"type": "integer", "minimum": 1},
    halted_level=_NULLABLE_LEVEL,
    halt_reason=_STRING,
    halted_at=_STRING,
    resumed_level=_NULLABLE_LEVEL,
    unroll_to=_NULLABLE_LEVEL,
)
_KEY = _object(
    ["key_id", "tags", "note", "created_at", "revoked"],
    key_id=_STRING,
    tags={"type": "array", "items": _STRING},
    note=_STRING,
    created_at=_TIME,
    revoked={"type": "boolean"},
)
_OPENVEX_PROPERTIES: dict[str, Any] = {
    "@context": {"const": "https://openvex.dev/ns/v0.2.0"},
    "@id": _STRING,
    "author": _STRING,
    "role": _STRING,
    "timestamp": _TIME,
    "version": {"type": "integer"},
    "tooling": _STRING,
    "statements": {
        "type": "array",
        "items": _object(
            ["vulnerability", "products", "status"],
            vulnerability=_object(["name"], name=_STRING),
            products={"type": "array", "items": {"type": "object"}},
            status={"enum": ["fixed", "affected"]},
            status_notes=_STRING,
            action_statement=_STRING,
        ),
    },
}
_OPENVEX = _object(
    ["@context", "@id", "author", "timestamp", "version", "statements"], **_OPENVEX_PROPERTIES
)
_ERROR = _object(
    ["format", "ok", "error", "message"],
    format={"const": 1},
    ok={"const": False},
    error={"type": "string", "description": "e.g. CheckinError, not_found"},
    message=_STRING,
    field={"type": "string", "description": "the refused field, when one is"},
)

SCHEMAS: dict[str, Any] = {
    "Checkin": _CHECKIN_2,
    "Checkin1": _CHECKIN_1,
    "Host": _HOST,
    "HostBrief": _BRIEF,
    "Event": _EVENT,
    "Level": _LEVEL_INFO,
    "Policy": _POLICY,
    "RegistrationKey": _KEY,
    "OpenVEX": _OPENVEX,
    "Error": _ERROR,
}

# --- pieces of operations -----------------------------------------------------------


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = _ref(schema)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _answer(description: str, **properties: Any) -> dict[str, Any]:
    """A 200 JSON answer object with ``format`` 1 and these properties (all present)."""
    schema = _object(["format", *properties], format={"const": 1}, **properties)
    return _json(schema, description)


def _body(schema: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = _ref(schema)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_ERRORS = {
    "400": _json("Error", "a parameter or the body is refused"),
    "503": _json("Error", "the database does not answer"),
}
_ADMIN_ERRORS = {
    **_ERRORS,
    "401": _json("Error", "no admin token, or a wrong one"),
    "403": _json("Error", "the server has no admin token (--admin-token-file)"),
}
_BODY_ERRORS = {
    "411": _json("Error", "no Content-Length"),
    "413": _json("Error", "the body is over 64 KiB"),
    "415": _json("Error", "not application/json"),
}


def _op(
    summary: str,
    auth: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary}
    op["security"] = [] if auth == "public" else [{auth: []}]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    errors = _ADMIN_ERRORS if auth == "admin" else _ERRORS
    op["responses"] = {**errors, **(_BODY_ERRORS if body else {}), **responses}
    return op


_INACTIVE = _query(
    "inactive_after",
    {"type": "integer", "minimum": 1, "maximum": queries.MAX_INACTIVE_AFTER},
    f"s without a check-in before a host is inactive ({queries.INACTIVE_AFTER})",
)
_CVE = {"type": "string", "pattern": queries.CVE_ID.pattern}
_CHANNEL = _path("channel", {"enum": list(CHANNELS)})
_HOST_ID = _path("host_id", {"type": "string", "pattern": checkin.HOST_ID.pattern})
_ROLLOUT = _answer("the policy now", ok={"const": True}, channel=_STRING, policy=_ref("Policy"))
_NOT_FOUND = {"404": _json("Error", "no such thing")}


def _host_filters() -> list[dict[str, Any]]:
    return [
        _query("release", {"type": "string", "maxLength": 128}, "kernel release (uname -r)"),
        _query("build_id", {"type": "string", "maxLength": 128}, "kernel build id"),
        _query("level", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, "the level"),
        _query("state", {"enum": list(checkin.STATES)}, "the state"),
        _query("status", {"enum": list(queries.STATUSES)}, "a state of active hosts, or inactive"),
        _query("tag", {"type": "string", "maxLength": 64}, "a registration tag, exactly"),
        _query("channel", {"type": "string", "maxLength": 32}, "the channel"),
        _query("cve", _CVE, "hosts exposed to it: a fix is published for their build, not live"),
        _INACTIVE,
    ]


def _agent_paths() -> dict[str, Any]:
    register_body = _object(
        ["registration_key", "host_id"],
        format={"const": 1},
        registration_key={"type": "string", "minLength": 1},
        host_id={"type": "string", "pattern": checkin.HOST_ID.pattern},
    )
    directive = _object(
        ["max_level", "unroll"],
        max_level={"type": ["integer", "null"], "description": "null: no levels, no opinion"},
        unroll={"type": "boolean", "description": "go back down to max_level"},
    )
    return {
        "/api/v1/register": {
            "post": _op(
                "enrol a host with a registration key; its own token comes back (once)",
                "public",
                {
                    "200": _answer(
                        "enrolled", ok={"const": True}, host_id=_STRING, host_token=_STRING
                    ),
                    "403": _json("Error", "unknown or revoked registration key"),
                },
                body=_body(register_body),
            )
        },
        "/api/v1/checkin": {
            "post": _op(
                "an agent reports its host; the answer is the rollout's directive",
                "host",
                {
                    "200": _answer(
                        "stored", ok={"const": True}, server_time=_TIME, directive=directive
                    ),
                    "401": _json("Error", "no host token, or an unknown one"),
                    "403": _json("Error", "the token belongs to another host"),
                },
                body=_body({"oneOf": [_ref("Checkin"), _ref("Checkin1")]}),
            )
        },
    }


def _admin_paths() -> dict[str, Any]:
    level_body = _object(["level"], level={"type": "integer", "minimum": 0})
    return {
        "/api/v1/hosts": {
            "get": _op(
                "hosts with their last report; filters combine",
                "admin",
                {
                    "200": _answer(
                        "the hosts, by host id", hosts={"type": "array", "items": _ref("Host")}
                    )
                },
                parameters=_host_filters(),
            )
        },
        "/api/v1/hosts/{host_id}": {
            "get": _op(
                "one host and its history (newest first)",
                "admin",
                {
                    "200": _answer(
                        "the host",
                        host=_ref("Host"),
                        history={"type": "array", "items": _ref("Event")},
                    ),
                    **_NOT_FOUND,
                },
                parameters=[_HOST_ID],
            )
        },
        "/api/v1/levels": {
            "get": _op(
                "every live level of every build and channel (signed metadata)",
                "admin",
                {"200": _answer("the levels", levels={"type": "array", "items": _ref("Level")})},
            )
        },
        "/api/v1/rollouts/{channel}": {
            "get": _op(
                "a channel's rollout policy",
                "admin",
                {
                    "200": _answer("the policy", channel=_STRING, policy=_ref("Policy")),
                    **_NOT_FOUND,
                },
                parameters=[_CHANNEL],
            ),
            "put": _op(
                "replace a channel's rollout policy",
                "admin",
                {"200": _ROLLOUT, **_NOT_FOUND},
                parameters=[_CHANNEL],
                body=_body("Policy"),
            ),
        },
        "/api/v1/rollouts/{channel}/halt": {
            "post": _op(
                "stop a level from reaching more hosts",
                "admin",
                {"200": _ROLLOUT, **_NOT_FOUND},
                parameters=[_CHANNEL],
                body=_body(
                    _object(
                        ["level"],
                        level={"type": "integer", "minimum": 0},
                        reason={"type": "string"},
                    )
                ),
            )
        },
        "/api/v1/rollouts/{channel}/resume": {
            "post": _op(
                "lift a halt (no body)",
                "admin",
                {"200": _ROLLOUT, **_NOT_FOUND},
                parameters=[_CHANNEL],
            )
        },
        "/api/v1/rollouts/{channel}/promote": {
            "post": _op(
                "release levels up to this one to every host",
                "admin",
                {"200": _ROLLOUT, **_NOT_FOUND},
                parameters=[_CHANNEL],
                body=_body(level_body),
            )
        },
        "/api/v1/rollouts/{channel}/unroll": {
            "post": _op(
                "send every host back to a level (null ends the unroll)",
                "admin",
                {"200": _ROLLOUT, **_NOT_FOUND},
                parameters=[_CHANNEL],
                body=_body(_object(["level"], level=_NULLABLE_LEVEL)),
            )
        },
        "/api/v1/registration-keys": {
            "get": _op(
                "the registration keys (never the secrets)",
                "admin",
                {
                    "200": _answer(
                        "the keys", keys={"type": "array", "items": _ref("RegistrationKey")}
                    )
                },
            ),
            "post": _op(
                "a new registration key (the secret is shown once)",
                "admin",
                {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("RegistrationKey"),
                                _object(
                                    ["format", "ok", "registration_key"],
                                    format={"const": 1},
                                    ok={"const": True},
                                    registration_key=_STRING,
                                ),
                            ]
                        },
                        "the key",
                    )
                },
                body=_body(
                    _object(
                        [],
                        tags={**_TAGS},
                        note={"type": "string", "maxLength": 200},
                    )
                ),
            ),
        },
        "/api/v1/registration-keys/{key_id}": {
            "delete": _op(
                "revoke a key (enrolled hosts keep their tokens)",
                "admin",
                {
                    "200": _answer(
                        "revoked", ok={"const": True}, key_id=_STRING, revoked={"const": True}
                    ),
                    **_NOT_FOUND,
                },
                parameters=[_path("key_id", {"type": "string"})],
            )
        },
    }


def _query_paths() -> dict[str, Any]:
    hosts = {"type": "array", "items": _ref("HostBrief")}
    counts = _object(
        ["exposed", "fixed", "no_fix"],
        exposed={"type": "integer"},
        fixed={"type": "integer"},
        no_fix={"type": "integer"},
    )
    group = _object(
        ["kernel", "level", "state", "hosts", "inactive"],
        kernel=_KERNEL_OUT,
        level={"type": "integer"},
        state=_STATE,
        hosts={"type": "integer"},
        inactive={"type": "integer"},
    )
    totals = _object(
        ["hosts", "active", "inactive", "unsupported", "failed", "by_state"],
        hosts={"type": "integer"},
        active={"type": "integer"},
        inactive={"type": "integer"},
        unsupported={"type": "integer"},
        failed={"type": "integer"},
        by_state={"type": "object", "additionalProperties": {"type": "integer"}},
    )
    export_row = {
        "allOf": [
            _ref("HostBrief"),
            _object(
                ["tags", "cves_fixed"],
                tags={"type": "array", "items": _STRING},
                cves_fixed={"type": "array", "items": _STRING},
            ),
        ]
    }
    signed = _object(
        ["format", "document", "algorithm", "signature", "public_key"],
        format={"const": 1},
        document=_ref("OpenVEX"),
        algorithm={"const": "Ed25519"},
        signature={"type": "string", "description": "base64 Ed25519 over the canonical JSON"},
        public_key={"type": "string", "description": "base64, the 32 raw bytes"},
    )
    return {
        "/api/v1/exposed": {
            "get": _op(
                "hosts exposed to a CVE now, hosts with no fix for their build, hosts fixed",
                "admin",
                {
                    "200": _answer(
                        "the exposure",
                        cve=_STRING,
                        inactive_after={"type": "integer"},
                        counts=counts,
                        builds_with_fix={"type": "array", "items": {"type": "object"}},
                        exposed=hosts,
                        no_fix=hosts,
                        fixed=hosts,
                    )
                },
                parameters=[_query("cve", _CVE, "e.g. CVE-2026-1234", required=True), _INACTIVE],
            )
        },
        "/api/v1/summary": {
            "get": _op(
                "hosts per (kernel build, level, state); failures; totals",
                "admin",
                {
                    "200": _answer(
                        "the summary",
                        inactive_after={"type": "integer"},
                        totals=totals,
                        groups={"type": "array", "items": group},
                        failures={"type": "array", "items": {"type": "object"}},
                    )
                },
                parameters=[_INACTIVE],
            )
        },
        "/api/v1/export": {
            "get": _op(
                "every host with kernel, level, state, tags, CVEs fixed in memory, last seen",
                "admin",
                {
                    "200": {
                        "description": "JSON (format=json, the default) or CSV (format=csv)",
                        "content": {
                            "application/json": {
                                "schema": _object(
                                    ["format", "hosts"],
                                    format={"const": 1},
                                    hosts={"type": "array", "items": export_row},
                                )
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    }
                },
                parameters=[_query("format", {"enum": ["json", "csv"]}, "(json)"), _INACTIVE],
            )
        },
        "/api/v1/hosts/{host_id}/vex": {
            "get": _op(
                "the host's OpenVEX document, signed by the server (Ed25519)",
                "admin",
                {
                    "200": {
                        "description": "format=signed: document, signature and key; "
                        "format=openvex: the signed bytes, signature in X-Suture-Signature",
                        "headers": {"X-Suture-Signature": {"schema": _STRING}},
                        "content": {
                            "application/json": {"schema": {"oneOf": [signed, _ref("OpenVEX")]}}
                        },
                    },
                    **_NOT_FOUND,
                },
                parameters=[
                    _HOST_ID,
                    _query("format", {"enum": ["signed", "openvex"]}, "(signed)"),
                ],
            )
        },
        "/api/v1/vex-key": {
            "get": _op(
                "the public key OpenVEX signatures verify with",
                "public",
                {
                    "200": _answer(
                        "the key",
                        algorithm={"const": "Ed25519"},
                        key_id=_STRING,
                        public_key=_STRING,
                        public_key_pem=_STRING,
                        signed_bytes=_STRING,
                    )
                },
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (text exposition format 0.0.4)",
                "public",
                {
                    "200": {
                        "description": "the metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
    }


def _static(description: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": description,
            "security": [],
            "parameters": [_path("path", {"type": "string"})],
            "responses": {
                "200": {
                    "description": "the file; Cache-Control is no-cache for timestamp.json and "
                    "root.json, immutable for versioned and hash-prefixed files",
                    "headers": {"Cache-Control": {"schema": _STRING}},
                },
                "400": _json("Error", "the path is not a plain path inside the repository"),
                "404": _json("Error", "no such file"),
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Suture patch server", "version": __version__},
        "paths": {
            **_agent_paths(),
            **_admin_paths(),
            **_query_paths(),
            "/healthz": {
                "get": {
                    "summary": "the server and its database answer",
                    "security": [],
                    "responses": {
                        "200": _json(
                            _object(["format", "ok"], format={"const": 1}, ok={"const": True}),
                            "healthy",
                        ),
                        "503": _json("Error", "the database does not answer"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/metadata/{path}": _static("TUF metadata (N.role.json, timestamp.json)"),
            "/targets/{path}": _static("a target under its hash-prefixed name"),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "admin": {**bearer, "description": "the operators' admin token (sat_...)"},
                "host": {**bearer, "description": "a host's own token (sht_...) from register"},
            },
        },
        "security": [{"admin": []}],
    }
