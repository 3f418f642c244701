"""Small HTML builders for the dashboard: every value is escaped unless it is already markup.

Pages are built from :func:`el` calls rather than text templates, so there
is no place where a value from a check-in (a hostname, an error message)
goes into a page without :func:`html.escape`: only :class:`Markup`, which
only these functions make, passes through unescaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from urllib.parse import quote, urlencode

CSS_PATH = "/ui/dashboard.css"


class Markup(str):
    """Text that is already HTML (made by this module), inserted as is."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML: markup as is, anything else escaped (``None`` is empty)."""
    if isinstance(value, Markup):
        return value
    return Markup(escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    """The parts one after the other, each escaped unless markup."""
    return Markup(sep.join(esc(p) for p in parts))


def el(name: str, /, *children: object, **attrs: object) -> Markup:
    """An element; ``class_`` is ``class``, ``None``/``False`` attributes are left out.

    ``name`` and the attribute names come from this package's code, never from a request.
    """
    rendered = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        rendered.append(f" {attr}" if value is True else f' {attr}="{esc(value)}"')
    if name in ("input", "meta", "link", "br"):
        return Markup(f"<{name}{''.join(rendered)}>")
    return Markup(f"<{name}{''.join(rendered)}>{join(children)}</{name}>")


def url(*segments: str, **query: object) -> str:
    """A dashboard path from its segments (each percent-encoded) and a query string."""
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    args = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(args) if args else "")


def link(text: object, href: str) -> Markup:
    """``<a href=...>text</a>``."""
    return el("a", text, href=href)


def table(headers: Iterable[object], rows: Iterable[Iterable[object]], empty: str = "") -> Markup:
    """A table; ``empty`` is said instead when there are no rows."""
    body = [el("tr", *(el("td", cell) for cell in row)) for row in rows]
    if not body:
        return el("p", empty or "Nothing yet.", class_="empty")
    head = el("thead", el("tr", *(el("th", h) for h in headers)))
    return el("table", head, el("tbody", *body))


def hidden(name: str, value: object) -> Markup:
    """A hidden form field."""
    return el("input", type="hidden", name=name, value=value)


def state_badge(state: str) -> Markup:
    """A host state, coloured by the stylesheet."""
    return el("span", state, class_=f"state state-{state}")


NAV = (
    ("/", "Overview"),
    ("/kernels", "Kernels"),
    ("/cves", "CVEs"),
    ("/hosts", "Hosts"),
    ("/rollouts", "Rollouts"),
)


def page(title: str, *content: object, csrf: str = "", flash: str = "", current: str = "") -> bytes:
    """A whole page: the header with the navigation and logout (when logged in), then content."""
    header: list[object] = [el("span", "Suture", class_="brand")]
    if csrf:
        items = [
            el("a", text, href=href, aria_current="page" if href == current else None)
            for href, text in NAV
        ]
        logout = el(
            "form",
            hidden("csrf", csrf),
            el("button", "Log out", type="submit"),
            method="post",
            action="/logout",
            class_="logout",
        )
        header += [el("nav", *items), logout]
    body = [el("header", *header)]
    if flash:
        body.append(el("p", flash, class_="flash", role="status"))
    body.append(el("main", el("h1", title), *content))
    document = (
        "<!doctype html>\n"
        + el(
            "html",
            el(
                "head",
                el("meta", charset="utf-8"),
                el("meta", name="viewport", content="width=device-width, initial-scale=1"),
                el("title", f"{title} - Suture"),
                el("link", rel="stylesheet", href=CSS_PATH),
            ),
            el("body", *body),
            lang="en",
        )
        + "\n"
    )
    return document.encode()
