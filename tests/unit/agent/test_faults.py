"""Fault injection: every file write and every sysfs write of a cycle fails in turn.

Each scenario is a daemon cycle with the real agent, the real TUF client,
the real engine and the real livepatch sysfs code, on a fake sysroot whose
livepatch core (:class:`tests.support.kernel.FakeCore`) answers as the
kernel does. Its writes are recorded once; then, for each write and each of
EPERM, EBUSY, ENOSPC and EROFS, the scenario runs again with that write
failing. Every time:

- the daemon survives, and the failure is a typed Suture error (never
  ``internal``) that names what failed;
- the state file is whole (readable), no temporary file is left behind, and
  no patch is left half: the kernel and the state agree, or a mark says
  what the next cycle must finish;
- the next cycle without faults brings the host where it should be.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from suture.agent import daemon, state
from suture.agent.config import AgentConfig
from suture.agent.host import HostKernel
from suture.kernel.engine import TransitionPolicy
from suture.repo import create, publish
from suture.server import Server, open_server
from tests.support.agent import name, publish_level
from tests.support.faults import ERRNOS, Injector, injected
from tests.support.kernel import FakeCore, fake_kernel
from tests.support.repo import BUILD_A, RELEASE
from tests.support.server import ADMIN, registration_key

POLICY = TransitionPolicy(timeout=0.05, backout_timeout=0.05, signal_after=0.2)


@dataclass
class World:
    """One host: a sysroot with a fake core, the agent's config, a repository, the injector."""

    root: Path
    repo: Path
    config: AgentConfig
    core: FakeCore
    injector: Injector

    def daemon(self) -> daemon.Daemon:
        return daemon.Daemon(self.config, kernel=HostKernel(self.root / "sysroot", POLICY))

    def cycle(self) -> daemon.Daemon:
        d = self.daemon()
        d.cycle()
        return d


def world(base: Path, monkeypatch: pytest.MonkeyPatch, *, fresh: bool = True) -> World:
    """A host and a repository in ``base`` (made anew, or as a copy left there)."""
    root = base / "host"
    injector = Injector(root)
    if fresh:
        fake_kernel(root / "sysroot")
        create.init(base / "repo")  # the publisher's: its writes are not counted
    core = FakeCore(root / "sysroot", injector.bypass).install(monkeypatch)
    config = AgentConfig(
        server=(base / "repo").as_uri(),
        state_dir=root / "state",
        trusted_root=base / "repo" / "metadata" / "1.root.json",
        retries=0,
        crash_guard=0,
        metrics_file=str(root / "prom" / "suture.prom"),
    )
    return World(root, base / "repo", config, core, injector)


# A scenario sets a host up (its cycle is then the one whose writes fail).
Scenario = Callable[[World], None]


def first_apply(w: World) -> None:
    publish_level(w.repo, 1)


def replace_level(w: World) -> None:
    publish_level(w.repo, 1)
    w.cycle()
    publish_level(w.repo, 2)


def remove_withdrawn(w: World) -> None:
    publish_level(w.repo, 1)
    w.cycle()
    publish.yank(w.repo, RELEASE, BUILD_A, 1)


def back_out(w: World) -> None:
    publish_level(w.repo, 1)
    w.core.stuck = True  # the transition does not finish: signal, then back out


def check_in(w: World) -> None:
    # The fleet server's repository, its check-ins, and an enrolment: the
    # host token and the state's report are written too.
    publish_level(w.repo, 1)
    srv = open_server(
        w.repo, listen="127.0.0.1:0", db=f"sqlite:///{w.repo.parent.parent}/s.db",
        log=[].append, admin_token=ADMIN,
    )  # fmt: skip
    srv.start(poll_interval=0.01)
    SERVERS.append(srv)
    w.config = replace(w.config, server=srv.url, registration_key=registration_key(srv))


SERVERS: list[Server] = []

# scenario -> (set-up, the live patches a clean cycle then brings the host to)
SCENARIOS: dict[str, tuple[Scenario, set[str]]] = {
    "check-in": (check_in, {name(1)}),
    "first-apply": (first_apply, {name(1)}),
    "replace": (replace_level, {name(2)}),
    "remove-withdrawn": (remove_withdrawn, set()),
    "back-out": (back_out, {name(1)}),
}


@pytest.fixture(autouse=True)
def quick_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """fsync does nothing here: durability is not what these tests check, and it is slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    yield
    while SERVERS:
        SERVERS.pop().stop()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder in memory when the machine has /dev/shm: hundreds of hosts are made here."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="suture-faults-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_write_fails_in_turn_and_the_agent_stays_whole(
    scenario: str,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="suture")
    setup, expected = SCENARIOS[scenario]
    # The host is set up once, in a folder copied back before each case: every
    # case starts from the same files at the same paths (the state holds paths).
    here, template = scratch / "case", scratch / "template"
    with monkeypatch.context() as m:
        w = world(here, m)
        setup(w)
        config, stuck = w.config, w.core.stuck
        shutil.copytree(here, template, symlinks=True)
        with injected(w.injector):
            assert w.cycle().failures == 0
        writes = w.injector.writes
    assert writes, "the scenario writes nothing: the injector sees nothing"
    seen_sysfs = False
    for index, what in enumerate(writes):
        for code in ERRNOS:
            case = f"{scenario}: write {index} ({what}) fails with {errno.errorcode[code]}"
            shutil.rmtree(here)
            shutil.copytree(template, here, symlinks=True)
            with monkeypatch.context() as m:
                w = world(here, m, fresh=False)
                w.config, w.core.stuck = config, stuck
                caplog.clear()
                w.injector.fail_at, w.injector.errno = index, code
                with injected(w.injector):
                    d = w.cycle()
                seen_sysfs |= what.split()[1].startswith("sysroot")
                check_faulted(w, d, caplog, case)
                w.core.finish()
                w.injector.fail_at = None
                w.cycle()
                w.cycle()  # a second clean cycle: nothing is left to finish
                check_recovered(w, expected, case)
    if scenario in ("remove-withdrawn", "back-out"):
        assert seen_sysfs, "no sysfs write was made to fail"
    if scenario == "check-in":
        assert any("host-token" in w for w in writes), writes


def check_faulted(w: World, d: daemon.Daemon, caplog: pytest.LogCaptureFixture, case: str) -> None:
    assert d.failures == 0, f"{case}: an untyped error\n{caplog.text}"
    assert "internal error" not in caplog.text, case
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if w.injector.writes[w.injector.fail_at or 0 :]:
        assert problems, f"{case}: the failure was not reported\n{caplog.text}"
    current = state.read(w.config.state_dir)  # whole, never half written
    leftovers = [
        p.name for p in w.root.rglob(".*") if p.is_file() and not p.name.startswith(".lock")
    ]
    assert not leftovers, f"{case}: temporary files left: {leftovers}"
    in_transition = [
        p.parent.name
        for p in (w.root / "sysroot/sys/kernel/livepatch").glob("*/transition")
        if p.read_text().strip() == "1"
    ]
    live = w.core.live()
    a = current.applied
    recorded_live = {a.patch} if a and a.patch in live else set()
    marked = {current.in_progress.patch} if current.in_progress else set()
    # The kernel runs what the state says, or the mark says what to finish.
    assert live <= recorded_live | marked | set(in_transition), (case, live, current)


def check_recovered(w: World, expected: set[str], case: str) -> None:
    current = state.read(w.config.state_dir)
    assert w.core.live() == expected, (case, w.core.live())
    assert current.in_progress is None, case
    level = current.applied.level if current.applied else 0
    assert ({current.applied.patch} if current.applied else set()) == expected, (case, current)
    bundles = sorted(p.name for p in (w.config.state_dir / "bundles").glob("*"))
    assert bundles == ([current.applied.bundle.name] if level else []), (case, bundles)
    assert current.last_result in ("up-to-date", "applied", "no-patches"), (case, current)
    assert Path(w.config.metrics_file).exists(), case


def test_the_daemon_survives_an_error_nobody_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w = world(tmp_path, monkeypatch)
    publish_level(w.repo, 1)
    from suture.agent import run  # noqa: PLC0415

    def broken(self: object, honour_delay: bool) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(run.UpdateRun, "run", broken)
    d = replace_config(w, check_interval=60).daemon()
    d.cycle()
    d.cycle()
    assert d.failures == 2
    assert d._backoff() == 10.0  # retry_backoff 5 s, doubled
    s = state.read(w.config.state_dir)
    assert (s.last_result, s.last_error and s.last_error["error"]) == ("error", "internal")
    assert "ZeroDivisionError: a bug" in caplog.text
    assert "Traceback" in caplog.text  # logged once, for whoever fixes it


def replace_config(w: World, **changes: object) -> World:
    return replace(w, config=replace(w.config, **changes))  # type: ignore[arg-type]
