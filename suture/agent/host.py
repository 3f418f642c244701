"""The running kernel as the agent drives it, behind a small protocol the tests can fake."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from suture.agent import guard
from suture.kernel.identity import KernelIdentity, read_identity
from suture.kernel.livepatch import LivepatchSysfs

if TYPE_CHECKING:
    from suture.kernel.engine import TransitionPolicy  # the engine loads only to apply


class Kernel(Protocol):
    """The running kernel as the update cycle and the boot re-apply need it."""

    def identity(self) -> KernelIdentity:
        """Release, build id, livepatch support."""

    def live_patches(self) -> set[str]:
        """Names of the enabled live patches."""

    def boot_id(self) -> str:
        """This boot's id ("" when unknown)."""

    def functions(self) -> tuple[str, ...]:
        """``object:function`` replaced by enabled live patches (for the check-in)."""

    def uptime(self) -> int | None:
        """Seconds since boot, if known."""

    def refused(self) -> tuple[str, ...]:
        """``patch: object:function`` a live patch's pre-match check refused (a module's part)."""

    def apply(self, bundle: Path) -> list[str]:
        """Apply a verified bundle; return the patches it superseded.

        On failure the engine backs out and raises: the kernel runs as before.
        """

    def unload(self, patch: str) -> None:
        """Disable and remove live patch ``patch`` (a level the repository withdrew).

        On failure the patch stays whole and this raises.
        """


@dataclass(frozen=True)
class HostKernel:
    """This host's kernel: /proc, /sys/kernel/livepatch and the engine."""

    sysroot: Path = Path("/")
    policy: TransitionPolicy | None = None

    def identity(self) -> KernelIdentity:
        """The running kernel's identity."""
        return read_identity(self.sysroot)

    def live_patches(self) -> set[str]:
        """Enabled patches in /sys/kernel/livepatch."""
        return {s.name for s in LivepatchSysfs(self.sysroot).states() if s.enabled}

    def boot_id(self) -> str:
        """/proc/sys/kernel/random/boot_id."""
        return guard.boot_id(self.sysroot)

    def functions(self) -> tuple[str, ...]:
        """From /sys/kernel/livepatch."""
        found = {
            f"{obj.name}:{f.name}"
            for patch in LivepatchSysfs(self.sysroot).states()
            if patch.enabled
            for obj in patch.objects
            for f in obj.functions
        }
        return tuple(sorted(found))

    def refused(self) -> tuple[str, ...]:
        """From /sys/module/<patch>/parameters/prematch."""
        from suture.kernel.module import prematch_refused  # noqa: PLC0415 - a small module

        return tuple(
            f"{patch}: {entry}"
            for patch in sorted(self.live_patches())
            for entry in prematch_refused(patch, self.sysroot)
        )

    def uptime(self) -> int | None:
        """From /proc/uptime."""
        try:
            return int(float((self.sysroot / "proc/uptime").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return None

    def apply(self, bundle: Path) -> list[str]:
        """Apply through :func:`suture.agent.local.apply_file`."""
        from suture.agent.local import apply_file  # noqa: PLC0415 - needs root, loads the engine

        return apply_file(bundle, self.policy, sysroot=self.sysroot).superseded

    def unload(self, patch: str) -> None:
        """Through :func:`suture.kernel.engine.unload`."""
        from suture.kernel import engine  # noqa: PLC0415 - loaded only to change the kernel

        engine.unload(patch, self.policy, self.sysroot)
