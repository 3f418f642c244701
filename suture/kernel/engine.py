"""Apply and remove live patches: pre-flight, load, bounded transition, back-out.

The kernel switches each task to the new code only when the task is not
running a patched function, so a transition can wait on a task that sleeps
inside one. We wait a bounded time, signal the laggards halfway, and when the
transition still does not finish we reverse it, wait for the reversal, and
remove the module: the kernel is left as it was before the call.

A patch whose code the kernel may still point to once it is disabled (a
redirected function pointer, data it handed out) keeps its module loaded:
removing it is then skipped and reported as *kept* (docs/adr/0010).
"""

from __future__ import annotations

import errno
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from suture.errors import (
    KernelError,
    LoadError,
    NotLoadedError,
    PrematchError,
    SysfsError,
    TransitionError,
)
from suture.kernel import kmsg, module, preflight
from suture.kernel.identity import read_identity
from suture.kernel.livepatch import LivepatchSysfs
from suture.kernel.modinfo import read_modinfo
from suture.kernel.preflight import PatchCandidate

POLL_SECONDS = 0.005  # the core re-checks blocked tasks every second; we just watch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransitionPolicy:
    """How long to wait for a transition, and when to nudge it.

    Attributes:
        timeout: seconds until the transition is backed out.
        signal_after: share of ``timeout`` after which blocking tasks are signalled.
        backout_timeout: seconds allowed for the reversal itself.
    """

    timeout: float = 30.0
    signal_after: float = 0.5
    backout_timeout: float = 30.0


@dataclass
class ApplyResult:
    """What :func:`apply` did."""

    name: str
    seconds: float  # load to transition complete
    signalled: bool = False
    superseded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # superseded modules that stay loaded

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "seconds": round(self.seconds, 4),
            "signalled": self.signalled,
            "superseded": self.superseded,
            "kept": self.kept,
        }


def _wait_transition(
    lp: LivepatchSysfs, name: str, timeout: float, signal_at: float | None
) -> tuple[bool, bool]:
    """Wait until ``name`` leaves its transition; returns (finished, signalled by us)."""
    start = time.monotonic()
    signalled = False
    while lp.in_transition(name):
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            return False, signalled
        if signal_at is not None and not signalled and elapsed >= signal_at:
            try:
                signalled = lp.signal(name)
            except SysfsError as e:  # a nudge only: the transition goes on without it
                log.warning("%s", e.message)
            signal_at = None
        time.sleep(POLL_SECONDS)
    return True, signalled


def _blockers(lp: LivepatchSysfs, target_patched: bool) -> str:
    tasks = lp.blocking_tasks(target_patched)
    if not tasks:
        return ""
    shown = ", ".join(t.describe() for t in tasks[:5])
    more = f" and {len(tasks) - 5} more" if len(tasks) > 5 else ""
    return f"; blocked by {shown}{more}"


def apply(
    path: Path,
    policy: TransitionPolicy | None = None,
    *,
    build_id: str = "",
    functions: tuple[str, ...] = (),
    sysroot: Path = Path("/"),
) -> ApplyResult:
    """Load the live patch module at ``path`` and wait until every task runs the new code.

    Args:
        path: the livepatch ``.ko``.
        policy: transition time limits.
        build_id: the vmlinux build id the patch was made for (from its manifest).
        functions: the functions it replaces (from its manifest), for the ftrace check.
        sysroot: where /proc and /sys are (tests point it elsewhere).

    Raises:
        PreflightError: a check refused; nothing was loaded.
        PrematchError: the patch's own check in the kernel found a function that
            is not the code it was built for; nothing was redirected or loaded.
        LoadError: the kernel refused the module; nothing was loaded.
        TransitionError: the transition did not finish and was backed out.
    """
    policy = policy or TransitionPolicy()
    lp = LivepatchSysfs(sysroot)
    cand = PatchCandidate(path, read_modinfo(path), build_id, functions)
    preflight.run_all(cand, read_identity(sysroot), lp)
    before = set(lp.names())

    start = time.monotonic()
    with kmsg.watching(sysroot) as kernel_log:
        try:
            module.load(path)
        except LoadError as e:
            if e.errno == errno.EILSEQ:
                raise _prematch_refusal(cand.name, kernel_log.lines()) from e
            raise
    name = cand.name
    finished, signalled = _wait_transition(
        lp, name, policy.timeout, policy.timeout * policy.signal_after
    )
    if not finished:
        blockers = _blockers(lp, target_patched=True)
        try:
            _back_out(lp, name, policy)
        except SysfsError as e:
            raise TransitionError(
                f"the transition to {name} did not finish within {policy.timeout:g} s"
                f"{blockers}, and reversing it failed: {e.message}",
                hint="the kernel goes on with the transition; watch 'suture status'",
            ) from e
        raise TransitionError(
            f"the transition to {name} did not finish within {policy.timeout:g} s{blockers}; "
            "it was reversed and the module removed, the kernel runs as before",
            hint="apply again when the system is less busy, or raise --timeout",
        )
    seconds = time.monotonic() - start
    # An atomic-replace patch retires the patches it supersedes: the core
    # disables them before it ends the transition and frees them a moment
    # later; their modules stay loaded (unused) until removed.
    superseded = sorted(n for n in before if not ((s := lp.state(n)) and s.enabled))
    kept = [old for old in superseded if not _remove(lp, old, sysroot)]
    return ApplyResult(
        name=name, seconds=seconds, signalled=signalled, superseded=superseded, kept=kept
    )


def _remove(lp: LivepatchSysfs, name: str, sysroot: Path) -> bool:
    """Remove the module of a disabled patch once the core has let go; False if it is kept."""
    _wait_gone(lp, name)
    if module.kept(name, sysroot):
        return False
    module.unload(name)
    return True


# The line a Suture patch's pre-match check writes (suture/builder/module.py).
_PREMATCH = re.compile(r"suture: pre-match: (\S+): (\S+):(\S+) is not the code")


def _prematch_refusal(name: str, lines: list[str]) -> PrematchError:
    """The patch refused itself: a function in the kernel is not the code it was built for."""
    found = [m for line in lines if (m := _PREMATCH.search(line)) and m.group(1) == name]
    obj, function = (found[0].group(2), found[0].group(3)) if found else ("", "")
    what = f"{obj}:{function}" if found else "a function it replaces (see dmesg)"
    return PrematchError(
        f"{name} refused itself: {what} is not the code the patch was built for; nothing "
        "was redirected and the module is not loaded",
        obj=obj,
        function=function,
        hint="this host runs other code than the patch's kernel build (a modified or "
        "foreign kernel or module, or code changed in memory): do not force it; tell the "
        "patch's publisher",
    )


def _back_out(lp: LivepatchSysfs, name: str, policy: TransitionPolicy) -> None:
    """Reverse the running transition of ``name`` and remove its module."""
    lp.set_enabled(name, False)
    finished, _ = _wait_transition(
        lp, name, policy.backout_timeout, policy.backout_timeout * policy.signal_after
    )
    if not finished:
        raise TransitionError(
            f"backing out {name} did not finish within {policy.backout_timeout:g} s"
            f"{_blockers(lp, target_patched=False)}",
            hint="the kernel keeps trying; watch 'suture status' and retry 'suture unload'",
        )
    _wait_gone(lp, name)
    module.unload(name)


def _wait_gone(lp: LivepatchSysfs, name: str, timeout: float = 5.0) -> None:
    """Wait for the core to free a disabled patch (a work item does it after the transition)."""
    deadline = time.monotonic() + timeout
    while lp.exists(name):
        if time.monotonic() >= deadline:
            raise TransitionError(
                f"{name} is disabled but the livepatch core has not released it "
                f"after {timeout:g} s; its module stays loaded",
                hint=f"retry 'suture unload {name}' in a moment",
            )
        time.sleep(POLL_SECONDS)


def unload(name: str, policy: TransitionPolicy | None = None, sysroot: Path = Path("/")) -> bool:
    """Disable live patch ``name``, wait for the transition, and remove its module.

    If the disabling transition does not finish in time it is reversed, so the
    patch stays fully applied: never half. Returns False when the patch is
    disabled but its module is kept loaded (it says so itself).

    Raises:
        NotLoadedError: no such live patch.
        SysfsError: the kernel refused to disable it; it is still applied.
        TransitionError: the disable was reversed; the patch is still applied.
    """
    policy = policy or TransitionPolicy()
    lp = LivepatchSysfs(sysroot)
    state = lp.state(name)
    if state is None:
        if module.is_loaded(name, sysroot) and "K" in module.taint(name, sysroot):
            if module.kept(name, sysroot):
                return False
            module.unload(name)  # a disabled or superseded patch's leftover module
            return True
        raise NotLoadedError(f"no live patch named {name} is loaded", hint="see 'suture status'")
    if state.enabled:
        lp.set_enabled(name, False)
    finished, _ = _wait_transition(lp, name, policy.timeout, policy.timeout * policy.signal_after)
    if not finished:
        blockers = _blockers(lp, target_patched=False)
        try:
            lp.set_enabled(name, True)  # reverse: back to fully patched
        except SysfsError as e:
            raise TransitionError(
                f"disabling {name} did not finish within {policy.timeout:g} s{blockers}, and "
                f"reversing it failed: {e.message}",
                hint="the kernel goes on disabling it; watch 'suture status'",
            ) from e
        reversed_, _ = _wait_transition(lp, name, policy.backout_timeout, None)
        outcome = (
            "it was reversed and the patch stays applied"
            if reversed_
            else "its reversal is still running; the kernel finishes it by itself"
        )
        raise TransitionError(
            f"disabling {name} did not finish within {policy.timeout:g} s{blockers}; {outcome}",
            hint="retry 'suture unload' later, or raise --timeout",
        )
    return _remove(lp, name, sysroot)


def unload_all(policy: TransitionPolicy | None = None, sysroot: Path = Path("/")) -> list[str]:
    """Disable every live patch, newest first, removing their modules; returns their names."""
    lp = LivepatchSysfs(sysroot)
    removed = []
    for name in reversed(lp.names()):
        unload(name, policy, sysroot)
        removed.append(name)
    return removed


def status(sysroot: Path = Path("/")) -> dict[str, object]:
    """The running kernel and its live patches, JSON-ready (``format`` versioned)."""
    lp = LivepatchSysfs(sysroot)
    try:
        ident = read_identity(sysroot)
    except OSError as e:  # pragma: no cover - /proc unreadable
        raise KernelError(f"cannot read the kernel's identity: {e}") from e
    return {
        "format": 1,
        "kernel": ident.to_dict(),
        "patches": [
            {**s.to_dict(), "prematch_refused": list(module.prematch_refused(s.name, sysroot))}
            for s in lp.states()
        ],
    }
