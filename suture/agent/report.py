"""The agent's check-in: what this host runs and how its last cycle went, sent to the server.

The body is the server's check-in format 1 (:mod:`suture.server.checkin`
validates it; this module must not import the server). A report never fails
a cycle: a server that does not take it is logged and recorded in the state,
and the next cycle reports again.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from suture import __version__
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.state import AgentState
from suture.kernel.identity import KernelIdentity

CHECKIN_PATH = "/api/v1/checkin"
MACHINE_ID = Path("/etc/machine-id")
MAX_ERROR = 4096  # characters the server keeps of last_error


def host_id(machine_id: Path = MACHINE_ID) -> str:
    """Systemd's machine id; the host name when there is none (containers, old systems)."""
    try:
        text = machine_id.read_text().strip()
    except OSError:
        text = ""
    return text or socket.gethostname()


def checkin(ident: KernelIdentity, state: AgentState, live: set[str]) -> dict[str, Any]:
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
        "format": 1,
        "host_id": host_id(),
        "hostname": socket.gethostname(),
        "kernel": {"release": ident.release, "build_id": ident.build_id},
        "level": level,
        "state": status,
        "agent_version": __version__,
        "patches": sorted(live),
    }
    if error := _error_text(state):
        body["last_error"] = error[:MAX_ERROR]
    return body


def _error_text(state: AgentState) -> str:
    if state.held is not None:
        return f"level {state.held.level} is held: {state.held.reason}"
    e = state.last_error
    if not e:
        return ""
    return f"{e.get('error', 'error')}: {e.get('message', '')}"


def report(config: AgentConfig, ident: KernelIdentity, live: set[str], now: float) -> str | None:
    """Send this host's check-in and record the attempt in the state; returns the failure.

    Raises:
        AgentStateError: the state cannot be read or written.
    """
    if endpoint(config) is None:
        return None
    with agent_state.locked(config.state_dir):
        current = agent_state.read(config.state_dir)
    failure = send(config, checkin(ident, current, live))
    with agent_state.locked(config.state_dir):
        current = agent_state.read(config.state_dir)
        agent_state.write(
            config.state_dir, replace(current, last_report=now, last_report_error=failure)
        )
    return failure


def endpoint(config: AgentConfig) -> str | None:
    """Where check-ins go: the server's API next to the repository; None for file:// mirrors."""
    if not config.report or urlparse(config.server).scheme not in ("http", "https"):
        return None
    return config.server.rstrip("/") + CHECKIN_PATH


def send(config: AgentConfig, body: dict[str, Any]) -> str | None:
    """POST ``body``; None when the server took it, else why not (for the log and the state).

    The standard library's client, not urllib3: a no-change cycle should not
    pay for loading an HTTP stack (the TUF client, which brings urllib3, is
    not loaded then either). A check-in is idempotent (the server keeps the
    last one per host), so a gateway error or a dropped connection is tried
    again twice, a second apart.
    """
    url = endpoint(config)
    if url is None:
        return None
    handlers: list[urllib.request.BaseHandler] = []
    if config.proxy:
        handlers.append(urllib.request.ProxyHandler({"http": config.proxy, "https": config.proxy}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(  # noqa: S310 - endpoint() gives http(s) URLs only
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": f"suture/{__version__}"},
        method="POST",
    )
    failure = ""
    for attempt in range(3):
        if attempt:
            time.sleep(1.0)
        try:
            with opener.open(request, timeout=config.timeout):
                return None
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode(errors="replace")
            failure = f"the server at {url} answered {e.code} to the check-in: {detail}"
            if e.code not in (502, 503, 504):
                break
        except (urllib.error.URLError, OSError) as e:
            failure = f"the server at {url} did not take the check-in: {e}"
    return failure
