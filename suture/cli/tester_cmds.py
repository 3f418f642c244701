"""``suture test``: each bundle in a guest of its own kernel build, under load, before publishing.

Exit codes: 0 every bundle passed; 91 one or more failed (each result is in
its manifest, and publish refuses it); 90 a bundle could not be tested (not
for its kernel build); lab and usage errors keep their own (see main.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture.cli.helptext import command
from suture.cli.output import Output
from suture.errors import UsageError

if TYPE_CHECKING:
    from suture.tester.runner import Tested

# The tester and the lab are imported inside the handler: other commands
# should not pay for them.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``test``."""
    p = command(
        subs,
        "test",
        common,
        summary="test bundles in a guest of their kernel build under load; record the result",
        description="Boot each bundle's own build in the lab, start a load (stress-ng, a "
        "module load loop), run SCRIPT (must fail), apply the bundle, keep it live, run SCRIPT "
        "(must pass), unload, run SCRIPT (must fail), and judge the kernel log and taint. The "
        "result goes into the bundle's manifest; publish requires a pass.",
        examples=[("suture test out/suture_fix.bundle --test examples/proc-cmdline.test.sh", "")],
        exits=(0, 20, 50, 90, 91),
    )
    p.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE", help="from 'suture build'")
    p.add_argument(
        "--test",
        type=Path,
        metavar="SCRIPT",
        help="an executable run in the guest before the patch (must fail), with it (must "
        "pass) and after it is removed (must fail)",
    )
    p.add_argument("--timeout", type=float, help="seconds allowed per bundle in the guest (600)")
    p.set_defaults(handler=cmd_test)


def cmd_test(args: argparse.Namespace, out: Output) -> int:
    """Test the bundles; exit 91 when one failed."""
    from suture.tester import runner

    timeout = runner.BUNDLE_SECONDS if args.timeout is None else args.timeout
    if timeout <= 0:
        raise UsageError("--timeout must be positive", hint="give seconds, e.g. --timeout 600")
    sys.stdout.flush()
    # The guest's progress goes to stderr: stdout holds the result only.
    report = runner.run(
        args.bundles,
        args.test,
        seconds_per_bundle=timeout,
        stdout=sys.stderr.buffer,
        log=out.message,
    )
    out.result(report.to_dict(), "\n".join(_describe(t) for t in report.bundles))
    failure = report.failure()
    if failure is None:
        return 0
    out.message(f"error: {failure.message}")
    out.message(f"what to do: {failure.hint}")
    return failure.exit_code


def _describe(t: Tested) -> str:
    test = t.test
    head = "passed" if test.passed else "FAILED"
    steps = ", ".join(f"{s.name} {'ok' if s.ok else 'FAILED'}" for s in test.steps)
    lines = [
        f"{head}: {t.path} ({t.manifest.name} level {t.manifest.level} on {test.release}, "
        f"{test.seconds:.0f} s)",
        f"  steps: {steps}",
    ]
    lines += [f"  {s.name}: {s.detail}" for s in test.steps if not s.ok]
    lines.append(f"  kernel log: {t.kernel_log} (sha256 {test.kernel_log_sha256[:16]}…)")
    return "\n".join(lines)
