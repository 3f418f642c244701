"""Early after boot: apply the cached level again, unless the crash-loop guard holds it.

A reboot drops every live patch. ``suture boot`` (the ``suture-boot``
systemd unit, before the network is up) applies the bundle the agent
cached when it last applied a level, if it was for exactly this kernel
build, and not a level the agent saw withdrawn from the repository. It
needs no server: the bundle was verified when it was downloaded, and its
sha256 is checked again against the state. Nothing here imports the TUF
client.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from suture.agent import guard
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import HostKernel, Kernel
from suture.agent.outcome import BootOutcome
from suture.errors import AgentStateError, SutureError


@dataclass(frozen=True)
class BootResult:
    """The outcome, with the level concerned (0: none) and why it was held."""

    outcome: BootOutcome
    release: str
    build_id: str
    level: int = 0
    patch: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "format": 1,
            "outcome": str(self.outcome),
            "kernel": {"release": self.release, "build_id": self.build_id},
            "level": self.level,
            "patch": self.patch,
            "reason": self.reason,
        }


def reapply(  # noqa: PLR0911 - one return per outcome
    config: AgentConfig,
    *,
    kernel: Kernel | None = None,
    clock: Callable[[], float] = time.time,
) -> BootResult:
    """Apply the cached level again if it belongs on this kernel build and is not held.

    Raises:
        AgentStateError: the state cannot be read, or the cached bundle is gone or altered.
        SutureError: the engine refused or backed out (recorded in the state first).
    """
    kernel = kernel or HostKernel()
    with agent_state.locked(config.state_dir):
        current = agent_state.read(config.state_dir)
        ident, boot, now = kernel.identity(), kernel.boot_id(), clock()
        a = current.applied

        def result(outcome: BootOutcome, reason: str = "") -> BootResult:
            level, patch = (a.level, a.patch) if a else (0, "")
            return BootResult(outcome, ident.release, ident.build_id, level, patch, reason)

        if not (ident.livepatch and ident.build_id):
            return result(BootOutcome.UNSUPPORTED)
        if a is None:
            return result(BootOutcome.NOTHING)
        if (a.release, a.build_id) != (ident.release, ident.build_id):
            return result(BootOutcome.OTHER_KERNEL)
        if a.patch in kernel.live_patches():
            return result(BootOutcome.LIVE)
        if current.is_withdrawn(a.release, a.build_id, a.level):
            # The agent saw the repository yank it and could not leave it then
            # (it was interrupted, or no level was left): never again.
            return result(BootOutcome.WITHDRAWN, "the repository withdrew this level")
        held = guard.crashed(current, boot, now)
        if held is not None:
            agent_state.write(
                config.state_dir,
                replace(current, held=held, last_check=now, last_result="held", last_error=None),
            )
            return result(BootOutcome.HELD, held.reason)
        if guard.holds(current, ident.release, ident.build_id, a.level):
            return result(BootOutcome.HELD, current.held.reason if current.held else "")
        _check_cached(a)
        try:
            kernel.apply(a.bundle)
        except SutureError as e:
            agent_state.write(
                config.state_dir,
                replace(current, last_check=now, last_result="error", last_error=e.to_dict()),
            )
            raise
        again = replace(a, boot_id=boot, applied_at=now, confirmed=False)
        agent_state.write(config.state_dir, replace(current, applied=again))
        return result(BootOutcome.REAPPLIED)


def _check_cached(a: agent_state.Applied) -> None:
    try:
        with a.bundle.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise AgentStateError(
            f"the cached bundle of level {a.level} ({a.bundle}) cannot be read: {e.strerror}",
            hint="run 'suture update': it downloads the level again",
        ) from e
    if a.sha256 and digest != a.sha256:
        raise AgentStateError(
            f"the cached bundle {a.bundle} changed since it was verified "
            f"(sha256 {digest[:16]}..., recorded {a.sha256[:16]}...); not applied",
            hint="something wrote into the agent's state folder; check the host, "
            "then run 'suture update' to fetch the level again",
        )
