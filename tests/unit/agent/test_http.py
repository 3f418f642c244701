"""The agent over real HTTP on loopback: check-ins, retries, a slow or dead server, kill -9."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from suture.agent import cycle, report, state, userlevels
from suture.agent.config import AgentConfig
from suture.agent.cycle import Outcome
from suture.contract import checkin
from suture.errors import FetchError
from suture.repo import create
from suture.server import Server, open_server
from tests.support.agent import FakeKernel, name, publish_level
from tests.support.agent_child import STEPS, FileKernel
from tests.support.kernel import identity
from tests.support.repo import BUILD_A
from tests.support.server import ADMIN, admin, registration_key

ROOT = Path(__file__).resolve().parents[3]
CHILD = (sys.executable, "-m", "tests.support.agent_child")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    create.init(tmp_path / "repo")
    publish_level(tmp_path / "repo", 1)
    return tmp_path / "repo"


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[Server]:
    srv = open_server(
        repo,
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        log=[].append,
        admin_token=ADMIN,
    )
    srv.start(poll_interval=0.01)
    yield srv
    srv.stop()


def config(url: str, repo: Path, tmp_path: Path, **changes: Any) -> AgentConfig:
    base = AgentConfig(
        server=url,
        state_dir=tmp_path / "state",
        trusted_root=repo / "metadata" / "1.root.json",
        retry_backoff=5.0,
        timeout=2,
    )
    return replace(base, **changes)


class Faulty:
    """A static server of the repository that fails the way real ones do, on request."""

    def __init__(self, repo: Path) -> None:
        self.failures = 0  # answer this many requests with 500 first
        self.delay = 0.0  # s before answering
        self.requests = 0
        faulty = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(repo), **kwargs)

            def do_GET(self) -> None:
                faulty.requests += 1
                time.sleep(faulty.delay)
                if faulty.failures > 0:
                    faulty.failures -= 1
                    self.send_error(500, "injected")
                    return
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def faulty(repo: Path) -> Iterator[Faulty]:
    f = Faulty(repo)
    yield f
    f.close()


def test_update_over_http_then_the_check_in_reaches_the_server(
    server: Server, repo: Path, tmp_path: Path
) -> None:
    cfg = config(server.url, repo, tmp_path)
    kernel = FakeKernel()
    assert cycle.run_update(cfg, kernel=kernel).outcome == Outcome.APPLIED
    failure = report.exchange(cfg, kernel, 1000.0)
    assert failure is not None and "registration_key" in failure  # not enrolled: not sent
    cfg = replace(cfg, registration_key=registration_key(server, "env:test"))
    assert report.exchange(cfg, kernel, 1000.0) is None
    assert (cfg.state_dir / report.TOKEN_NAME).stat().st_mode & 0o777 == 0o600
    [host] = admin(server, "GET", "/api/v1/hosts")["hosts"]
    assert (host["host_id"], host["kernel"], host["tags"]) == (
        report.host_id(),
        {"release": kernel.ident.release, "build_id": BUILD_A},
        ["env:test"],
    )
    assert (host["level"], host["state"], host["patches"]) == (1, "patched", [name(1)])
    assert (host["functions"], host["uptime"], host["attempted_level"]) == (
        [f"vmlinux:f_{name(1)}"],
        1234,
        1,
    )
    s = state.read(cfg.state_dir)
    assert (s.last_report, s.last_report_error) == (1000.0, None)
    assert (s.max_level, s.unroll) == (1, False)  # the fleet server's directive
    # A lost token: enrolling the host id again takes an operator (the id is this host's:
    # a registration key alone no longer takes it over, security-repro 01).
    (cfg.state_dir / report.TOKEN_NAME).write_text("sht_lost\n")
    failure = report.exchange(cfg, kernel, 1001.0)
    assert failure is not None and "409" in failure and "enrolled already" in failure
    admin(server, "POST", f"/api/v1/hosts/{report.host_id()}/revoke", {"allow_reenrol": True})
    assert report.exchange(cfg, kernel, 1002.0) is None


def test_check_in_states(tmp_path: Path) -> None:
    s = state.AgentState(last_result="error", last_error={"error": "fetch", "message": "x"})
    assert report.checkin(identity(), s, set())["state"] == "failed"
    assert report.checkin(identity(), s, set())["last_error"] == "fetch: x"
    assert report.checkin(identity(livepatch=False), s, set())["state"] == "unsupported"
    assert report.checkin(identity(), state.AgentState(), set())["state"] == "unpatched"
    assert "last_error" not in report.checkin(identity(), state.AgentState(), set())
    assert report.host_id(tmp_path / "no-machine-id")  # falls back to the host name
    nothing = AgentConfig(server=tmp_path.as_uri())
    assert report.endpoint(nothing) is None  # a file:// mirror takes no check-ins
    assert report.endpoint(replace(nothing, server="http://h/r", report=False)) is None
    assert report.endpoint(replace(nothing, server="http://h/r/")) == "http://h/r/api/v1/checkin"


def test_a_refused_check_in_is_recorded_never_raised(
    faulty: Faulty, repo: Path, tmp_path: Path
) -> None:
    cfg = config(faulty.url, repo, tmp_path, registration_key="srk_x")  # static: no POST
    failure = report.exchange(cfg, FakeKernel(), 5.0)
    assert failure is not None and "501" in failure
    assert state.read(cfg.state_dir).last_report_error == failure


def test_server_errors_are_retried_with_a_doubling_wait(
    faulty: Faulty, repo: Path, tmp_path: Path
) -> None:
    faulty.failures = 2
    waits: list[float] = []
    log: list[str] = []
    cfg = config(faulty.url, repo, tmp_path, retries=3)
    r = cycle.run_update(cfg, kernel=FakeKernel(), sleep=waits.append, log=log.append)
    assert (r.outcome, r.level) == (Outcome.APPLIED, 1)
    assert waits == [5.0, 10.0]
    assert "500" in log[0] and "trying again in 5 s" in log[0]


def test_a_dead_server_leaves_the_live_level(faulty: Faulty, repo: Path, tmp_path: Path) -> None:
    cfg = config(faulty.url, repo, tmp_path, retries=2)
    kernel = FakeKernel()
    cycle.run_update(cfg, kernel=kernel)
    publish_level(repo, 2)
    faulty.close()
    waits: list[float] = []
    with pytest.raises(FetchError):
        cycle.run_update(cfg, kernel=kernel, sleep=waits.append, log=[].append)
    assert waits == [5.0, 10.0]
    assert (kernel.live, kernel.applied) == ({name(1)}, [1])
    s = state.read(cfg.state_dir)
    assert s.applied is not None and s.applied.level == 1
    assert s.last_result == "error"


def test_a_slow_server_times_out(faulty: Faulty, repo: Path, tmp_path: Path) -> None:
    faulty.delay = 3.0
    cfg = config(faulty.url, repo, tmp_path, retries=0, timeout=1)
    kernel = FakeKernel()
    started = time.monotonic()
    with pytest.raises(FetchError):
        cycle.run_update(cfg, kernel=kernel)
    assert time.monotonic() - started < 3.0 * 4  # one timeout per attempt, not forever
    assert kernel.applied == []


@pytest.mark.parametrize("step", STEPS)
def test_kill_9_at_each_step_then_the_next_run_finishes_the_job(
    step: str, repo: Path, tmp_path: Path
) -> None:
    kernel = FileKernel(tmp_path / "kernel.json")
    cfg = config(repo.as_uri(), repo, tmp_path, retries=0)
    cycle.run_update(cfg, kernel=kernel)  # level 1 is live
    publish_level(repo, 2)
    child = subprocess.run(
        [*CHILD, repo.as_uri(), str(cfg.state_dir), str(kernel.path), step],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    r = cycle.run_update(cfg, kernel=kernel)
    assert r.level == 2
    assert kernel.live_patches() == {name(2)}
    s = state.read(cfg.state_dir)
    assert (s.applied.level if s.applied else 0, s.in_progress) == (2, None)
    bundles = sorted(p.name for p in (cfg.state_dir / "bundles").iterdir())
    assert bundles == [s.applied.bundle.name]  # no partial or superseded file is left
    applies = kernel.path.with_suffix(".log").read_text().split()
    switched = step in ("switched", "recorded")
    assert applies == (
        ["1", "2"] if switched else ["1", "2", "2"] if step == "switching" else ["1", "2"]
    )
    assert json.loads((cfg.state_dir / "state.json").read_text())["last_check"]["result"] in (
        "applied",
        "up-to-date",
    )


def test_the_server_takes_the_userspace_rows_and_an_older_one_the_kernel_check_in(
    server: Server, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(server.url, repo, tmp_path, registration_key=registration_key(server))
    kernel = FakeKernel()
    assert cycle.run_update(replace(cfg, userspace=False), kernel=kernel).outcome == Outcome.APPLIED
    lvl = userlevels.UserLevel(
        "libc.so.6", "ab" * 20, 1, "glibc_fix", tmp_path / "b", processes={"patched": 2}
    )
    userlevels.write(cfg.state_dir, {lvl.build_id: lvl})
    # Check-in format 3: the server keeps the row beside the kernel's level.
    assert report.exchange(cfg, kernel, 1000.0) is None
    [host] = admin(server, "GET", "/api/v1/hosts")["hosts"]
    assert (host["level"], host["state"]) == (1, "patched")
    assert [(u["soname"], u["level"], u["state"]) for u in host["userspace"]] == [
        ("libc.so.6", 1, "patched")
    ]
    # A server that reads formats 1 and 2 only refuses format 3 naming the format;
    # the agent sends format 2 again, and that is taken (without the rows).
    monkeypatch.delitem(checkin.FORMS, 3)
    assert report.exchange(cfg, kernel, 2000.0) is None
    [host] = admin(server, "GET", "/api/v1/hosts")["hosts"]
    assert (host["level"], host["state"], host["userspace"]) == (1, "patched", [])
