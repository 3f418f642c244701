"""Small HTTP servers on loopback that misbehave on purpose: hostile fleet servers and mirrors.

``serving(answer)`` runs a server whose every request is answered by
``answer(request) -> Reply``; a :class:`Reply` can drip its body (or its
status line) a byte at a time. Every request seen is kept, with its headers,
so a test can tell what a third party received.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Seen:
    """One request as the server got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An answer: status, headers, body; ``drip`` s between bytes (of the head too, with
    ``drip_head``)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0
    drip_head: bool = False


@dataclass
class Server:
    """A running server: its URL and what it has seen."""

    url: str
    seen: list[Seen]


def serving(answer: Callable[[Seen], Reply]) -> contextlib.AbstractContextManager[Server]:
    """A server on 127.0.0.1 (a free port) answering with ``answer``, for a ``with`` block."""
    return _serving(answer)


@contextlib.contextmanager
def _serving(answer: Callable[[Seen], Reply]) -> Iterator[Server]:
    seen: list[Seen] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            request = Seen(self.command, self.path, dict(self.headers), self.rfile.read(size))
            seen.append(request)
            reply = answer(request)
            head = f"HTTP/1.1 {reply.status} X\r\n".encode()
            headers = {"Content-Length": str(len(reply.body)), **reply.headers}
            head += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
            try:
                self._send(head, reply.drip if reply.drip_head else 0.0)
                self._send(reply.body, reply.drip)
            except OSError:
                self.close_connection = True  # the client gave up: that is the point

        def _send(self, data: bytes, drip: float) -> None:
            if not drip:
                self.wfile.write(data)
                self.wfile.flush()
                return
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(drip)

        do_GET = do_POST = do_HEAD = _any  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def files(
    root: Path, slow: Callable[[str], Reply | None] = lambda path: None
) -> Callable[[Seen], Reply]:
    """An answer that serves ``root``'s files (404 otherwise); ``slow`` may answer some itself."""

    def answer(request: Seen) -> Reply:
        path = request.path.split("?", 1)[0].lstrip("/")
        special = slow(path)
        if special is not None:
            return special
        target = root / path
        if ".." in Path(path).parts or not target.is_file():
            return Reply(404, b"not found")
        return Reply(200, target.read_bytes())

    return answer
