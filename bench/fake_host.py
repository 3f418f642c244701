"""`suture` as a process, on a fake kernel: the agent's /proc and /sys reads go to a sysroot.

bench/update.py runs this instead of .venv/bin/suture because the CLI has no
way to point the agent at a sysroot, and this machine has no livepatch
kernel (the real `suture update` would stop at "unsupported" and never take
the no-change path the bench is about).

    SUTURE_BENCH_SYSROOT=/tmp/x/root python bench/fake_host.py update --server ... --json

SUTURE_BENCH_SYSROOT: the fake tree (proc/sys/kernel/osrelease, sys/kernel/notes,
    sys/kernel/livepatch/<name>/{enabled,transition}, ...). Required.
SUTURE_BENCH_FAKE_APPLY=1: HostKernel.apply does nothing and supersedes nothing,
    so a first run can record a level as applied without an engine.

The entry point is otherwise .venv/bin/suture's: `suture.cli.main.main()`.
The modules imported here before main() (host, guard, identity, livepatch)
are ones `suture update` imports anyway, so the update's cost is unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _patch(sysroot: Path, fake_apply: bool) -> None:
    from suture.agent import guard, host
    from suture.kernel import identity, livepatch

    # Defaults are bound when a function is defined, so rebinding __defaults__
    # reaches every caller, including modules that did `from x import name`.
    host.HostKernel.__init__.__defaults__ = (sysroot, None)
    identity.read_identity.__defaults__ = (sysroot,)
    livepatch.LivepatchSysfs.__init__.__defaults__ = (sysroot,)
    guard.boot_id.__defaults__ = (sysroot,)
    if fake_apply:

        def apply(self: host.HostKernel, bundle: Path) -> list[str]:
            return []

        host.HostKernel.apply = apply  # type: ignore[method-assign]


def main() -> int:
    root = os.environ.get("SUTURE_BENCH_SYSROOT")
    if not root:
        print(
            "fake_host.py: set SUTURE_BENCH_SYSROOT to a fake /proc and /sys tree", file=sys.stderr
        )
        return 64
    _patch(Path(root), os.environ.get("SUTURE_BENCH_FAKE_APPLY") == "1")
    from suture.cli.main import main as suture_main

    return suture_main()


if __name__ == "__main__":
    sys.exit(main())
