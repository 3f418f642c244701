"""``suture test`` on the host: check each bundle's build, boot it in the lab, record the results.

Bundles are grouped by kernel release and tested in guests of that exact
build, several per boot: the runner in the guest (:mod:`suture.tester.inside`)
removes every patch between two bundles, and stops after one that left the
kernel unclean, so the next boot takes the rest. A guest that dies (panic,
oops) or hangs fails the bundle it was testing, with the console's tail as
its kernel log. Each result is written into its bundle's manifest (same
module bytes), and the kernel log beside the bundle as ``<name>.kernel.log``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from suture import __version__, bundle, timefmt
from suture.bundle import LabStep, LabTest, Manifest
from suture.bundle.labtest import FAILED
from suture.errors import (
    EmulatorFaultError,
    GuestError,
    PatchTestError,
    PatchTestFailedError,
    ToolMissingError,
    UsageError,
)
from suture.fsutil import atomic_write, sha256_file
from suture.lab import guest
from suture.packages import kernels, vmlinux
from suture.packages.kernels import KernelTree
from suture.tester import kernel_log
from suture.tester.load import STRESS_NG, LoadPlan

# Default limit per bundle in a guest (software emulation). Measured: 314 s for one
# bundle of 6.1 under stress-ng; 7.x guests run round robin (ADR 21), on one host thread.
BUNDLE_SECONDS = 600.0
BOOT_SECONDS = 120.0  # boot and the runner's start-up, on top
# Mounted afresh in the guest: a host file there is not what the guest sees.
_HIDDEN = ("proc", "sys", "dev", "run")

_Member = tuple[Path, Manifest]


@dataclass(frozen=True)
class Tested:
    """One bundle after its test: its manifest now carries the result."""

    path: Path
    manifest: Manifest  # as rewritten, with ``test``
    test: LabTest
    kernel_log: Path  # the whole kernel log of the test, beside the bundle

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        m = self.manifest
        return {
            "bundle": str(self.path),
            "name": m.name,
            "level": m.level,
            "release": m.release,
            "build_id": m.build_id,
            "result": self.test.result,
            "kernel_log": str(self.kernel_log),
            "test": self.test.to_dict(),
        }


@dataclass(frozen=True)
class Report:
    """What ``suture test`` did, bundle by bundle, in the order given."""

    bundles: tuple[Tested, ...]

    @property
    def passed(self) -> bool:
        """True when every bundle passed."""
        return all(t.test.passed for t in self.bundles)

    def failure(self) -> PatchTestFailedError | None:
        """The error that says which bundles failed, or None when all passed."""
        failed = [t for t in self.bundles if not t.test.passed]
        if not failed:
            return None
        names = ", ".join(t.path.name for t in failed)
        return PatchTestFailedError(
            f"{len(failed)} of {len(self.bundles)} bundles failed their test: {names}",
            hint="the failed steps say why, and the kernel logs are beside the bundles; "
            "publish refuses them: fix the patch or the test script and run 'suture test' again",
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format 1)."""
        return {"format": 1, "ok": self.passed, "bundles": [t.to_dict() for t in self.bundles]}


def run(
    paths: Sequence[Path],
    script: Path | None = None,
    *,
    seconds_per_bundle: float = BUNDLE_SECONDS,
    stdout: IO[bytes] | int | None = None,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Test each bundle in a guest of its own kernel build and write the result into it.

    Args:
        paths: bundles from ``suture build``.
        script: a test program: it must fail before the patch, pass with it,
            fail again once it is removed (exit status 0 is a pass).
        seconds_per_bundle: time allowed per bundle in the guest.
        stdout: where the guest's progress goes (default: inherited).
        log: where the host says what it boots.

    Returns:
        Every bundle's result, failed ones included (see :meth:`Report.failure`).

    Raises:
        UsageError: a path is not a bundle, or the script cannot be run.
        BundleError: a bundle is malformed.
        PatchTestError: a bundle is not for the build its release names (nothing was tested).
        LabError: the kernel cannot be fetched, a tool is missing, or a guest fails to start.
    """
    say = log or (lambda _: None)
    script = _checked_script(script)
    if shutil.which(STRESS_NG) is None:
        raise ToolMissingError(
            f"{STRESS_NG} is not installed (the load the patch is applied under)",
            hint=f"apt-get install {STRESS_NG}",
        )
    tested = []
    for tree, members in _groups(paths):
        say(f"booting {tree.release} to test {len(members)} bundle(s)")
        runs = _run_group(
            tree, members, script=script, seconds=seconds_per_bundle, stdout=stdout, say=say
        )
        tested += [_record(path, manifest, test, text) for path, manifest, test, text in runs]
    return Report(tuple(tested))


def _visible(path: Path, what: str) -> Path:
    """``path`` made absolute, refused where the guest does not see the host's files."""
    path = path.absolute()
    if len(path.parts) > 1 and path.parts[1] in _HIDDEN:
        raise UsageError(
            f"{what} {path} is under /{path.parts[1]}, which the guest mounts afresh",
            hint="put it in another folder (the guest sees the host's other files)",
        )
    return path


def _checked_script(script: Path | None) -> Path | None:
    if script is None:
        return None
    script = _visible(script, "the test script")
    if not script.is_file():
        raise UsageError(f"--test {script}: no such file")
    if not os.access(script, os.X_OK):
        raise UsageError(
            f"--test {script} is not executable",
            hint=f"chmod +x {script}: it runs as a program (by its #! line) in the guest",
        )
    return script


def _groups(paths: Sequence[Path]) -> list[tuple[KernelTree, list[_Member]]]:
    """The bundles by kernel release, each release's kernel fetched and its build id checked."""
    if not paths:
        raise UsageError("no bundle to test", hint="suture test BUNDLE... [--test SCRIPT]")
    by_release: dict[str, list[_Member]] = {}
    seen = set()
    for given in paths:
        path = _visible(given, "the bundle")
        if path in seen:
            continue
        seen.add(path)
        if not bundle.is_bundle(path):
            raise UsageError(
                f"{path} is not a bundle",
                hint="suture test takes bundles from 'suture build': the result goes into "
                "their manifest",
            )
        manifest = bundle.read_manifest(path)
        by_release.setdefault(manifest.release, []).append((path, manifest))
    groups = []
    for release, members in by_release.items():
        tree = kernels.fetch(release)
        build_id = vmlinux.build_id(tree.vmlinuz, tree.vmlinux)
        wrong = [f"{p} ({m.build_id[:12] or 'none'})" for p, m in members if m.build_id != build_id]
        if wrong:
            raise PatchTestError(
                f"not built for {release} as the package archive has it "
                f"(build id {build_id[:12]}…): {', '.join(wrong)}",
                hint=f"rebuild with 'suture build --kernel {release}': a patch is only ever "
                "loaded on the exact build it was made for",
            )
        groups.append((tree, members))
    return groups


def _run_group(
    tree: KernelTree,
    members: list[_Member],
    *,
    script: Path | None,
    seconds: float,
    stdout: IO[bytes] | int | None,
    say: Callable[[str], None],
) -> Iterator[tuple[Path, Manifest, LabTest, str]]:
    """Each member's result and kernel log; a new boot after one that left the kernel unclean.

    A guest that dies of QEMU's stale-code fault tests its bundle once more,
    and the rest of the group, with round-robin TCG, which does not have it.
    """
    remaining = members
    threads = ""  # the lab's choice for the release
    retried: set[Path] = set()
    while remaining:
        argv = [sys.executable, "-m", "suture.tester.inside"]
        argv += ["--script", str(script)] if script else []
        argv += [str(path) for path, _ in remaining]
        died: GuestError | None = None
        with tempfile.TemporaryDirectory(prefix="suture-test-") as tmp:
            out = Path(tmp)
            limit = BOOT_SECONDS + seconds * len(remaining)
            cfg = guest.GuestConfig(timeout=limit, output_dir=out, tcg_threads=threads)
            try:
                ran = guest.run(tree, argv, cfg, stdout=stdout)
                code = ran.returncode
            except GuestError as e:
                died, code = e, -1
            done = list(_collected(out, len(remaining)))
        for (path, manifest), (test, text) in zip(remaining, done, strict=False):
            yield path, manifest, test, text
        n = len(done)
        if died is not None and n < len(remaining):
            path, manifest = remaining[n]
            if isinstance(died, EmulatorFaultError) and path not in retried:
                retried.add(path)
                threads = "single"
                say(f"{path.name}: {died.message}; testing it again with round-robin TCG")
            else:
                yield path, manifest, _died(tree, manifest, script, died), died.console_tail
                n += 1
        elif n == 0:
            raise PatchTestError(
                f"the test runner in the guest ended (exit {code}) before it tested "
                f"{remaining[0][0]}",
                hint="its output above says why",
            )
        remaining = remaining[n:]
        if remaining:
            say(f"booting {tree.release} again for the {len(remaining)} bundle(s) left")


def _collected(out: Path, count: int) -> Iterator[tuple[LabTest, str]]:
    """The results the runner wrote, in order, up to the first one missing."""
    for i in range(count):
        result = out / f"{i}.json"
        if not result.exists():
            return
        data = json.loads(result.read_text())
        yield LabTest.from_dict(data["test"]), (out / f"{i}.log").read_text(errors="replace")


def _died(tree: KernelTree, manifest: Manifest, script: Path | None, e: GuestError) -> LabTest:
    """A failed result for the bundle under test when the guest died or hung."""
    return LabTest(
        result=FAILED,
        release=tree.release,
        build_id=manifest.build_id,  # checked to be the tree's before the boot
        at=timefmt.utc(),
        tester=f"suture {__version__}",
        steps=(LabStep("guest", ok=False, detail=e.message),),
        script=script.name if script else "",
        script_sha256=sha256_file(script) if script else "",
        load=LoadPlan().describe(),
        kernel_log_sha256=hashlib.sha256(e.console_tail.encode()).hexdigest(),
        kernel_log=tuple(e.console_tail.splitlines()[-kernel_log.MAX_LINES :]),
        reason=f"guest: {e.message}",
    )


def _record(path: Path, manifest: Manifest, test: LabTest, text: str) -> Tested:
    """Write the kernel log beside the bundle and the result into its manifest."""
    log_path = path.with_suffix(".kernel.log")
    atomic_write(log_path, text.encode())
    new = bundle.record_test(path, test, module_sha256=manifest.module_sha256)
    return Tested(path, new, test, log_path)
