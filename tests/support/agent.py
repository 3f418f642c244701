"""The agent's fakes: a kernel whose live patches are a set, and levels published to a repository.

Shared by the agent's, the CLI's and the server's tests; no tests here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from suture import bundle
from suture.errors import SutureError
from suture.kernel.identity import KernelIdentity
from suture.repo import publish
from tests.support.kernel import identity
from tests.support.repo import BUILD_A, make_bundle


class Killed(BaseException):
    """Stands for kill -9 in the middle of an apply: no handler of the cycle runs."""


@dataclass
class FakeKernel:
    """A kernel whose live patches are a set; cumulative bundles replace every patch."""

    ident: KernelIdentity = field(default_factory=lambda: identity(build_id=BUILD_A))
    live: set[str] = field(default_factory=set)
    applied: list[int] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    fail: SutureError | None = None
    killed: bool = False
    boot: str = "boot-1"
    prematch_refused: tuple[str, ...] = ()

    def identity(self) -> KernelIdentity:
        return self.ident

    def boot_id(self) -> str:
        return self.boot

    def functions(self) -> tuple[str, ...]:
        return tuple(f"vmlinux:f_{name}" for name in sorted(self.live))

    def uptime(self) -> int | None:
        return 1234

    def refused(self) -> tuple[str, ...]:
        return self.prematch_refused

    def live_patches(self) -> set[str]:
        return set(self.live)

    def apply(self, path: Path) -> list[str]:
        manifest = bundle.read_manifest(path)
        self.applied.append(manifest.level)
        if self.fail is not None:
            raise self.fail
        superseded, self.live = sorted(self.live), {manifest.name}
        if self.killed:
            raise Killed
        return superseded

    def unload(self, patch: str) -> None:
        self.unloaded.append(patch)
        if self.fail is not None:
            raise self.fail
        self.live.discard(patch)


def name(level: int) -> str:
    return f"suture_fix_l{level}"


def publish_level(repo: Path, level: int, channel: str = "stable") -> None:
    folder = repo.parent / "built"
    folder.mkdir(exist_ok=True)
    publish.publish(repo, make_bundle(folder, level, name=name(level)), channel)
