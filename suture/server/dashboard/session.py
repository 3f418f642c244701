"""Who may see the dashboard: the login, the session cookie, and the CSRF check of forms.

An operator who gives the admin token on ``/login`` gets a session
(:mod:`suture.server.fleet.sessions`, in the database, so every server
process knows it) in an HttpOnly, SameSite=Strict cookie, ``Secure`` when
the request came over TLS. The pages are ``public`` to the API's routing and
check the session themselves (:func:`page`): a page without one redirects to
the login page instead of answering 401 as the JSON API does. Every POST must
carry the session's CSRF token.

Wrong logins are counted per address in the database (``login_failures`` per
``failure_window``); past the limit the login page answers 429.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from suture.errors import RateLimitedError
from suture.server.dashboard.render import CSS_PATH, html, redirect, url
from suture.server.fleet import limits, sessions
from suture.server.fleet.sessions import LIFETIME, Session
from suture.server.http.replies import Reply
from suture.server.http.routing import Call, Endpoint

COOKIE = "suture_session"
# Where a login may go on to: a path of this server, nothing a browser could read as another
# host (// or /\), and no whitespace or control characters (browsers drop tabs and line
# breaks from URLs, so "/<TAB>/evil.example" is "//evil.example" to them).
_SAFE_NEXT = re.compile(r"^/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")


@dataclass
class View:
    """What a page handler gets beside the call: the operator's session and form fields."""

    session: Session

    def page(self, template: str, title: str, *, current: str = "", **context: Any) -> Reply:
        """A page for this session (its CSRF token in the forms, its message shown once)."""
        return html(
            template,
            title,
            csrf=self.session.csrf,
            flash=self.session.flash,
            current=current,
            **context,
        )

    def not_found(self, message: str) -> Reply:
        """A 404 page."""
        reply = self.page("message.html", "Not found", message=message, error=False, back="")
        reply.status = HTTPStatus.NOT_FOUND
        return reply


PageHandler = Callable[[Call, View], Reply]


def safe_next(target: str) -> str:
    """``target`` when it is a path of this server, else ``/``."""
    return target if _SAFE_NEXT.match(target) and len(target) <= 2000 else "/"


def refused(status: int, message: str) -> Reply:
    """A page that refuses (no session needed)."""
    return html("message.html", "Refused", message=message, error=True, back="/", status=status)


def page(method: str, path: str) -> Callable[[PageHandler], Endpoint]:
    """Declare a dashboard page: it needs a session, and a POST needs its CSRF token."""

    def declare(handler: PageHandler) -> Endpoint:
        def run(call: Call) -> Reply:
            session = sessions.get(call.fleet, call.cookies.get(COOKIE, ""))
            if session is None:
                asked = call.path + (f"?{call.query_string}" if call.query_string else "")
                return redirect(url("login", next=asked if method == "GET" else ""))
            if method == "POST" and not hmac.compare_digest(
                call.form.get("csrf", "").encode(), session.csrf.encode()
            ):
                return refused(
                    HTTPStatus.FORBIDDEN,
                    "This form is stale or did not come from this dashboard (CSRF check). "
                    "Go back, reload the page and try again.",
                )
            return handler(call, View(session))

        run.__doc__ = handler.__doc__
        return Endpoint(method, path, run, form=method == "POST", own_query=True)

    return declare


def login_form(call: Call) -> Reply:
    """The login page (or on to the page asked for when logged in already)."""
    next_path = safe_next(_query_next(call))
    if sessions.get(call.fleet, call.cookies.get(COOKIE, "")) is not None:
        return redirect(next_path)
    return html("login.html", "Log in", next=next_path, message="")


def _query_next(call: Call) -> str:
    return parse_qs(call.query_string).get("next", ["/"])[0]


def login(call: Call) -> Reply:
    """Check the admin token; a new session in a cookie, then on to the page asked for."""
    fleet = call.fleet
    next_path = safe_next(call.form.get("next", "/"))
    if fleet.admin_token is None:
        message = "This server has no admin token: start it with --admin-token-file."
        return html("login.html", "Log in", next=next_path, message=message, status=403)
    try:
        limits.check(fleet, limits.LOGIN, call.address)
    except RateLimitedError as e:
        reply = html("login.html", "Log in", next=next_path, message=e.message, status=429)
        reply.headers["Retry-After"] = str(int(e.retry_after) + 1)
        return reply
    token = call.form.get("token", "").strip()
    if not (token and hmac.compare_digest(token.encode(), fleet.admin_token.encode())):
        limits.failed(fleet, limits.LOGIN, call.address)
        fleet.log.warning("dashboard: a login with a wrong token", address=call.address)
        message = "That is not the admin token."
        return html("login.html", "Log in", next=next_path, message=message, status=401)
    session_id = sessions.create(fleet)
    fleet.log.info("dashboard: an operator logged in", address=call.address)
    secure = "; Secure" if call.scheme == "https" else ""
    cookie = f"{COOKIE}={session_id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={int(LIFETIME)}"
    return redirect(next_path, **{"Set-Cookie": cookie + secure})


@page("POST", "/logout")
def logout(call: Call, view: View) -> Reply:
    """End the session."""
    sessions.end(call.fleet, call.cookies.get(COOKIE, ""))
    gone = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    return redirect("/login", **{"Set-Cookie": gone})


def stylesheet(call: Call) -> Reply:
    """The dashboard's stylesheet, from the package (public: the login page uses it)."""
    css = resources.files("suture.server.dashboard").joinpath("static/dashboard.css").read_bytes()
    return Reply(
        body=css,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


ENDPOINTS = [
    Endpoint("GET", "/login", login_form, own_query=True),
    Endpoint("POST", "/login", login, form=True),
    logout,
    Endpoint("GET", CSS_PATH, stylesheet),
]
