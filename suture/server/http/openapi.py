"""The OpenAPI 3.1 document, generated from the endpoint table and its pydantic models.

Nothing in it is written by hand: each :class:`~suture.server.http.routing.Endpoint`
gives its path, method, caller, query model, body model and answers, and
pydantic writes the schemas. The dashboard's HTML pages are not in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from suture import __version__
from suture.contract.checkin import HOST_ID
from suture.contract.targets import CHANNELS
from suture.server.http import models
from suture.server.http.routing import Auth, CheckinBody, Endpoint, ModelBody

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "channel": {"enum": list(CHANNELS)},
    "host_id": {"type": "string", "pattern": HOST_ID},
}
_ERRORS = {
    400: "a parameter or the body is refused",
    401: "no token, or a wrong one",
    403: "refused: the server has no admin token, or the token may not do this",
    404: "no such thing",
    409: "the host id is enrolled already",
    413: "the body is over 64 KiB",
    415: "not application/json",
    429: "too many requests or failures: wait Retry-After seconds",
    503: "the database does not answer",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


Mode = Literal["validation", "serialization"]


def _models(endpoints: list[Endpoint]) -> list[tuple[type[BaseModel], Mode]]:
    found: dict[type[BaseModel], Mode] = {models.Error: "serialization"}
    for e in endpoints:
        if isinstance(e.body, ModelBody):
            found[e.body.model] = "validation"
        elif isinstance(e.body, CheckinBody):
            found.update(dict.fromkeys(e.body.forms, "validation"))
        for answer in e.doc.answers.values() if e.doc else ():
            media = answer if isinstance(answer, dict) else {"": answer}
            for schema in media.values():
                for m in schema.get("oneOf", []) if isinstance(schema, dict) else [schema]:
                    if isinstance(m, type) and issubclass(m, BaseModel):
                        found.setdefault(m, "serialization")
    return list(found.items())


def _schema(value: Any) -> dict[str, Any]:
    if isinstance(value, type) and issubclass(value, BaseModel):
        return _ref(value)
    if isinstance(value, dict) and "oneOf" in value:
        return {"oneOf": [_schema(v) for v in value["oneOf"]]}
    return dict(value)


def _parameters(e: Endpoint) -> list[dict[str, Any]]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _PATH_SCHEMAS.get(name, {"type": "string"}),
        }
        for name in _PARAM.findall(e.path)
    ]
    if e.query is None:
        return params
    props = e.query.model_json_schema()["properties"]
    for name, info in e.query.model_fields.items():
        schema = {k: v for k, v in props[name].items() if k not in ("title", "default")}
        if "anyOf" in schema:  # X | None: a query parameter is simply left out
            schema = next(s for s in schema.pop("anyOf") if s.get("type") != "null") | schema
        schema.pop("description", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": info.is_required(),
            "schema": schema,
        }
        if info.description:
            param["description"] = info.description
        params.append(param)
    return params


def _responses(e: Endpoint) -> dict[str, Any]:
    assert e.doc is not None  # noqa: S101 - only documented endpoints come here
    statuses = {503}
    if e.body is not None or e.query is not None or _PARAM.search(e.path):
        statuses.add(400)
    if e.auth is not Auth.PUBLIC:
        statuses |= {401, 403, 429}
    if e.body is not None:
        statuses |= {413, 415}
    out: dict[str, Any] = {}
    for status in sorted(statuses | set(e.doc.answers)):
        answer = e.doc.answers.get(status, models.Error)
        description = "the answer" if status < 300 else _ERRORS.get(status, "refused")
        media = answer if isinstance(answer, dict) else {"application/json": answer}
        content = {m: {"schema": _schema(s)} for m, s in media.items()}
        out[str(status)] = {"description": description, "content": content}
    return out


def _operation(e: Endpoint) -> dict[str, Any]:
    assert e.doc is not None  # noqa: S101
    words = re.sub(r"[^A-Za-z0-9]+", "_", _PARAM.sub(lambda m: m.group(1), e.path))
    op: dict[str, Any] = {
        "summary": e.doc.summary,
        "operationId": e.method.lower() + words,
        "security": [] if e.auth is Auth.PUBLIC else [{e.auth.value: []}],
        "responses": _responses(e),
    }
    if e.doc.tags:
        op["tags"] = list(e.doc.tags)
    if params := _parameters(e):
        op["parameters"] = params
    if isinstance(e.body, CheckinBody):
        schema: dict[str, Any] = {"oneOf": [_ref(m) for m in e.body.forms]}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    elif isinstance(e.body, ModelBody):
        op["requestBody"] = {
            "required": not e.body.optional,
            "content": {"application/json": {"schema": _ref(e.body.model)}},
        }
    return op


def document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the documented endpoints."""
    documented = [e for e in endpoints if e.doc is not None]
    _, defs = models_json_schema(_models(documented), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for e in documented:
        template = _PARAM.sub(lambda m: "{" + m.group(1) + "}", e.path)
        paths.setdefault(template, {})[e.method.lower()] = _operation(e)
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Suture patch server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "admin": {**bearer, "description": "the operators' admin token (sat_...)"},
                "host": {**bearer, "description": "a host's own token (sht_...) from register"},
            },
        },
        "security": [{"admin": []}],
    }
