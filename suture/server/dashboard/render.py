"""Pages rendered through Jinja2 templates, every value escaped (autoescape), no scripts at all.

The templates are in ``templates/``; the one stylesheet is served by the
server itself (``/ui/dashboard.css``): the dashboard needs no network beyond
the server, and its Content-Security-Policy allows nothing else (no script,
no inline style, no frame, forms only to itself).
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode

import jinja2

from suture import timefmt
from suture.server.http.replies import Reply

CSS_PATH = "/ui/dashboard.css"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NAV = (
    ("/", "Overview"),
    ("/kernels", "Builds"),
    ("/cves", "CVEs"),
    ("/hosts", "Hosts"),
    ("/rollouts", "Rollouts"),
)


def url(*segments: object, **query: object) -> str:
    """A dashboard path from its segments (each percent-encoded) and a query string."""
    path = "/" + "/".join(quote(str(s), safe="") for s in segments)
    args = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(args) if args else "")


def when(unix: float | None) -> str:
    """Unix time as ISO 8601 (UTC), "" for none."""
    if unix is None:
        return ""
    return timefmt.utc(unix)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates, with autoescape on for every one of them."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("suture.server.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(url=url, when=when, nav=NAV)
    return env


def html(
    template: str,
    title: str,
    *,
    csrf: str = "",
    flash: str = "",
    current: str = "",
    status: int = HTTPStatus.OK,
    **context: Any,
) -> Reply:
    """A page: ``template`` filled in, with the security headers."""
    page = (
        environment()
        .get_template(template)
        .render(title=title, csrf=csrf, flash=flash, current=current, **context)
    )
    return Reply(
        body=page.encode(),
        status=status,
        media_type="text/html; charset=utf-8",
        headers=dict(SECURITY_HEADERS),
    )


def redirect(location: str, **headers: str) -> Reply:
    """303 See Other to a path of this server."""
    return Reply(
        status=HTTPStatus.SEE_OTHER,
        body=b"",
        media_type="text/plain",
        headers={"Location": location, **headers},
    )
