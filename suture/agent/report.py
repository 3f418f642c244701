"""The agent's check-in: what this host runs and how its last cycle went; the server's answer.

The body is check-in format 2 and the answer a directive, both defined in
:mod:`suture.contract` (this module must not import the server). The host speaks with
its own token, which it gets once by enrolling with the registration key from
its configuration, and keeps in ``state_dir/host-token`` (mode 0600). The
answer carries the fleet's *directive* for this host: the highest level it
may run (a staged rollout, a halt, a sticky level for its tags), and whether
to go back down to it (an unroll).

A check-in never fails a cycle. A server that does not take it is logged and
recorded in the state, and the last directive stays in force.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from suture import __version__, jsontypes
from suture.agent import http
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import Kernel
from suture.agent.state import AgentState
from suture.contract.checkin import MAX_ERROR, MAX_FUNCTIONS, MAX_LIBRARIES
from suture.contract.directive import Directive, parse_directive
from suture.contract.enrolment import CHECKIN_PATH, REGISTER_PATH
from suture.errors import AgentStateError
from suture.fsutil import atomic_write
from suture.kernel.identity import KernelIdentity

__all__ = ["CHECKIN_PATH", "REGISTER_PATH", "TOKEN_NAME", "Directive", "checkin", "exchange"]

TOKEN_NAME = "host-token"  # noqa: S105 - a file name
MACHINE_ID = Path("/etc/machine-id")
MAX_ANSWER = 64 << 10  # bytes of a server's answer the agent reads
# What a bearer token may hold (RFC 6750's b64token): never a space or a control character.
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")


def host_id(machine_id: Path = MACHINE_ID) -> str:
    """Systemd's machine id; the host name when there is none (containers, old systems)."""
    try:
        text = machine_id.read_text().strip()
    except OSError:
        text = ""
    return text or socket.gethostname()


def checkin(
    ident: KernelIdentity,
    state: AgentState,
    live: set[str],
    *,
    channel: str = "stable",
    functions: tuple[str, ...] = (),
    uptime: int | None = None,
    host: str = "",
    refused: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The check-in body for this host as ``state`` and the kernel now stand.

    ``refused``: functions a live patch's pre-match check refused (a module
    that loaded later was not the code the level was built for); the host
    then reports ``failed`` with them as its error.
    """
    level = state.live_level(ident.release, ident.build_id, live)
    if not (ident.livepatch and ident.build_id):
        status = "unsupported"
    elif state.last_result in ("error", "held") or refused:
        status = "failed"
    elif level:
        status = "patched"
    else:
        status = "unpatched"
    body: dict[str, Any] = {
        "format": 2,
        "host_id": host or host_id(),
        "hostname": socket.gethostname(),
        "kernel": {"release": ident.release, "build_id": ident.build_id},
        "level": level,
        "state": status,
        "agent_version": __version__,
        "patches": sorted(live),
        "channel": channel,
        "functions": list(functions[:MAX_FUNCTIONS]),
        "attempted_level": state.attempted_level,
    }
    if uptime is not None:
        body["uptime"] = uptime
    error = _error_text(state)
    if refused:
        error = (
            f"pre-match: {', '.join(refused)}: not the code level {level} was built for, "
            "refused (the module was not loaded)" + (f"; {error}" if error else "")
        )
    if error:
        body["last_error"] = error[:MAX_ERROR]
    return body


def with_userspace(body: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The check-in in format 3: format 2 plus ``userspace``, one row per library build.

    Each row: ``soname``, ``build_id``, ``level``, ``name``, ``cves``, ``state``
    (``patched``: every process of that build; ``partial``: some processes
    still run the old code, so its CVEs are fixed only in part; ``unpatched``)
    and ``processes`` (``patched``, ``unpatched``, ``failed`` counts and
    ``refused`` counts by reason). A server that reads only formats 1 and 2
    refuses it; :func:`_checkin` then sends format 2 without the field.
    """
    return {**body, "format": 3, "userspace": rows[:MAX_LIBRARIES]}


def _error_text(state: AgentState) -> str:
    if state.held is not None:
        return f"level {state.held.level} is held: {state.held.reason}"
    e = state.last_error
    if not e:
        return ""
    return f"{e.get('error', 'error')}: {e.get('message', '')}"


def exchange(config: AgentConfig, kernel: Kernel, now: float) -> str | None:
    """Check in, keep the server's directive in the state; returns why it failed, or None.

    Raises:
        AgentStateError: the state cannot be read (a record that cannot be
            written afterwards is a failure returned, not raised).
    """
    if endpoint(config) is None:
        return None
    with agent_state.locked(config.state_dir):
        current = agent_state.read(config.state_dir)
    body = checkin(
        kernel.identity(),
        current,
        kernel.live_patches(),
        channel=config.channel,
        functions=kernel.functions(),
        uptime=kernel.uptime(),
        host=config.host_id,
        refused=kernel.refused(),
    )
    if config.userspace:
        from suture.agent import userlevels  # noqa: PLC0415 - a small module, no userspace import

        if user := userlevels.checkin_rows(config.state_dir):
            body = with_userspace(body, user)
    answer, failure = _checkin(config, body)
    try:
        with agent_state.locked(config.state_dir):
            current = replace(
                agent_state.read(config.state_dir), last_report=now, last_report_error=failure
            )
            directive = _directive(answer)
            if directive is not None:
                current = replace(current, max_level=directive.max_level, unroll=directive.unroll)
            agent_state.write(config.state_dir, current)
    except AgentStateError as e:
        # The exchange happened; only its record is lost. Say both.
        return f"{failure or 'checked in'}; the check-in could not be recorded: {e.message}"
    return failure


def _directive(answer: dict[str, Any] | None) -> Directive | None:
    return parse_directive(answer)  # a malformed answer changes nothing


def endpoint(config: AgentConfig) -> str | None:
    """Where check-ins go: the server's API next to the repository; None for file:// mirrors."""
    if not config.report or urlparse(config.server).scheme not in ("http", "https"):
        return None
    return config.server.rstrip("/") + CHECKIN_PATH


def _checkin(config: AgentConfig, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """POST the check-in with the host token, enrolling first (or again) when needed."""
    token = _token(config)
    if not token and not config.registration_key:
        return None, (
            "not enrolled with the fleet server: set registration_key in the agent's "
            "configuration (from 'suture fleet key create')"
        )
    if not token:
        token, failure = _enrol(config)
        if failure:
            return None, failure
    status, answer, failure = _post(config, CHECKIN_PATH, body, token)
    if status == 400 and body.get("format") == 3 and "format" in (failure or ""):
        # A server older than the userspace field: the kernel's part still gets through.
        body = {k: v for k, v in body.items() if k != "userspace"} | {"format": 2}
        status, answer, failure = _post(config, CHECKIN_PATH, body, token)
    if status == 401 and config.registration_key:  # the token was replaced or lost: enrol again
        token, failure = _enrol(config)
        if failure:
            return None, failure
        status, answer, failure = _post(config, CHECKIN_PATH, body, token)
    return answer, failure


def _token(config: AgentConfig) -> str:
    """The saved host token; "" when there is none, or when it could not go into a header."""
    try:
        token = (config.state_dir / TOKEN_NAME).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return token if TOKEN.fullmatch(token) else ""


def _enrol(config: AgentConfig) -> tuple[str, str | None]:
    """Enrol with the registration key; the new token is saved (0600) before it is used."""
    body = {
        "format": 1,
        "registration_key": config.registration_key,
        "host_id": config.host_id or host_id(),
    }
    _, answer, failure = _post(config, REGISTER_PATH, body, "")
    if failure:
        return "", failure
    token = (answer or {}).get("host_token")
    if not isinstance(token, str):
        return "", "the fleet server's enrolment answer has no host token"
    if not TOKEN.fullmatch(token):
        # It would be sent as a header: CR LF in it would inject headers, and a
        # saved bad token would break every later run.
        return "", "the fleet server's enrolment answer holds a malformed host token; not saved"
    try:
        atomic_write(config.state_dir / TOKEN_NAME, token.encode() + b"\n", mode=0o600)
    except OSError as e:
        return "", (
            f"enrolled, but the host token cannot be saved in {config.state_dir}: "
            f"{e.strerror or e}; the agent enrols again next time"
        )
    return token, None


def _post(
    config: AgentConfig, path: str, body: dict[str, Any], token: str
) -> tuple[int, dict[str, Any] | None, str | None]:
    """POST JSON; (status, answer, failure). Gateway errors and dropped connections are retried.

    The standard library's client (:mod:`suture.agent.http`), not urllib3: a
    no-change cycle should not pay for loading an HTTP stack. Redirects are
    refused (the token goes to the configured server only). A check-in is
    idempotent (the server keeps the last one per host), so trying again is
    safe.
    """
    url = config.server.rstrip("/") + path
    headers = {"Content-Type": "application/json", "User-Agent": f"suture/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode()
    failure = ""
    status = 0
    for attempt in range(3):
        if attempt:
            time.sleep(1.0)
        try:
            answer = http.request(
                url,
                method="POST",
                data=data,
                headers=headers,
                timeout=config.timeout,
                limit=MAX_ANSWER,
                proxy=config.proxy,
            )
        except http.RequestError as e:
            status, failure = e.status, f"the fleet server did not take the check-in: {e}"
            if e.status and e.status not in (502, 503, 504):
                break
            continue
        return answer.status, _json(answer.body), None
    return status, None, failure


def _json(raw: bytes) -> dict[str, Any] | None:
    """The answer as a JSON object; None for anything else (too deep, not JSON, not an object)."""
    try:
        data = jsontypes.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
