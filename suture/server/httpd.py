"""The HTTP server: the repository's static files, agents' check-ins, the fleet API.

The standard library's ``ThreadingHTTPServer`` (one thread per connection),
see docs/adr/0004-server.md. Routes:

- ``GET|HEAD /metadata/<file>``, ``/targets/<path>``: the repository's files
- ``GET /healthz``, ``GET /openapi.json``
- everything else: the routes of :mod:`suture.server.api` (agents' registration
  and check-ins, the fleet API for operators)
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from suture import __version__
from suture.errors import DatabaseError, ListenError, UsageError
from suture.repo.layout import Layout
from suture.server import api, openapi, static
from suture.server.catalog import Catalog
from suture.server.store import Store

DEFAULT_LISTEN = "127.0.0.1:8470"
REQUEST_TIMEOUT = 30  # seconds a connection may sit idle or trickle a request


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as a (host, port) pair.

    Raises:
        UsageError: not of that form, or the port is out of range.
    """
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8470")
    return host, int(port)


class _Handler(BaseHTTPRequestHandler):
    """One request; the server's state is on ``self.server`` (a :class:`_HTTPServer`)."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    # Headers and body go out in two writes: with Nagle on, the second waits
    # for the client's delayed ACK, 40 ms per kept-alive answer (bench/checkin.py).
    disable_nagle_algorithm = True

    _GET: ClassVar[dict[str, str]] = {
        "/healthz": "_healthz",
        "/openapi.json": "_openapi",
    }

    def version_string(self) -> str:
        """The ``Server`` header."""
        return f"suture/{__version__}"

    def do_GET(self) -> None:
        """Serve a file or a read-only endpoint."""
        self._measured(lambda: self._get(head=False))

    def do_HEAD(self) -> None:
        """As GET, headers only."""
        self._measured(lambda: self._get(head=True))

    def do_POST(self) -> None:
        """A route that takes a body."""
        self._measured(self._with_body)

    def do_PUT(self) -> None:
        """A route that takes a body."""
        self._measured(self._with_body)

    def do_DELETE(self) -> None:
        """A route that takes a body."""
        self._measured(self._with_body)

    def _not_allowed(self) -> None:
        # Without these, the standard library answers 501 Not Implemented (an HTML
        # page) to methods HTTP defines but no route takes; 405 is the answer.
        self.close_connection = True  # a body, if any, is not read
        self._measured(self._refuse_method)

    def _refuse_method(self) -> None:
        path = urlsplit(self.path).path
        if path in self._GET or path.startswith(("/metadata/", "/targets/")):
            allowed = ["GET", "HEAD"]
        elif not (allowed := api.methods(path)):
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no such path {path[:200]}")
            return
        message = f"use {' or '.join(allowed)}"
        body = {"format": 1, "ok": False, "error": "method_not_allowed", "message": message}
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, body, headers={"Allow": ", ".join(allowed)})

    # http.server calls do_<METHOD>. QUERY: the safe method with a body (OpenAPI 3.2 lists it).
    do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_QUERY = _not_allowed  # noqa: N815

    # --- request metrics (GET /metrics): every answer passes here -----------

    _status = 0

    def send_response(self, code: int, message: str | None = None) -> None:
        """Send the status line, remembering the status for the metrics."""
        self._status = int(code)
        super().send_response(code, message)

    def _measured(self, serve: Callable[[], None]) -> None:
        start, self._status = time.perf_counter(), 0
        try:
            serve()
        finally:
            self.server.context.requests.observe(
                self._route_label(), self.command, self._status, time.perf_counter() - start
            )

    def _route_label(self) -> str:
        path = urlsplit(self.path).path
        if path in self._GET:
            return path
        if path.startswith(("/metadata/", "/targets/")):
            return path[: path.index("/", 1)] + "/{path}"
        return api.pattern_of(path) or "unmatched"

    def _get(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        if path in self._GET:
            getattr(self, self._GET[path])(head)
        elif path.startswith(("/metadata/", "/targets/")):
            area, _, rel = path[1:].partition("/")
            self._static(area, unquote(rel), head)
        else:
            self._route(b"", head)

    def _with_body(self) -> None:
        path = urlsplit(self.path).path
        self.close_connection = True  # until the body has been read
        if path in self._GET or path.startswith(("/metadata/", "/targets/")):
            self._refuse_method()
            return
        length = self.headers.get("Content-Length", "0" if self.command == "DELETE" else "")
        if not length.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "length_required", "send Content-Length")
            return
        if int(length) > api.MAX_BODY:
            message = f"a request body is at most {api.MAX_BODY} bytes"
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", message)
            return
        body = self.rfile.read(int(length))
        self.close_connection = len(body) != int(length)
        self._route(body, head=False)

    def _route(self, body: bytes, head: bool) -> None:
        parts = urlsplit(self.path)
        request = api.Request(
            method=self.command,
            path=parts.path,
            query=api.parse_query(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            address=self.client_address[0],
        )
        reply = api.dispatch(self.server.context, request)
        if reply is None:
            reply = api.error(HTTPStatus.NOT_FOUND, "not_found", f"no such path {parts.path[:200]}")
        payload = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    # --- static files ---------------------------------------------------------

    def _static(self, area: str, rel: str, head: bool) -> None:
        try:
            found = static.resolve(self.server.layout, area, rel)
        except static.BadPath as e:
            self._error(HTTPStatus.BAD_REQUEST, "bad_path", str(e), head)
            return
        if found is None:
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no such file {area}/{rel}", head)
            return
        try:
            f = found.path.open("rb")
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no such file {area}/{rel}", head)
            return
        with f:
            size = f.seek(0, 2)
            f.seek(0)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", found.content_type)
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", found.cache_control)
            self.end_headers()
            if not head:
                shutil.copyfileobj(f, self.wfile, 64 * 1024)

    # --- the API --------------------------------------------------------------

    def _healthz(self, head: bool) -> None:
        try:
            self.server.store.ping()
        except DatabaseError as e:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "database", e.message, head)
            return
        self._send_json(HTTPStatus.OK, {"format": 1, "ok": True}, head)

    def _openapi(self, head: bool) -> None:
        self._send_json(HTTPStatus.OK, openapi.document(), head)

    # --- answers --------------------------------------------------------------

    def _error(self, status: HTTPStatus, error: str, message: str, head: bool = False) -> None:
        body = {"format": 1, "ok": False, "error": error, "message": message}
        self._send_json(status, body, head)

    def _send_json(
        self,
        status: HTTPStatus,
        data: dict[str, Any],
        head: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(data, sort_keys=True).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request on the server's log (stderr by default)."""
        self.server.log(f"{self.address_string()} {format % args}")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not hold up shutdown
    # socketserver's default backlog of 5 drops SYNs when a fleet's agents
    # connect together; the kernel caps it at net.core.somaxconn.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        layout: Layout,
        store: Store,
        log: Callable[[str], None],
        admin_token: str | None,
        *,
        vex_key: Any = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.layout = layout
        self.store = store
        self.log = log
        self.context = api.Context(store, layout, Catalog(layout), admin_token, log)
        self.context.vex_key = vex_key
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is one log line, not a traceback; anything else is logged whole."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            self.log(f"{client_address[0]} connection lost: {error}")
            return
        super().handle_error(request, client_address)


def _stderr(line: str) -> None:
    print(f"suture-server: {line}", file=sys.stderr, flush=True)


class Server:
    """The patch server on one address, serving one repository and one database.

    ``start`` runs it in a thread, ``stop`` ends it; :func:`run` does both
    around SIGTERM/SIGINT for the command line.
    """

    def __init__(
        self,
        layout: Layout,
        store: Store,
        listen: str = DEFAULT_LISTEN,
        log: Callable[[str], None] = _stderr,
        admin_token: str | None = None,
        *,
        vex_key: Any = None,
    ) -> None:
        """Bind the address (nothing is served until :meth:`start`).

        Raises:
            UsageError: ``listen`` is not HOST:PORT.
            ListenError: the address cannot be bound.
        """
        host, port = parse_listen(listen)
        try:
            self._httpd = _HTTPServer(
                (host, port), layout, store, log, admin_token, vex_key=vex_key
            )
        except OSError as e:
            raise ListenError(
                f"cannot listen on {listen}: {e.strerror or e}",
                hint="pick a free port with --listen HOST:PORT",
            ) from e
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the real port when 0 was asked for)."""
        host, port = self._httpd.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self, poll_interval: float = 0.5) -> None:
        """Serve in a background thread; :meth:`stop` takes up to ``poll_interval`` seconds."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(poll_interval,),
            name="suture-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and the database."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._httpd.store.close()


def run(server: Server, ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly; ``ready`` gets the URL once listening."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        ready(server.url)
        while not stopping.wait(3600):
            pass
    finally:
        server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
