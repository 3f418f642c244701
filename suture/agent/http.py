"""The agent's small HTTP requests (check-ins, enrolment, the timestamp probe), on the stdlib.

A no-change cycle should not pay for loading urllib3 (the TUF client's HTTP
stack), so these few requests use ``urllib``. What a hostile network can do
to them is bounded here, once:

- **No redirects.** A check-in carries the host's token: a ``3xx`` is a
  failure, never followed, so the token only ever goes to the configured
  server.
- **A whole-request deadline.** ``timeout`` bounds each connect and each
  read; a server that sends one byte just before every timeout would still
  hold the agent (and its state lock) for hours. :func:`deadline` bounds the
  whole request, body included.
- **Bounded answers**: at most ``limit`` bytes are read.
- **Errors that say why**: refused, DNS, TLS, timeout, an HTTP status, with
  the URL (:func:`describe`).
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MIN_RATE = 16 << 10  # bytes/s a download must average, beyond its fixed allowance


class DeadlineError(Exception):
    """A whole request took longer than its deadline (raised by :func:`bounded`)."""


@contextlib.contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Interrupt the block with :class:`DeadlineError` after ``seconds`` of wall-clock time.

    Socket timeouts bound each read, not their sum: a server that drips its
    status line or headers one byte per read keeps ``readline`` going for
    hours. A timer signal interrupts whatever read is under way. It needs the
    main thread (where the agent runs); elsewhere the block runs unbounded
    and only the per-read timeouts and the body checks apply.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise DeadlineError(f"{what} took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def deadline(timeout: float, size: int) -> float:
    """Seconds a whole request of ``size`` bytes may take: twice the timeout, plus the transfer.

    ``timeout`` bounds each connect and each read; a whole download must
    also average :data:`MIN_RATE`.
    """
    return 2 * timeout + size / MIN_RATE


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Answers a redirect with its own status, as an error: nothing is sent to a second host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener(proxy: str = "", *, redirects: bool = False) -> urllib.request.OpenerDirector:
    """The standard library's client through ``proxy`` ("": direct); no redirects by default."""
    handlers: list[urllib.request.BaseHandler] = []
    if proxy:
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    if not redirects:
        handlers.append(_NoRedirect())
    return urllib.request.build_opener(*handlers)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: its status and at most ``limit`` bytes of its body."""

    status: int
    body: bytes


class RequestError(Exception):
    """A request that did not get a 2xx answer; ``str()`` says why, with the URL.

    Attributes:
        status: the HTTP status when the server answered (0 when it did not).
        body: the first bytes of an error answer.
    """

    def __init__(self, message: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def request(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    limit: int,
    proxy: str = "",
    redirects: bool = False,
) -> Answer:
    """Send one request and read its answer within :func:`deadline`.

    ``redirects`` follows them (for requests that carry no secret: the
    timestamp probe, as the TUF client follows a mirror's redirects).

    Raises:
        RequestError: the server could not be reached, answered an error or a
            redirect, sent more than ``limit`` bytes, or was too slow.
    """
    given = dict(headers or {})
    if any(_unsafe(k) or _unsafe(v) for k, v in given.items()):
        raise RequestError(f"{url}: a request header holds a control character; not sent")
    req = urllib.request.Request(url, data=data, headers=given, method=method)  # noqa: S310 - callers give http(s) URLs
    seconds = deadline(timeout, limit)
    end = time.monotonic() + seconds
    try:
        with (
            bounded(seconds + 1, url),
            opener(proxy, redirects=redirects).open(req, timeout=timeout) as answer,
        ):
            return Answer(answer.status, _read(answer, limit, end, url))
    except DeadlineError as e:
        raise RequestError(f"{url}: {e}; the server is too slow") from e
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            where = e.headers.get("Location", "?") if e.headers else "?"
            raise RequestError(
                f"{url} answered {e.code} (a redirect to {where[:200]}): not followed, the "
                "agent talks only to the configured server",
                e.code,
            ) from e
        body = _error_body(e)
        raise RequestError(
            f"{url} answered {e.code}: {body.decode(errors='replace')[:300]}", e.code, body
        ) from e
    except RequestError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:
        # URLError is an OSError; a malformed answer or header is an HTTPException
        # or a ValueError: either way the server did not give a usable answer.
        raise RequestError(f"{url}: {describe(e)}") from e


def _unsafe(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _error_body(e: urllib.error.HTTPError) -> bytes:
    try:
        return e.read(300)
    except (OSError, http.client.HTTPException, ValueError):
        return b""


def _read(answer: _Body, limit: int, end: float, url: str) -> bytes:
    # read1: one read of the socket at most, so that the deadline is checked
    # between two bytes of a server that drips them (read(n) waits for all n).
    chunks: list[bytes] = []
    size = 0
    while chunk := answer.read1(min(16 << 10, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestError(f"{url}: the answer is larger than {limit} bytes")
        if time.monotonic() > end:
            raise RequestError(f"{url}: the answer took longer than the whole-request deadline")
    return b"".join(chunks)


class _Body(Protocol):
    def read1(self, size: int = -1, /) -> bytes: ...


def describe(error: BaseException) -> str:
    """Why a request failed, in words an operator can act on: refused, DNS, TLS, timeout.

    Walks the chain of causes (``__cause__``, ``__context__``, urllib's and
    urllib3's ``reason``) to the first error that says; falls back to the
    innermost message.
    """
    seen: set[int] = set()
    chain: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        chain.append(e)
        for nxt in (getattr(e, "reason", None), e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    for e in chain:
        if text := _known(e):
            return text
    last = next((str(e) for e in reversed(chain) if str(e)), "")
    return last or type(error).__name__


def _known(e: BaseException) -> str:  # noqa: PLR0911 - one return per kind of failure
    name = type(e).__name__
    if isinstance(e, socket.gaierror) or name == "NameResolutionError":
        return f"DNS: the host name cannot be resolved ({_strerror(e)})"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({e.verify_message or e.reason})"
    if isinstance(e, ssl.SSLError) or name == "SSLError":
        return f"TLS: {getattr(e, 'reason', None) or e}"
    if isinstance(e, TimeoutError) or name in ("ReadTimeoutError", "ConnectTimeoutError"):
        return "timeout: the server sent nothing for the configured timeout"
    if isinstance(e, ConnectionResetError | BrokenPipeError):
        return "the connection was reset by the server"
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return ""


def _strerror(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)
