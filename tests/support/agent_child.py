"""An agent run in its own process that kills itself (SIGKILL) at one step of an update.

``python -m tests.support.agent_child REPO_URI STATE_DIR KERNEL_FILE STEP`` runs
one update cycle against a :class:`FileKernel` (live patches in a JSON file,
so they outlive the process, as a real kernel's do) and sends itself SIGKILL
at STEP: no handler, no ``finally`` runs, exactly like kill -9 or power loss.
Used by tests/unit/agent/test_http.py; no tests here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from suture import bundle
from suture.agent import cycle, update
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.kernel.identity import KernelIdentity
from tests.support.kernel import identity
from tests.support.repo import BUILD_A

# Where a run can die: after the download, after the mark, inside the apply
# before and after the kernel switched, after the level was recorded.
STEPS = ("downloaded", "marked", "switching", "switched", "recorded")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FileKernel:
    """Live patches kept in a JSON file; each apply is appended to a log next to it."""

    path: Path
    kill_at: str = ""

    def identity(self) -> KernelIdentity:
        return identity(build_id=BUILD_A)

    def live_patches(self) -> set[str]:
        return set(json.loads(self.path.read_text())) if self.path.exists() else set()

    def boot_id(self) -> str:
        return "boot-1"

    def functions(self) -> tuple[str, ...]:
        return ()

    def uptime(self) -> int | None:
        return None

    def refused(self) -> tuple[str, ...]:
        return ()

    def apply(self, path: Path) -> list[str]:
        manifest = bundle.read_manifest(path)
        with self.path.with_suffix(".log").open("a") as log:
            log.write(f"{manifest.level}\n")
        if self.kill_at == "switching":
            die()
        superseded = sorted(self.live_patches())
        self.path.write_text(json.dumps([manifest.name]))
        if self.kill_at == "switched":
            die()
        return superseded

    def unload(self, patch: str) -> None:
        self.path.write_text(json.dumps(sorted(self.live_patches() - {patch})))


def main(repo_uri: str, state_dir: str, kernel_file: str, step: str) -> None:
    kernel = FileKernel(Path(kernel_file), step)
    download = update.UpdateSession.download
    write = agent_state.write

    def download_then_die(self: update.UpdateSession, offer: update.Offer, dest: Path) -> Path:
        result = download(self, offer, dest)
        if step == "downloaded":
            die()
        return result

    def write_then_die(folder: Path, state: agent_state.AgentState) -> None:
        write(folder, state)
        if (step == "marked" and state.in_progress) or (
            step == "recorded"
            and state.applied
            and state.in_progress is None
            and state.applied.level == 2
        ):
            die()

    update.UpdateSession.download = download_then_die  # type: ignore[method-assign]
    agent_state.write = write_then_die  # type: ignore[assignment]
    repo = Path(repo_uri.removeprefix("file://"))
    config = AgentConfig(
        server=repo_uri,
        state_dir=Path(state_dir),
        trusted_root=repo / "metadata" / "1.root.json",
        retries=0,
    )
    cycle.run_update(config, kernel=kernel)


if __name__ == "__main__":
    main(*sys.argv[1:])
