"""The OpenAPI 3.1 description of the server, served at ``/openapi.json``.

Hand-written: the API is small, and the rules in :mod:`suture.server.checkin`
are the source of truth; ``tests/unit/test_server.py`` checks the two agree
on the field names.
"""

from __future__ import annotations

from typing import Any

from suture import __version__
from suture.server import checkin

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["format", "ok", "error", "message"],
    "properties": {
        "format": {"const": 1},
        "ok": {"const": False},
        "error": {"type": "string", "description": "e.g. CheckinError, not_found"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "the refused field, when one is"},
    },
}

_CHECKIN: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": sorted(checkin.REQUIRED),  # the same set the parser uses
    "properties": {
        "format": {"const": checkin.FORMAT},
        "host_id": {"type": "string", "pattern": checkin.HOST_ID.pattern},
        "hostname": {"type": "string", "maxLength": 253},
        "kernel": {
            "type": "object",
            "additionalProperties": False,
            "required": ["release", "build_id"],
            "properties": {
                "release": {"type": "string", "description": "uname -r"},
                "build_id": {"type": "string", "pattern": "^(?:[0-9a-f]{16,128})?$"},
            },
        },
        "level": {"type": "integer", "minimum": 0, "maximum": checkin.MAX_LEVEL},
        "state": {"enum": list(checkin.STATES)},
        "last_error": {"type": ["string", "null"], "maxLength": checkin.MAX_ERROR},
        "agent_version": {"type": "string", "maxLength": 64},
        "patches": {
            "type": "array",
            "maxItems": checkin.MAX_PATCHES,
            "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        },
    },
}

_HOST: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{k: v for k, v in _CHECKIN["properties"].items() if k != "format"},
        "address": {"type": "string", "description": "where the last check-in came from"},
        "first_seen": {"type": "string", "format": "date-time"},
        "last_seen": {"type": "string", "format": "date-time"},
    },
}


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _static(description: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": description,
            "parameters": [
                {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "the file; Cache-Control is no-cache for timestamp.json and "
                    "root.json, immutable for versioned and hash-prefixed files",
                    "headers": {"Cache-Control": {"schema": {"type": "string"}}},
                },
                "400": _json("Error", "the path is not a plain path inside the repository"),
                "404": _json("Error", "no such file"),
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Suture patch server", "version": __version__},
        "paths": {
            "/api/v1/checkin": {
                "post": {
                    "summary": "an agent reports its host's kernel, level and state",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Checkin"}}
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "format": {"const": 1},
                                    "ok": {"const": True},
                                    "server_time": {"type": "string", "format": "date-time"},
                                },
                            },
                            "stored",
                        ),
                        "400": _json("Error", "malformed check-in; nothing stored"),
                        "413": _json("Error", "body too large"),
                        "415": _json("Error", "not application/json"),
                    },
                }
            },
            "/api/v1/hosts": {
                "get": {
                    "summary": "every host with its last report",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "format": {"const": 1},
                                    "hosts": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Host"},
                                    },
                                },
                            },
                            "the fleet",
                        )
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "the server and its database answer",
                    "responses": {
                        "200": _json({"type": "object"}, "healthy"),
                        "503": _json("Error", "the database does not answer"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
            "/metadata/{path}": _static("TUF metadata (N.role.json, timestamp.json)"),
            "/targets/{path}": _static("a target under its hash-prefixed name"),
        },
        "components": {"schemas": {"Checkin": _CHECKIN, "Host": _HOST, "Error": _ERROR}},
    }
