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
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from suture import __version__
from suture.agent import quick
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import Kernel
from suture.agent.state import AgentState
from suture.contract.checkin import MAX_ERROR, MAX_FUNCTIONS
from suture.contract.directive import Directive, parse_directive
from suture.contract.enrolment import CHECKIN_PATH, REGISTER_PATH
from suture.kernel.identity import KernelIdentity

__all__ = ["CHECKIN_PATH", "REGISTER_PATH", "TOKEN_NAME", "Directive", "checkin", "exchange"]

TOKEN_NAME = "host-token"  # noqa: S105 - a file name
MACHINE_ID = Path("/etc/machine-id")
MAX_LIBRARIES = 32  # userspace rows in one check-in (a host runs a handful of library builds)


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
) -> dict[str, Any]:
    """The check-in body for this host as ``state`` and the kernel now stand."""
    level = state.level_for(ident.release, ident.build_id)
    a = state.applied
    if not (ident.livepatch and ident.build_id):
        status = "unsupported"
    elif state.last_result in ("error", "held"):
        status = "failed"
    elif level and a and a.patch in live:
        status = "patched"
    else:
        status, level = "unpatched", 0
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
    if error := _error_text(state):
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
        AgentStateError: the state cannot be read or written.
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
    )
    if config.userspace:
        from suture.agent import userlevels  # noqa: PLC0415 - a small module, no userspace import

        if user := userlevels.checkin_rows(config.state_dir):
            body = with_userspace(body, user)
    answer, failure = _checkin(config, body)
    with agent_state.locked(config.state_dir):
        current = replace(
            agent_state.read(config.state_dir), last_report=now, last_report_error=failure
        )
        directive = _directive(answer)
        if directive is not None:
            current = replace(current, max_level=directive.max_level, unroll=directive.unroll)
        agent_state.write(config.state_dir, current)
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
    try:
        return (config.state_dir / TOKEN_NAME).read_text().strip()
    except OSError:
        return ""


def _enrol(config: AgentConfig) -> tuple[str, str | None]:
    body = {
        "format": 1,
        "registration_key": config.registration_key,
        "host_id": config.host_id or host_id(),
    }
    _, answer, failure = _post(config, REGISTER_PATH, body, "")
    token = (answer or {}).get("host_token")
    if failure or not isinstance(token, str):
        return "", failure or "the fleet server's enrolment answer has no host token"
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config.state_dir / TOKEN_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, None


def _post(
    config: AgentConfig, path: str, body: dict[str, Any], token: str
) -> tuple[int, dict[str, Any] | None, str | None]:
    """POST JSON; (status, answer, failure). Gateway errors and dropped connections are retried.

    The standard library's client, not urllib3: a no-change cycle should not
    pay for loading an HTTP stack (the TUF client, which brings urllib3, is
    not loaded then either). A check-in is idempotent (the server keeps the
    last one per host), so trying again is safe.
    """
    url = config.server.rstrip("/") + path
    client = quick.opener(config)
    headers = {"Content-Type": "application/json", "User-Agent": f"suture/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310 - http(s) only, see endpoint()
    failure = ""
    status = 0
    for attempt in range(3):
        if attempt:
            time.sleep(1.0)
        try:
            with client.open(request, timeout=config.timeout) as answer:
                return answer.status, _json(answer.read(64 << 10)), None
        except urllib.error.HTTPError as e:
            status = e.code
            detail = e.read(300).decode(errors="replace")
            failure = f"the server at {url} answered {e.code}: {detail}"
            if e.code not in (502, 503, 504):
                break
        except (urllib.error.URLError, OSError) as e:
            failure = f"the server at {url} did not answer: {getattr(e, 'reason', e)}"
    return status, None, failure


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
