"""The agent against a hostile network: answers meant to crash it, hold it, or steal its token.

Each test stands for a finding of the review (issue 14, the security kit's
scripts 07, 08, 09 and 11): the answer is refused or bounded, the agent says
why, and nothing it keeps is damaged.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import cycle, daemon, report, state
from suture.agent.config import AgentConfig
from suture.errors import ConfigError, FetchError
from suture.repo import create
from suture.server import Server, open_server
from tests.support.agent import FakeKernel, publish_level
from tests.support.http import Reply, Seen, files, serving
from tests.support.server import ADMIN, registration_key

NOW = 1000.0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    create.init(tmp_path / "repo")
    publish_level(tmp_path / "repo", 1)
    return tmp_path / "repo"


def config(url: str, repo: Path, tmp_path: Path, **changes: object) -> AgentConfig:
    base = AgentConfig(
        server=url,
        state_dir=tmp_path / "state",
        trusted_root=repo / "metadata" / "1.root.json",
        retries=0,
        timeout=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def genuine(repo: Path, tmp_path: Path) -> Iterator[Server]:
    srv = open_server(
        repo, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/s.db", log=[].append,
        admin_token=ADMIN,
    )  # fmt: skip
    srv.start(poll_interval=0.01)
    yield srv
    srv.stop()


# --- 07: answers meant to crash the agent -------------------------------------------------


def test_a_deeply_nested_check_in_answer_is_no_answer_and_the_daemon_goes_on(
    repo: Path, tmp_path: Path
) -> None:
    def answer(request: Seen) -> Reply:
        return Reply(200, b"[" * 60_000) if request.method == "POST" else Reply(404)

    with serving(answer) as hostile:
        cfg = config(hostile.url, repo, tmp_path)
        cfg.state_dir.mkdir(mode=0o700)
        (cfg.state_dir / report.TOKEN_NAME).write_text("sht_x\n")
        assert report.exchange(cfg, FakeKernel(), NOW) is None  # taken, but says nothing
        d = daemon.Daemon(replace(cfg, check_interval=0, check_jitter=0), kernel=FakeKernel())
        d.run(max_cycles=2)  # neither cycle ends the daemon
        assert d.cycles == 2
        assert sum(1 for s in hostile.seen if s.method == "POST") >= 2
    s = state.read(cfg.state_dir)
    assert (s.max_level, s.last_result) == (None, "error")  # no directive; the fetch failed


def test_a_host_token_with_cr_lf_is_refused_never_saved_and_the_next_run_works(
    repo: Path, tmp_path: Path, genuine: Server
) -> None:
    def answer(request: Seen) -> Reply:
        if request.path.endswith("/register"):
            token = {"format": 1, "ok": True, "host_token": "sht_x\r\nX-Evil: 1"}
            return Reply(200, json.dumps(token).encode())
        return Reply(401, b"{}")

    with serving(answer) as hostile:
        cfg = config(hostile.url, repo, tmp_path, registration_key="srk_x")
        failure = report.exchange(cfg, FakeKernel(), NOW)
        assert failure is not None and "malformed host token" in failure
        assert not (cfg.state_dir / report.TOKEN_NAME).exists()
        assert not any("X-Evil" in str(s.headers) for s in hostile.seen)
    good = replace(cfg, server=genuine.url, registration_key=registration_key(genuine))
    assert report.exchange(good, FakeKernel(), NOW) is None


def test_a_saved_token_that_could_inject_headers_is_never_sent(
    repo: Path, tmp_path: Path, genuine: Server
) -> None:
    cfg = config(genuine.url, repo, tmp_path, registration_key=registration_key(genuine))
    cfg.state_dir.mkdir(mode=0o700)
    (cfg.state_dir / report.TOKEN_NAME).write_text("sht_x\r\nX-Evil: 1\n")  # an older agent's
    assert report.exchange(cfg, FakeKernel(), NOW) is None  # enrolled again instead
    assert report.TOKEN.fullmatch((cfg.state_dir / report.TOKEN_NAME).read_text().strip())


# --- 08: a full disk while enrolling -------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, full (root only: it mounts)."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True, check=False,
    ).returncode:  # fmt: skip
        pytest.skip("needs root to mount a small tmpfs")
    try:
        (mount / "state").mkdir(mode=0o700)
        with (mount / "fill").open("wb") as f, pytest.raises(OSError, match="No space"):
            f.write(b"\0" * (1 << 20))
            f.flush()
        yield mount / "state"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_enrolling_on_a_full_disk_fails_cleanly_and_leaves_no_empty_token(
    repo: Path, tmp_path: Path, genuine: Server, full_disk: Path
) -> None:
    cfg = config(
        genuine.url, repo, tmp_path, state_dir=full_disk, registration_key=registration_key(genuine)
    )
    failure = report.exchange(cfg, FakeKernel(), NOW)
    assert failure is not None and "cannot be saved" in failure and "space" in failure
    assert not (full_disk / report.TOKEN_NAME).exists()
    d = daemon.Daemon(replace(cfg, check_interval=0, check_jitter=0), kernel=FakeKernel())
    d.run(max_cycles=1)  # the daemon lives on
    done = cycle.run_cycle(cfg, kernel=FakeKernel())
    assert done.error is not None and done.error.code == "agent-state"  # a clear error, no crash
    assert not (full_disk / report.TOKEN_NAME).exists()


# --- 09: a mirror that drips its answer ----------------------------------------------------


@pytest.mark.parametrize("head", [False, True], ids=["body", "status-line"])
@pytest.mark.timeout(60)
def test_a_mirror_that_drips_bytes_is_given_up_within_the_deadline(
    repo: Path, tmp_path: Path, head: bool
) -> None:
    # One byte every 0.3 s: never a second without a byte, so the per-read
    # timeout (1 s) never fires; the whole-download deadline must.
    def slow(path: str) -> Reply | None:
        if path.endswith("timestamp.json"):
            data = (repo / path).read_bytes()
            return Reply(200, data, drip=0.3, drip_head=head)
        return None

    with serving(files(repo, slow)) as mirror:
        cfg = config(mirror.url, repo, tmp_path, timeout=1, report=False)
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"timestamp\.json"):
            cycle.run_update(cfg, kernel=FakeKernel())
        assert time.monotonic() - started < 8  # deadline 2 x 1 s + 16 KiB at 16 KiB/s, and a bit


# --- 11: a redirect on the check-in ---------------------------------------------------------


def test_a_redirect_never_takes_the_host_token_to_another_host(repo: Path, tmp_path: Path) -> None:
    with serving(lambda r: Reply(404)) as third_party:

        def answer(request: Seen) -> Reply:
            return Reply(302, headers={"Location": f"{third_party.url}/steal"})

        with serving(answer) as redirecting:
            cfg = config(redirecting.url, repo, tmp_path)
            cfg.state_dir.mkdir(mode=0o700)
            (cfg.state_dir / report.TOKEN_NAME).write_text("sht_SECRET\n")
            failure = report.exchange(cfg, FakeKernel(), NOW)
        assert failure is not None and "302" in failure and "not followed" in failure
        assert third_party.seen == []


# --- errors that say why ---------------------------------------------------------------------


def test_network_errors_name_the_url_and_the_cause(repo: Path, tmp_path: Path) -> None:
    with serving(lambda r: Reply(404)) as gone:
        url = gone.url
    cfg = config(url, repo, tmp_path, report=False)
    with pytest.raises(FetchError) as e:
        cycle.run_update(cfg, kernel=FakeKernel())
    assert f"{url}/metadata/2.root.json" in e.value.message  # python-tuf asks for a new root first
    assert "connection refused" in e.value.message
    with serving(lambda r: Reply(503, b"down for maintenance")) as busy:
        with pytest.raises(FetchError) as e:
            cycle.run_update(replace(cfg, server=busy.url), kernel=FakeKernel())
        assert "HTTP 503" in e.value.message


def test_a_trusted_root_that_is_not_root_metadata_is_a_configuration_error(
    repo: Path, tmp_path: Path
) -> None:
    for wrong in (repo / "metadata" / "timestamp.json", Path("/etc/hostname")):
        cfg = config(repo.as_uri(), repo, tmp_path, trusted_root=wrong)
        with pytest.raises(ConfigError, match="not a TUF root metadata file") as e:
            cycle.run_update(cfg, kernel=FakeKernel())
        assert (e.value.exit_code, e.value.key) == (64, "trusted_root")
