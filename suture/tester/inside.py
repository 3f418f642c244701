"""Runs in the lab guest: test each bundle given, one after another, on the running kernel.

    python -m suture.tester.inside [--script FILE] BUNDLE...

For each bundle, in order: clear the kernel log, start the load
(:mod:`suture.tester.load`), run the script (it must fail: the bug is
there), apply the bundle with the engine as ``suture apply`` does, load the
modules it patches, run the script (it must pass), unload the patch, run the
script (it must fail again), stop the load, and judge the kernel log and
taint (:mod:`suture.tester.kernel_log`). Without a script only the patch
steps run. Every patch is removed before the next bundle.

Each result goes to ``$SUTURE_OUT/<i>.json`` (a format 1 test record and
whether the kernel is still clean) with its kernel log in ``<i>.log``; the
host copies them out when the guest stops. After a bundle that left the
kernel unclean the runner stops, so that no later bundle is judged on a
damaged kernel: the host boots a fresh guest for the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from suture import __version__, bundle, timefmt
from suture.agent.local import apply_file
from suture.bundle.labtest import FAILED, PASSED, LabStep, LabTest
from suture.errors import SutureError
from suture.fsutil import sha256_file
from suture.kernel import engine, module
from suture.kernel.identity import read_identity
from suture.kernel.livepatch import LivepatchSysfs
from suture.tester import kernel_log
from suture.tester.load import LoadPlan, running

OUTPUT_TAIL = 300  # characters of a script's output kept in its step


@dataclass(frozen=True)
class Timing:
    """How long steps may take, and how long the patch stays live, in s.

    The limits are generous: software emulation runs 10-50x slower than the host,
    and slower still when the host's cores are shared: a Python script that makes
    one system call was seen to take over 90 s to start under stress-ng on a busy
    2-core host, while the patch was fine.
    """

    script: float = 300.0  # one run of the test script
    transition: float = 60.0  # each patching or unpatching transition, under load
    soak: float = 10.0  # the patch live under the load before it is tested and removed


@dataclass(frozen=True)
class Outcome:
    """One bundle's result, its whole kernel log, and whether the kernel is still clean."""

    test: LabTest
    log: str
    clean: bool


@dataclass
class _Steps:
    """The steps so far; each is announced on stdout (the host streams it) as it ends."""

    patch: str
    done: list[LabStep] = field(default_factory=list)

    def add(self, step: LabStep) -> LabStep:
        self.done.append(step)
        state = "ok" if step.ok else "FAILED"
        detail = step.detail.strip().replace("\n", " | ")
        print(f"suture-test: {self.patch}: {step.name}: {state} {detail}".rstrip(), flush=True)
        return step


def test_bundle(
    path: Path, script: Path | None, plan: LoadPlan | None = None, timing: Timing | None = None
) -> Outcome:
    """Test one bundle on the running kernel; every patch is removed when it returns.

    Raises:
        BundleError: the bundle cannot be read (nothing was tested).
    """
    plan, timing = plan or LoadPlan(), timing or Timing()
    manifest = bundle.read_manifest(path)
    steps = _Steps(manifest.name)
    clear_kernel_log()
    at = timefmt.utc()
    start = time.monotonic()
    with running(plan) as load:
        try:
            _patch_steps(path, manifest, script, timing, steps)
        finally:
            steps.add(load.stop())
            left = _remove_all(timing)
    log = read_kernel_log()
    ident = read_identity()
    verdict = kernel_log.judge(log, ident.taint_flags)
    steps.add(LabStep("kernel-log", ok=verdict.clean, detail="; ".join(verdict.problems[:3])))
    failed = [s for s in steps.done if not s.ok]
    test = LabTest(
        result=FAILED if failed else PASSED,
        release=ident.release,
        build_id=ident.build_id,
        at=at,
        tester=f"suture {__version__}",
        steps=tuple(steps.done),
        seconds=round(time.monotonic() - start, 2),
        script=script.name if script else "",
        script_sha256=sha256_file(script) if script else "",
        load=plan.describe(),
        kernel_log_sha256=verdict.sha256,
        kernel_log=verdict.lines,
        taint=verdict.taint,
        reason="; ".join(f"{s.name}: {s.detail}" for s in failed)[:1000],
    )
    return Outcome(test, log, clean=verdict.clean and not left)


def clear_kernel_log() -> None:
    """Empty the kernel's ring buffer, so that the log read at the end is this test's own."""
    subprocess.run(["dmesg", "-C"], check=True)


def read_kernel_log() -> str:
    """The kernel's ring buffer, as ``dmesg`` prints it."""
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def _patch_steps(
    path: Path, manifest: bundle.Manifest, script: Path | None, timing: Timing, steps: _Steps
) -> None:
    """Script before, apply, modules, script, unload, script: each step recorded."""
    env = {**os.environ, "SUTURE_PATCH": manifest.name, "SUTURE_BUNDLE": str(path)}
    if script:
        steps.add(_run_script(script, "before", False, env, timing.script))
    started = time.monotonic()
    try:
        applied = apply_file(path, engine.TransitionPolicy(timeout=timing.transition))
        steps.add(LabStep("apply", ok=True, seconds=_since(started), detail=_applied(applied)))
    except SutureError as e:
        steps.add(LabStep("apply", ok=False, seconds=_since(started), detail=_error(e)))
        return
    loaded = _load_patched_modules(manifest, steps)
    time.sleep(timing.soak)  # the load runs through the new code for a while
    if script:
        steps.add(_run_script(script, "patched", True, env, timing.script))
    started = time.monotonic()
    try:
        engine.unload(manifest.name, engine.TransitionPolicy(timeout=timing.transition))
        unloaded = steps.add(LabStep("unload", ok=True, seconds=_since(started)))
    except SutureError as e:
        unloaded = steps.add(LabStep("unload", ok=False, seconds=_since(started), detail=_error(e)))
    if script and unloaded.ok:
        steps.add(_run_script(script, "after", False, env, timing.script))
    for name in loaded:
        subprocess.run(["modprobe", "-r", name], capture_output=True, check=False)


def _applied(result: engine.ApplyResult) -> str:
    replaced = f"; replaced {', '.join(result.superseded)}" if result.superseded else ""
    return f"transition in {result.seconds:.2f} s{replaced}"


def _load_patched_modules(manifest: bundle.Manifest, steps: _Steps) -> list[str]:
    """Load each module the patch changes; the core must patch it as it loads.

    Returns:
        The modules this step loaded (to be removed again).
    """
    wanted = [o.name for o in manifest.objects if o.name != "vmlinux"]
    if not wanted:
        return []
    started = time.monotonic()
    loaded, problems = [], []
    for name in wanted:
        if not module.is_loaded(name):
            done = subprocess.run(["modprobe", name], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                problems.append(f"modprobe {name}: {done.stderr.strip()[:200]}")
                continue
            loaded.append(name)
        state = LivepatchSysfs().state(manifest.name)
        if not any(o.name == name and o.patched for o in (state.objects if state else ())):
            problems.append(f"{name} is loaded but the livepatch core did not patch it")
    ok = not problems
    detail = "; ".join(problems) or f"the core patched {', '.join(wanted)}"
    steps.add(LabStep("modules", ok=ok, seconds=_since(started), detail=detail))
    return loaded


def _run_script(
    script: Path, step: str, must_pass: bool, env: dict[str, str], limit: float
) -> LabStep:
    """Run the test script once; ``must_pass``: with the patch applied, else without."""
    expect = "pass" if must_pass else "fail"
    started = time.monotonic()
    try:
        # A session of its own: at the time limit, its children are stopped too.
        proc = subprocess.Popen(
            [str(script)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**env, "SUTURE_TEST_STEP": step},
            start_new_session=True,
        )
    except OSError as e:
        return LabStep(step, ok=False, expect=expect, detail=f"cannot run {script}: {e.strerror}")
    try:
        output, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        tail = _tail(output)
        detail = f"killed after {limit:g} s" + (f"; output: {tail}" if tail else "")
        return LabStep(step, ok=False, expect=expect, seconds=_since(started), detail=detail)
    code = proc.returncode
    ok = (code == 0) == must_pass
    why = "" if ok else _WRONG[step].format(code=code) + "; "
    return LabStep(
        step,
        ok=ok,
        expect=expect,
        exit=code,
        seconds=_since(started),
        detail=why + _tail(output),
    )


# Why a script's run is wrong, per step.
_WRONG = {
    "before": "it passes without the patch (exit {code}): it does not show the bug",
    "patched": "it fails with the patch applied (exit {code})",
    "after": "it still passes once the patch is removed (exit {code})",
}


def _tail(output: bytes) -> str:
    return output.decode(errors="replace").strip()[-OUTPUT_TAIL:]


def _remove_all(timing: Timing) -> str:
    """Remove every live patch left (a failed step's); "" when the kernel is clean of them."""
    try:
        left = engine.unload_all(engine.TransitionPolicy(timeout=timing.transition))
    except SutureError as e:
        return f"a live patch could not be removed: {e.message}"
    if left:
        print(f"suture-test: removed leftover live patches: {', '.join(left)}", flush=True)
    return ""


def _error(e: SutureError) -> str:
    return f"{type(e).__name__}: {e.message}"


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def main(argv: Sequence[str] | None = None) -> int:
    """Test the bundles on the command line; results to ``$SUTURE_OUT``. Returns 0."""
    parser = argparse.ArgumentParser(prog="python -m suture.tester.inside")
    parser.add_argument("--script", type=Path, help="the test script")
    parser.add_argument("bundles", type=Path, nargs="+")
    args = parser.parse_args(argv)
    out = Path(os.environ["SUTURE_OUT"])
    for i, path in enumerate(args.bundles):
        outcome = test_bundle(path, args.script)
        (out / f"{i}.log").write_text(outcome.log)
        record = {"format": 1, "test": outcome.test.to_dict(), "clean": outcome.clean}
        (out / f"{i}.json").write_text(json.dumps(record))
        if not outcome.clean:
            print("suture-test: the kernel is not clean: the rest goes to a new guest", flush=True)
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
