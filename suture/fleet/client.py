"""Calls to the fleet API with the admin token: JSON in, JSON out, Suture errors on failure.

The standard library's client is enough for an operator's few requests.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

from suture.agent.http import describe
from suture.errors import FleetError, UsageError

SERVER_ENV = "SUTURE_FLEET_SERVER"
TOKEN_ENV = "SUTURE_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
TIMEOUT = 30  # s
EXPORT_PAGE = 1000  # hosts per page of an export


@dataclass(frozen=True)
class FleetClient:
    """A server and the admin token to call it with."""

    server: str
    token: str

    @classmethod
    def from_options(cls, server: str | None, token_file: Path | None) -> FleetClient:
        """From ``--server``/``--admin-token-file``, else the environment.

        Raises:
            UsageError: no server, not http(s), or no token.
        """
        url = server or os.environ.get(SERVER_ENV, "")
        if urlparse(url).scheme not in ("http", "https"):
            raise UsageError(
                "no fleet server given",
                hint=f"give --server http(s)://HOST:PORT or set ${SERVER_ENV}",
            )
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as e:
                raise UsageError(f"cannot read {token_file}: {e.strerror}") from e
        else:
            token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise UsageError(
                "no admin token given",
                hint=f"give --admin-token-file (the file 'suture serve' wrote) or set ${TOKEN_ENV}",
            )
        return cls(url.rstrip("/"), token)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON answer of ``method path``.

        Raises:
            FleetError: the server cannot be reached, or refused (its message is kept).
        """
        return json.loads(self._raw(method, path, body, query)[0])  # type: ignore[no-any-return]

    def export(self, fmt: str) -> bytes:
        """The whole export (every page), as CSV (one header line) or JSON (format 1)."""
        query = {"format": fmt, "limit": str(EXPORT_PAGE)}
        if fmt == "json":
            hosts: list[Any] = []
            cursor = ""
            while True:
                page = self.call(
                    "GET", "/api/v1/export", query={**query, "cursor": cursor} if cursor else query
                )
                hosts += page["hosts"]
                cursor = page.get("next_cursor") or ""
                if not cursor:
                    return (
                        json.dumps({"format": 1, "hosts": hosts}, sort_keys=True).encode() + b"\n"
                    )
        body, cursor = self._raw("GET", "/api/v1/export", None, query)
        while cursor:
            more, cursor = self._raw("GET", "/api/v1/export", None, {**query, "cursor": cursor})
            body += more.split(b"\n", 1)[1]  # each page starts with the header line
        return body

    def raw(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> bytes:
        """The answer's bytes (CSV exports, OpenVEX documents)."""
        return self._raw(method, path, body, query)[0]

    def _raw(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        query: dict[str, str] | None,
    ) -> tuple[bytes, str]:
        """The answer's bytes and the next page's cursor (``X-Next-Cursor``), if any."""
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - http(s) only, checked
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
                payload: bytes = answer.read()
                return payload, answer.headers.get("X-Next-Cursor", "")
        except urllib.error.HTTPError as e:
            raise _refused(e) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise FleetError(
                f"cannot reach the fleet server at {url}: {describe(e)}",
                hint="check --server and that 'suture serve' runs there",
            ) from e


def _refused(e: urllib.error.HTTPError) -> FleetError:
    try:
        detail = json.loads(e.read(64 << 10))
        message = str(detail.get("message", ""))
    except (ValueError, OSError):
        message = ""
    hint = {
        401: "the admin token is wrong: use the file 'suture serve --admin-token-file' wrote",
        403: "the server refuses this (is it started with --admin-token-file?)",
    }.get(e.code, "")
    return FleetError(f"the fleet server answered {e.code}: {message or e.reason}", hint=hint)
