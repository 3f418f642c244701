"""The dashboard as a browser without JavaScript sees it (no tests here)."""

from __future__ import annotations

import http.client
import re
from email.message import Message
from html import unescape
from urllib.parse import urlencode, urlsplit

from suture.server import Server
from tests.support.server import ADMIN


class Client:
    """A browser without JavaScript: one cookie, no redirects followed."""

    def __init__(self, server: Server) -> None:
        self.netloc = urlsplit(server.url).netloc
        self.cookie = ""

    def request(
        self, method: str, path: str, fields: dict[str, str] | None = None
    ) -> tuple[int, Message, str]:
        conn = http.client.HTTPConnection(self.netloc, timeout=5)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read().decode()
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, Message, str]:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, Message, str]:
        return self.request("POST", path, fields)

    def login(self, token: str = ADMIN) -> tuple[int, Message, str]:
        status, headers, body = self.post("/login", {"token": token, "next": "/"})
        if "Set-Cookie" in headers:
            self.cookie = headers["Set-Cookie"].split(";")[0]
        return status, headers, body

    def csrf(self, path: str = "/") -> str:
        status, _, body = self.get(path)
        assert status == 200, body
        found = re.search(r'name="csrf" value="([^"]+)"', body)
        assert found is not None
        return found.group(1)


def text(page: str) -> str:
    """The page's text, tags dropped, entities decoded, spaces squeezed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())
