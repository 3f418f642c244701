"""Running the application: uvicorn on a socket we bind, in a thread, with our limits.

:class:`Server` binds first (so a bad address fails before anything else and
port 0 is known at once), then serves in a background thread with its own
event loop; :func:`run` serves until SIGTERM or SIGINT. Several processes can
serve one socket (:mod:`suture.server.http.workers`).
"""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from suture.errors import ListenError, ServerError
from suture.server.config import ServerConfig, parse_listen
from suture.server.fleet.context import Fleet
from suture.server.http import app as application
from suture.server.http.protocol import protocol_class

BACKLOG = 1024  # connections the kernel queues for accept (capped by net.core.somaxconn)
START_TIMEOUT = 30.0  # s for uvicorn to start
FD_RESERVE = 48  # open files kept out of the connection cap: logs, the repository's files
FDS_PER_DB_CONNECTION = 3  # SQLite: the database, its WAL, its shared memory


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT``.

    Raises:
        UsageError: not HOST:PORT.
        ListenError: the address cannot be bound.
    """
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ListenError(
            f"cannot listen on {listen}: {e.strerror or e}",
            hint="pick a free port with --listen HOST:PORT",
        ) from e
    sock.set_inheritable(True)  # for worker processes
    return sock


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft if soft != resource.RLIM_INFINITY else 65536


def connection_cap(config: ServerConfig) -> int:
    """How many connections one process keeps open at most (below its file limit)."""
    if config.limits.max_connections:
        return config.limits.max_connections
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - FD_RESERVE - FDS_PER_DB_CONNECTION * config.db_pool)


def _loop() -> str:
    try:
        import uvloop  # noqa: F401, PLC0415 - optional: a faster event loop
    except ImportError:
        return "asyncio"
    return "uvloop"


class Server:
    """One server process's HTTP side on a bound socket (see the module docstring)."""

    def __init__(self, fleet: Fleet, config: ServerConfig, sock: socket.socket) -> None:
        self.fleet = fleet
        self.config = config
        self._sock = sock
        limits = config.limits
        trusted = ",".join(config.trusted_proxies)
        uv = uvicorn.Config(
            application.build(fleet, access_log=config.access_log),
            http=protocol_class(limits, connection_cap(config)),
            loop=_loop(),
            lifespan="on",
            log_config=None,
            access_log=False,
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            server_header=False,
            timeout_keep_alive=int(limits.idle_timeout),
            timeout_graceful_shutdown=10,
            backlog=BACKLOG,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
        )
        try:
            uv.load()  # TLS files and the app are checked now, not in the thread
        except (OSError, ssl.SSLError) as e:
            raise ServerError(f"cannot use the TLS certificate or key: {e}") from e
        self._uvicorn = uvicorn.Server(uv)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port`` as bound (the real port when 0 was asked for)."""
        host, port = self._sock.getsockname()[:2]
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def start(self, poll_interval: float = 0.0) -> None:
        """Serve in a background thread; returns once it serves.

        Raises:
            ServerError: it did not start.
        """
        del poll_interval  # the thread stops within uvicorn's own 0.1 s tick
        self._thread = threading.Thread(
            target=self._uvicorn.run,
            kwargs={"sockets": [self._sock]},
            name="suture-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerError("the HTTP server did not start; see its log")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving (requests under way finish), close the socket and the database."""
        if self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join()
            self._thread = None
        self._sock.close()
        self.fleet.store.close()


def run(server: Server, ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly; ``ready`` gets the URL once serving."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    old: dict[int, Any] = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        ready(server.url)
        while not stopping.wait(3600):
            pass
    finally:
        server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
