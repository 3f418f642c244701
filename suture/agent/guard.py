"""The crash-loop guard: a level after which the host went down is not re-applied by itself.

A patch that crashes the kernel would, with a plain "re-apply at boot",
crash it again at every boot. So a level is on probation after it is
applied: it is *confirmed* once this boot has lasted ``crash_guard``
seconds since. At boot, an unconfirmed level applied during an earlier boot
means that boot ended early. Unless the agent's daemon saw a clean shutdown
of that boot (systemd stops it with SIGTERM on the way down), the level is
*held*: not re-applied, not applied again by updates, and reported, until
an operator clears the hold (``suture update --clear-hold``). A newer level
is still applied: it may be the fix.

Boots are told apart by the kernel's random boot id, which changes at every
boot and needs no clock.
"""

from __future__ import annotations

from pathlib import Path

from suture.agent.state import AgentState, Held

BOOT_ID = "proc/sys/kernel/random/boot_id"


def boot_id(sysroot: Path = Path("/")) -> str:
    """This boot's id ("" when the kernel does not say)."""
    try:
        return (sysroot / BOOT_ID).read_text().strip()
    except OSError:
        return ""


def confirmable(state: AgentState, boot: str, now: float, guard: int) -> bool:
    """True when the applied level has now lasted ``guard`` s in this boot, unconfirmed."""
    a = state.applied
    return bool(a and not a.confirmed and a.boot_id == boot and now - a.applied_at >= guard)


def confirm_at(state: AgentState, boot: str, guard: int) -> float | None:
    """When the applied level becomes confirmable (unix time, s), if it is on probation here."""
    a = state.applied
    if a is None or a.confirmed or a.boot_id != boot:
        return None
    return a.applied_at + guard


def crashed(state: AgentState, boot: str, now: float) -> Held | None:
    """The hold to place when the applied level's boot ended early; None when it did not.

    Args:
        state: the state as the previous boot left it.
        boot: this boot's id.
        now: unix time, s.
    """
    a = state.applied
    if a is None or a.confirmed or not a.boot_id or not boot or a.boot_id == boot:
        return None
    if state.clean_shutdown_boot == a.boot_id:
        return None
    reason = (
        f"the host went down during level {a.level}'s probation (applied in boot "
        f"{a.boot_id[:8]}, which ended without a clean shutdown)"
    )
    return Held(a.level, a.patch, a.release, a.build_id, reason, now)


def holds(state: AgentState, release: str, build_id: str, level: int) -> bool:
    """True when ``level`` of this kernel build is the one held back."""
    h = state.held
    return h is not None and (h.release, h.build_id, h.level) == (release, build_id, level)
