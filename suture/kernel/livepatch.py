"""The livepatch core's sysfs interface (Documentation/ABI/testing/sysfs-kernel-livepatch).

``/sys/kernel/livepatch/<patch>/`` holds ``enabled``, ``transition``,
``force`` (write-only), on newer kernels ``replace`` and ``stack_order``, on
older ones ``signal``; one folder per patched object (``vmlinux`` or a module
name) with ``patched``; and in it one folder per function named
``<function>,<sympos>``. Seen in the lab: Debian 12's 6.1 has neither
``replace`` nor ``signal``; Debian 13's 6.12 adds ``replace`` (upstream
"livepatch: Add "replace" sysfs attribute", 6.11); trixie-backports' 7.3
also ``stack_order`` (upstream "livepatch: Add stack_order sysfs attribute",
6.14). Files are probed, never inferred from the version.
``/proc/<pid>/task/<tid>/patch_state`` says which side of a transition a
task is on (-1: none running, 0: unpatched, 1: patched).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from suture.errors import KernelError, SysfsError

LIVEPATCH = "sys/kernel/livepatch"


@dataclass(frozen=True)
class PatchedFunction:
    """One ``<function>,<sympos>`` folder under an object."""

    name: str
    sympos: int


@dataclass(frozen=True)
class PatchedObject:
    """One object a patch changes: ``vmlinux`` or a module (patched when it loads)."""

    name: str
    patched: bool
    functions: tuple[PatchedFunction, ...]


@dataclass(frozen=True)
class PatchState:
    """One loaded live patch as sysfs shows it."""

    name: str
    enabled: bool
    transition: bool
    replace: bool | None  # None where the kernel has no ``replace`` file
    objects: tuple[PatchedObject, ...]
    # Its place among the loaded patches, 1 the oldest (``stack_order``); None where absent.
    stack_order: int | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "transition": self.transition,
            "replace": self.replace,
            "stack_order": self.stack_order,
            "objects": [
                {
                    "name": o.name,
                    "patched": o.patched,
                    "functions": [{"name": f.name, "sympos": f.sympos} for f in o.functions],
                }
                for o in self.objects
            ],
        }


def _flag(path: Path) -> bool | None:
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return None


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class LivepatchSysfs:
    """Read and drive ``/sys/kernel/livepatch`` under ``sysroot``."""

    def __init__(self, sysroot: Path = Path("/")) -> None:
        self.sysroot = sysroot
        self.base = sysroot / LIVEPATCH

    def available(self) -> bool:
        """True when the kernel has a livepatch core (CONFIG_LIVEPATCH)."""
        return self.base.is_dir()

    def names(self) -> list[str]:
        """Names of the patches the core knows, sorted.

        Raises:
            KernelError: the folder cannot be read.
        """
        if not self.available():
            return []
        try:
            return sorted(p.name for p in self.base.iterdir() if p.is_dir())
        except OSError as e:
            raise KernelError(
                f"cannot read {self.base}: {e.strerror or e}", hint="run as root"
            ) from e

    def exists(self, name: str) -> bool:
        """True while the core knows patch ``name``."""
        return (self.base / name).is_dir()

    def state(self, name: str) -> PatchState | None:
        """The state of patch ``name``, or None once it is gone (it can vanish while read)."""
        pdir = self.base / name
        enabled = _flag(pdir / "enabled")
        transition = _flag(pdir / "transition")
        if enabled is None or transition is None:
            return None
        objects = []
        try:
            for odir in sorted(p for p in pdir.iterdir() if p.is_dir()):
                funcs = []
                for fdir in sorted(p for p in odir.iterdir() if p.is_dir()):
                    fname, _, pos = fdir.name.rpartition(",")
                    funcs.append(PatchedFunction(fname, int(pos or 0)))
                patched = bool(_flag(odir / "patched"))
                objects.append(PatchedObject(odir.name, patched, tuple(funcs)))
        except FileNotFoundError:
            return None
        return PatchState(
            name=name,
            enabled=enabled,
            transition=transition,
            replace=_flag(pdir / "replace"),
            objects=tuple(objects),
            stack_order=_number(pdir / "stack_order"),
        )

    def states(self) -> list[PatchState]:
        """Every loaded patch's state."""
        return [s for n in self.names() if (s := self.state(n)) is not None]

    def in_transition(self, name: str) -> bool:
        """True while patch ``name`` is switching tasks (either way)."""
        return bool(_flag(self.base / name / "transition"))

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Write ``enabled``: 0 disables, or reverses a running transition.

        Raises:
            SysfsError: the kernel refused the write (named, with its errno).
        """
        write(self.base / name / "enabled", "1" if enabled else "0")

    def signal(self, name: str) -> bool:
        """Write ``signal`` to wake the tasks that block the transition; False where absent.

        Older kernels have the file; Debian's 6.1 does not (seen in the lab):
        there the core itself sends the fake signal to blocking tasks once a
        transition has run for a while (klp_send_signals, every
        SIGNALS_TIMEOUT retries, about 15 s), so a long enough timeout is how
        to nudge it.
        """
        path = self.base / name / "signal"
        if not path.exists():
            return False
        write(path, "1")
        return True

    def blocking_tasks(self, target_patched: bool) -> list[BlockingTask]:
        """Tasks not yet switched to the transition's target side, with their kernel stacks."""
        waiting_state = 0 if target_patched else 1
        found = []
        for state_file in (self.sysroot / "proc").glob("[0-9]*/task/[0-9]*/patch_state"):
            try:
                value = int(state_file.read_text().strip())
                comm = (state_file.parent / "comm").read_text().strip()
            except (OSError, ValueError):
                continue
            if value == waiting_state:
                tid = int(state_file.parent.name)
                found.append(BlockingTask(tid, comm, _stack(state_file.parent)))
        return found


# What a refused write to a livepatch control file means (kernel/livepatch/core.c).
_WRITE_HINTS = {
    errno.EPERM: "run as root (writing the livepatch sysfs needs CAP_SYS_ADMIN)",
    errno.EACCES: "run as root (writing the livepatch sysfs needs CAP_SYS_ADMIN)",
    errno.EBUSY: "a transition is under way: wait for it ('suture status'), then try again",
    errno.EINVAL: "the kernel refused the value in this state: see 'suture status' and dmesg",
    errno.ENOENT: "the live patch went away meanwhile: see 'suture status'",
    errno.EROFS: "sysfs is read-only here (a container?): run the agent on the host",
    errno.ENOSPC: "the kernel is out of a resource it needs: see dmesg",
}


def write(path: Path, text: str) -> None:
    """Write ``text`` to a kernel control file; a refusal becomes a :class:`SysfsError`.

    Raises:
        SysfsError: the kernel (or the file system) refused, with the file and its errno.
    """
    try:
        path.write_text(text)
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, "")
        raise SysfsError(
            f"the kernel refused to write {text!r} to {path}: {e.strerror or e}",
            path=str(path),
            errno_name=name,
            hint=_WRITE_HINTS.get(e.errno or 0, "see dmesg for the kernel's reason"),
        ) from e


@dataclass(frozen=True)
class BlockingTask:
    """A task (thread) that has not switched yet, and where it sleeps."""

    pid: int  # the thread id: /proc/<pid>/task/<tid>
    comm: str
    stack: tuple[str, ...]

    def describe(self) -> str:
        """``pid 42 (cat) in suture_sleep_read`` style, for error messages."""
        where = f" in {' < '.join(self.stack[:3])}" if self.stack else ""
        return f"pid {self.pid} ({self.comm}){where}"


def _stack(task_dir: Path) -> tuple[str, ...]:
    """Function names of ``/proc/<pid>/task/<tid>/stack`` (root only), innermost first."""
    try:
        lines = (task_dir / "stack").read_text().splitlines()
    except OSError:
        return ()
    # "[<0>] msleep+0x2d/0x40" -> "msleep"
    return tuple(line.split("] ", 1)[-1].split("+", 1)[0] for line in lines if line)
