"""The fleet server's shared fixtures: admin calls, raw requests, and fleets of fake hosts.

A simulated host is a real agent (check-in, update, check-in) with a fake
kernel, against a real server and repository on loopback. No tests here.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

from suture import bundle
from suture.agent import cycle, report
from suture.agent.config import AgentConfig
from suture.contract.checkin import Checkin
from suture.errors import SutureError, TransitionError
from suture.repo import create
from suture.server import Server, open_server
from suture.server.db import DbUrl, open_store
from suture.server.db import hosts as db_hosts
from tests.support.agent import FakeKernel, publish_level
from tests.support.repo import BUILD_A, BUILD_B, RELEASE

ADMIN = "sat_agent-http-test-admin-token"
NOW = 1_000_000.0  # the clock of simulated hosts' check-ins

CHECKIN: dict[str, Any] = {
    "format": 1,
    "host_id": "4c4c4544003510",
    "hostname": "web-1.example.net",
    "kernel": {"release": RELEASE, "build_id": BUILD_A},
    "level": 2,
    "state": "patched",
    "last_error": None,
    "agent_version": "0.1.0",
    "patches": ["suture_fix_1"],
}


def admin(server: Server, method: str, path: str, body: object = None) -> Any:
    """A fleet API call with the admin token."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method)  # noqa: S310
    req.add_header("Authorization", f"Bearer {ADMIN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as answer:  # noqa: S310 - loopback
        return json.load(answer)


def registration_key(server: Server, *tags: str) -> str:
    key: str = admin(server, "POST", "/api/v1/registration-keys", {"tags": list(tags)})[
        "registration_key"
    ]
    return key


def request(
    server: Server,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    ctype: str = "application/json",
    token: str = "",
) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(server.url + path, data=body, method=method)  # noqa: S310
    if body is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310  (http to loopback)
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@dataclass
class Host:
    """A simulated host: its agent's configuration and its (fake) kernel."""

    config: AgentConfig
    kernel: FakeKernel

    def cycle(self) -> None:
        """What `suture update` does: check in, update, check in again."""
        report.exchange(self.config, self.kernel, NOW)
        with contextlib.suppress(SutureError):  # recorded in the state; the check-in says it
            cycle.run_update(self.config, kernel=self.kernel)
        report.exchange(self.config, self.kernel, NOW)

    def level(self) -> int:
        live = self.kernel.live
        return int(next(iter(live)).rsplit("_l", 1)[1]) if live else 0


class FailsOn(FakeKernel):
    """A kernel on which one level does not apply (the engine backs it out)."""

    bad_level: int = 0

    def apply(self, path: Path) -> list[str]:
        level = bundle.read_manifest(path).level
        if level == self.bad_level:
            self.applied.append(level)  # tried, and backed out
            raise TransitionError("injected: the transition did not finish")
        return super().apply(path)


def fleet(server: Server, tmp_path: Path, count: int, canaries: int) -> list[Host]:
    repo = tmp_path / "repo"
    ring0 = admin(server, "POST", "/api/v1/registration-keys", {"tags": ["ring:0"]})
    rest = admin(server, "POST", "/api/v1/registration-keys", {"tags": ["env:prod"]})
    hosts = []
    for i in range(count):
        key = ring0 if i < canaries else rest
        config = AgentConfig(
            server=server.url,
            state_dir=tmp_path / f"host-{i}",
            trusted_root=repo / "metadata" / "1.root.json",
            retries=0,
            registration_key=key["registration_key"],
            host_id=f"host-{i:02d}",
        )
        kernel = FailsOn()
        kernel.bad_level = 2
        hosts.append(Host(config, kernel))
    return hosts


EVIL = "<script>alert(1)</script>"


def simulated_fleet(tmp_path: Path) -> Server:
    """A started server with levels 1 and 2 and four hosts (see the module docstring)."""
    repo = tmp_path / "repo"
    create.init(repo)
    srv = open_server(
        repo,
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        log=[].append,
        admin_token=ADMIN,
    )
    srv.start(poll_interval=0.01)
    hosts = fleet(srv, tmp_path, count=3, canaries=1)
    for h in hosts[1:]:
        h.kernel.bad_level = 0  # only host-00 fails level 2
    publish_level(repo, 1)
    for h in hosts:
        h.cycle()
    publish_level(repo, 2)
    for h in hosts:
        h.cycle()
    store = open_store(DbUrl("sqlite", f"{tmp_path}/s.db"))
    try:
        evil = Checkin(
            host_id="evil-1",
            hostname=EVIL,
            release=RELEASE,
            build_id=BUILD_B,
            level=0,
            state="failed",
            last_error=f"error {EVIL}",
            agent_version="0.1.0",
            patches=(),
            attempted_level=1,
        )
        db_hosts.record(store, evil, "127.0.0.1", datetime.now(UTC).timestamp())
    finally:
        store.close()
    return srv
