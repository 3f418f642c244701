"""suture test without a guest: the kernel log verdict, the steps in the guest on a fake kernel,
the host's boots and records with a fake guest, and the command line.

The real thing (QEMU, stress-ng, the engine on the real kernel) is tests/test_guest_tester.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from suture import bundle
from suture.bundle import LabStep
from suture.cli.main import main
from suture.errors import (
    EmulatorFaultError,
    GuestError,
    GuestTimeoutError,
    PatchTestError,
    PreflightError,
    ToolMissingError,
    UsageError,
)
from suture.kernel import engine, livepatch
from suture.kernel.identity import TAINT_LETTERS
from suture.lab import guest
from suture.packages.kernels import KernelTree
from suture.repo import create
from suture.tester import inside, kernel_log, runner
from tests.support.kernel import identity
from tests.support.repo import BUILD_A, BUILD_B, RELEASE, lab_test, make_bundle

LOG = """\
[   24.17] suture_fix_1: loading out-of-tree module taints kernel.
[   24.17] suture_fix_1: module verification failed: signature and/or required key missing - tainting kernel
[   24.98] livepatch: enabling patch 'suture_fix_1'
[   25.13] livepatch: 'suture_fix_1': patching complete
[   25.20] IPv6: ADDRCONF(NETDEV_CHANGE): lo: link becomes ready
"""  # noqa: E501 - a kernel line as it is


# --- the kernel log and taint ----------------------------------------------------


def test_a_clean_log_keeps_the_livepatch_lines_and_the_digest() -> None:
    verdict = kernel_log.judge(LOG, "OEK")
    assert verdict.clean and verdict.taint == "OEK"
    assert verdict.sha256 == hashlib.sha256(LOG.encode()).hexdigest()
    assert len(verdict.lines) == 4  # not the IPv6 line
    assert all("livepatch" in line or "taint" in line for line in verdict.lines)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("BUG: kernel NULL pointer dereference, address: 0000000000000008", "bug"),
        ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops"),
        ("kernel BUG at mm/slub.c:435!", "oops"),
        ("BUG: sleeping function called from invalid context at mm/slab.h:1", "bug"),
        ("WARNING: CPU: 1 PID: 90 at kernel/livepatch/transition.c:85", "warning"),
        ("rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu stall"),
        ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu stall"),
        ("WARNING: possible circular locking dependency detected", "warning"),
        ("inconsistent lock state", "lockdep"),
        ("INFO: task modprobe:812 blocked for more than 120 seconds.", "hung task"),
        ("livepatch: failed to register patch 'x'", "livepatch failure"),
        ("livepatch: 'x': patch failed to enable", "livepatch failure"),
        ("Call Trace:", "stack dump"),
        ("UBSAN: array-index-out-of-bounds in fs/proc/cmdline.c:9:2", "sanitizer"),
    ],
)
def test_each_problem_fails_the_test(line: str, kind: str) -> None:
    verdict = kernel_log.judge(LOG + f"[   26.00] {line}\n", "OEK")
    assert not verdict.clean
    assert verdict.problems == (f"{kind}: [   26.00] {line}",)
    assert verdict.lines[0] == f"[   26.00] {line}"  # problems first


@pytest.mark.parametrize(
    ("taint", "clean"), [("", True), ("K", True), ("OEK", True), ("WOEK", False), ("D", False)]
)
def test_only_the_taint_of_loading_a_patch_is_allowed(taint: str, clean: bool) -> None:
    verdict = kernel_log.judge(LOG, taint)
    assert verdict.clean == clean
    if not clean:
        assert verdict.problems[-1].startswith(f"taint: the kernel is tainted {taint}")


def test_the_kept_lines_are_bounded() -> None:
    noisy = "".join(f"livepatch: line {i} " + "x" * 500 + "\n" for i in range(100))
    verdict = kernel_log.judge(noisy, "")
    assert len(verdict.lines) == kernel_log.MAX_LINES
    assert max(map(len, verdict.lines)) == kernel_log.MAX_LINE


# --- the steps in the guest, on a fake kernel --------------------------------------


@dataclass
class FakeGuestKernel:
    """The engine, the load and the kernel log as the runner in the guest sees them."""

    marker: Path  # exists while the patch is applied: what the test script checks
    log: str = LOG
    taint: str = "OEK"
    apply_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def apply_file(self, path: Path, policy: engine.TransitionPolicy) -> engine.ApplyResult:
        self.calls.append("apply")
        if self.apply_error is not None:
            raise self.apply_error
        self.marker.touch()
        return engine.ApplyResult(name="suture_fix_1", seconds=0.25)

    def unload(self, name: str, policy: engine.TransitionPolicy | None = None) -> None:
        self.calls.append(f"unload {name}")
        self.marker.unlink()

    def unload_all(self, policy: engine.TransitionPolicy | None = None) -> list[str]:
        self.calls.append("unload_all")
        return []

    @contextlib.contextmanager
    def running(self, plan: object) -> Iterator[Any]:
        self.calls.append("load start")

        class Load:
            def stop(self_) -> LabStep:  # noqa: N805 - the fake's own self is the kernel's
                self.calls.append("load stop")
                return LabStep("load", ok=True, detail="3 module load/unload cycles")

        yield Load()


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGuestKernel:
    fake = FakeGuestKernel(marker=tmp_path / "patched")
    monkeypatch.setattr(inside, "apply_file", fake.apply_file)
    monkeypatch.setattr(inside.engine, "unload", fake.unload)
    monkeypatch.setattr(inside.engine, "unload_all", fake.unload_all)
    monkeypatch.setattr(inside, "running", fake.running)
    monkeypatch.setattr(inside, "clear_kernel_log", lambda: fake.calls.append("dmesg -C"))
    monkeypatch.setattr(inside, "read_kernel_log", lambda: fake.log)
    monkeypatch.setattr(
        inside,
        "read_identity",
        lambda: identity(release=RELEASE, build_id=BUILD_A, taint=_taint(fake.taint)),
    )
    return fake


def _taint(letters: str) -> int:
    return sum(1 << TAINT_LETTERS.index(c) for c in letters)


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "check.sh"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


FAST = inside.Timing(script=5.0, soak=0.0)


def test_a_good_patch_passes_every_step(kernel: FakeGuestKernel, tmp_path: Path) -> None:
    check = script(
        tmp_path, f'echo "step $SUTURE_TEST_STEP of $SUTURE_PATCH"\ntest -e {kernel.marker}'
    )
    outcome = inside.test_bundle(make_bundle(tmp_path, 1), check, timing=FAST)
    test = outcome.test
    assert test.passed and outcome.clean and test.reason == ""
    assert [(s.name, s.ok, s.expect, s.exit) for s in test.steps] == [
        ("before", True, "fail", 1),
        ("apply", True, "", None),
        ("patched", True, "pass", 0),
        ("unload", True, "", None),
        ("after", True, "fail", 1),
        ("load", True, "", None),
        ("kernel-log", True, "", None),
    ]
    assert test.steps[2].detail == "step patched of suture_fix_1"
    assert kernel.calls == [
        "dmesg -C",
        "load start",
        "apply",
        "unload suture_fix_1",
        "load stop",
        "unload_all",
    ]
    assert (test.release, test.build_id, test.taint) == (RELEASE, BUILD_A, "OEK")
    assert test.script == "check.sh"
    assert test.script_sha256 == hashlib.sha256(check.read_bytes()).hexdigest()
    assert test.kernel_log_sha256 == hashlib.sha256(LOG.encode()).hexdigest()
    assert outcome.log == LOG
    assert test.tester.startswith("suture ") and test.at.endswith("Z")
    assert "stress-ng" in test.load


def test_without_a_script_only_the_patch_steps_run(kernel: FakeGuestKernel, tmp_path: Path) -> None:
    test = inside.test_bundle(make_bundle(tmp_path, 1), None, timing=FAST).test
    assert test.passed
    assert [s.name for s in test.steps] == ["apply", "unload", "load", "kernel-log"]
    assert test.script == test.script_sha256 == ""


def test_a_script_that_passes_without_the_patch_fails_the_test(
    kernel: FakeGuestKernel, tmp_path: Path
) -> None:
    test = inside.test_bundle(
        make_bundle(tmp_path, 1), script(tmp_path, "exit 0"), timing=FAST
    ).test
    assert not test.passed
    failed = [s.name for s in test.steps if not s.ok]
    assert failed == ["before", "after"]
    assert test.reason.startswith("before: it passes without the patch (exit 0)")


def test_a_script_that_fails_with_the_patch_fails_the_test(
    kernel: FakeGuestKernel, tmp_path: Path
) -> None:
    test = inside.test_bundle(
        make_bundle(tmp_path, 1), script(tmp_path, "exit 3"), timing=FAST
    ).test
    assert [s.name for s in test.steps if not s.ok] == ["patched"]
    assert "it fails with the patch applied (exit 3)" in test.reason


def test_a_refused_patch_stops_before_the_patched_steps(
    kernel: FakeGuestKernel, tmp_path: Path
) -> None:
    kernel.apply_error = PreflightError("built for another kernel", check="build_id")
    check = script(tmp_path, f"test -e {kernel.marker}")
    test = inside.test_bundle(make_bundle(tmp_path, 1), check, timing=FAST).test
    assert [(s.name, s.ok) for s in test.steps] == [
        ("before", True),
        ("apply", False),
        ("load", True),
        ("kernel-log", True),
    ]
    assert test.reason == "apply: PreflightError: built for another kernel"
    assert kernel.calls[-2:] == ["load stop", "unload_all"]  # the load stops, nothing is left


def test_a_warning_in_the_kernel_log_fails_the_test_and_stops_the_boot(
    kernel: FakeGuestKernel, tmp_path: Path
) -> None:
    kernel.log += "[   30.00] WARNING: CPU: 0 PID: 1 at kernel/fork.c:1 copy_process\n"
    kernel.taint = "WOEK"
    outcome = inside.test_bundle(make_bundle(tmp_path, 1), None, timing=FAST)
    assert not outcome.test.passed and not outcome.clean
    assert outcome.test.steps[-1].name == "kernel-log"
    assert "warning: [   30.00] WARNING" in outcome.test.reason
    assert "taint: the kernel is tainted WOEK" in outcome.test.reason
    assert outcome.test.kernel_log[0].startswith("[   30.00] WARNING")


def test_a_script_is_stopped_with_its_children_at_its_time_limit(
    kernel: FakeGuestKernel, tmp_path: Path
) -> None:
    # The child keeps the output pipe open: only stopping the whole group ends the run.
    check = script(tmp_path, "echo started\nsleep 60 &\nsleep 60")
    timing = inside.Timing(script=0.5, soak=0.0)
    test = inside.test_bundle(make_bundle(tmp_path, 1), check, timing=timing).test
    before = test.steps[0]
    assert (before.name, before.ok, before.exit) == ("before", False, None)
    assert before.detail == "killed after 0.5 s; output: started"
    assert before.seconds < 10


def test_the_modules_a_patch_changes_are_loaded_and_must_be_patched(
    kernel: FakeGuestKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = (
        bundle.PatchedObject("vmlinux", (bundle.Function("cmdline_proc_show"),)),
        bundle.PatchedObject("mrp", (bundle.Function("mrp_rcv"),)),
        bundle.PatchedObject("ext4", (bundle.Function("ext4_sync_fs"),)),
    )
    path = make_bundle(tmp_path, 1)
    with bundle.opened(path) as (manifest, ko):
        bundle.write(path, replace(manifest, objects=objects), ko.read_bytes())
    commands: list[list[str]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        commands.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    patched = {"mrp": True, "ext4": False}  # ext4 was loaded already, and is not patched

    class Sysfs:
        def state(self, name: str) -> livepatch.PatchState:
            objs = tuple(livepatch.PatchedObject(n, p, ()) for n, p in patched.items())
            return livepatch.PatchState(name, True, False, True, objs)

    monkeypatch.setattr(inside.subprocess, "run", run)
    monkeypatch.setattr(inside.module, "is_loaded", lambda name: name == "ext4")
    monkeypatch.setattr(inside, "LivepatchSysfs", Sysfs)
    test = inside.test_bundle(path, None, timing=FAST).test
    step = next(s for s in test.steps if s.name == "modules")
    assert not step.ok
    assert step.detail == "ext4 is loaded but the livepatch core did not patch it"
    assert ["modprobe", "mrp"] in commands and ["modprobe", "ext4"] not in commands
    assert commands[-1] == ["modprobe", "-r", "mrp"]  # only what the test loaded is removed
    patched["ext4"] = True
    commands.clear()
    test = inside.test_bundle(path, None, timing=FAST).test
    assert test.passed
    assert next(s for s in test.steps if s.name == "modules").detail == (
        "the core patched mrp, ext4"
    )


def test_the_runner_writes_each_result_and_stops_after_an_unclean_kernel(
    kernel: FakeGuestKernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("SUTURE_OUT", str(out))
    monkeypatch.setattr(inside, "Timing", lambda: FAST)  # no soak
    first, second = make_bundle(tmp_path, 1), make_bundle(tmp_path, 2)
    kernel.log += "[   30.00] BUG: unable to handle page fault\n"
    assert inside.main([str(first), str(second)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.json", "0.log"]
    record = json.loads((out / "0.json").read_text())
    assert (record["format"], record["clean"], record["test"]["result"]) == (1, False, "failed")
    assert (out / "0.log").read_text() == kernel.log


# --- the host: build checks, boots, records (a fake guest) ------------------------


@dataclass
class FakeLab:
    """Kernel trees and a guest whose runner does what ``plan`` says for each bundle.

    ``plan`` maps a bundle's file name to ``pass``, ``fail``, ``unclean`` (failed,
    and the runner stops), ``die`` (the guest panics), ``hang`` (it times out),
    ``stale`` (QEMU's stale-code fault, which round robin does not have) or
    ``stale-always``.
    """

    tmp_path: Path
    plan: dict[str, str] = field(default_factory=dict)
    build_ids: dict[str, str] = field(default_factory=lambda: {RELEASE: BUILD_A})
    boots: list[tuple[str, list[str]]] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)  # each boot's TCG choice
    silent: bool = False  # the runner ends without writing anything

    def fetch(self, release: str | None) -> KernelTree:
        assert release is not None
        return KernelTree(release, "6.1.0-1", self.tmp_path / "kernels" / release)

    def build_id(self, vmlinuz: Path, dest: Path) -> str:
        return self.build_ids[vmlinuz.name.removeprefix("vmlinuz-")]

    def run(
        self, tree: KernelTree, argv: list[str], cfg: guest.GuestConfig, **kw: object
    ) -> guest.GuestResult:
        assert argv[:3] == [sys.executable, "-m", "suture.tester.inside"]
        paths = argv[5:] if argv[3] == "--script" else argv[3:]
        self.boots.append((tree.release, [Path(p).name for p in paths]))
        self.threads.append(cfg.tcg_threads)
        assert cfg.output_dir is not None
        assert cfg.timeout == runner.BOOT_SECONDS + runner.BUNDLE_SECONDS * len(paths)
        for i, path in enumerate([] if self.silent else paths):
            what = self.plan.get(Path(path).name, "pass")
            if what == "die":
                raise GuestError(
                    "the guest kernel failed (Kernel panic)",
                    console_tail="Kernel panic - not syncing: Fatal exception",
                )
            if what == "stale-always" or (what == "stale" and cfg.tcg_threads != "single"):
                raise EmulatorFaultError(
                    "the guest took an int3 at __schedule+0x411/0xbe0 that its code no "
                    "longer holds",
                    console_tail="Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
                )
            if what == "hang":
                raise GuestTimeoutError(
                    "the guest command did not finish within 420 s", console_tail=""
                )
            manifest = bundle.read_manifest(Path(path))
            result = "passed" if what in ("pass", "stale") else "failed"
            test = lab_test(tree.release, manifest.build_id, result)
            record = {"format": 1, "test": test.to_dict(), "clean": what != "unclean"}
            (cfg.output_dir / f"{i}.json").write_text(json.dumps(record))
            (cfg.output_dir / f"{i}.log").write_text(f"log of {Path(path).name}\n")
            if what == "unclean":
                break
        return guest.GuestResult(returncode=0, seconds=1.0, console="")


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeLab:
    fake = FakeLab(tmp_path)
    monkeypatch.setattr(runner.kernels, "fetch", fake.fetch)
    monkeypatch.setattr(runner.vmlinux, "build_id", fake.build_id)
    monkeypatch.setattr(runner.guest, "run", fake.run)
    monkeypatch.setattr(runner.shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


def bundles(tmp_path: Path, count: int, **kw: Any) -> list[Path]:
    folder = tmp_path / "built"
    folder.mkdir(exist_ok=True)
    return [
        make_bundle(folder, level, test=None, name=f"fix_{level}", **kw)
        for level in range(1, count + 1)
    ]


def test_results_are_written_into_the_bundles(lab: FakeLab, tmp_path: Path) -> None:
    paths = bundles(tmp_path, 2)
    modules = {p: _module(p) for p in paths}
    report = runner.run(paths, script(tmp_path, "exit 0"))
    assert report.passed and report.failure() is None
    assert lab.boots == [(RELEASE, [p.name for p in paths])]  # one boot for one build
    for tested, path in zip(report.bundles, paths, strict=True):
        manifest = bundle.read_manifest(path)
        assert manifest.test == tested.test and manifest.test is not None and manifest.test.passed
        assert _module(path) == modules[path]  # the same module bytes
        assert tested.kernel_log == path.with_suffix(".kernel.log")
        assert tested.kernel_log.read_text() == f"log of {path.name}\n"
    data = report.to_dict()
    assert (data["format"], data["ok"], len(data["bundles"])) == (1, True, 2)
    assert data["bundles"][0]["result"] == "passed"


def _module(path: Path) -> bytes:
    with bundle.opened(path) as (_, ko):
        return ko.read_bytes()


def test_a_guest_that_dies_fails_the_bundle_under_test_and_boots_again(
    lab: FakeLab, tmp_path: Path
) -> None:
    a, b, c = bundles(tmp_path, 3)
    lab.plan = {b.name: "die"}
    report = runner.run([a, b, c])
    assert lab.boots == [(RELEASE, [a.name, b.name, c.name]), (RELEASE, [c.name])]
    assert [t.test.result for t in report.bundles] == ["passed", "failed", "passed"]
    died = bundle.read_manifest(b).test
    assert died is not None and died.reason == "guest: the guest kernel failed (Kernel panic)"
    assert [s.name for s in died.steps] == ["guest"]
    assert b.with_suffix(".kernel.log").read_text().startswith("Kernel panic")
    failure = report.failure()
    assert failure is not None and failure.exit_code == 91 and b.name in failure.message


def test_an_emulator_fault_tests_the_bundle_again_with_round_robin(
    lab: FakeLab, tmp_path: Path
) -> None:
    a, b, c = bundles(tmp_path, 3)
    lab.plan = {b.name: "stale"}
    said: list[str] = []
    report = runner.run([a, b, c], log=said.append)
    assert lab.boots == [(RELEASE, [a.name, b.name, c.name]), (RELEASE, [b.name, c.name])]
    assert lab.threads == ["", "single"]  # the lab's choice first, then round robin
    assert [t.test.result for t in report.bundles] == ["passed", "passed", "passed"]
    assert report.passed
    assert any(b.name in line and "round-robin" in line for line in said)


def test_a_second_emulator_fault_fails_the_bundle(lab: FakeLab, tmp_path: Path) -> None:
    a, b = bundles(tmp_path, 2)
    lab.plan = {a.name: "stale-always"}
    report = runner.run([a, b])
    assert lab.boots == [(RELEASE, [a.name, b.name])] * 2 + [(RELEASE, [b.name])]
    assert [t.test.result for t in report.bundles] == ["failed", "passed"]
    died = bundle.read_manifest(a).test
    assert died is not None and "int3" in died.reason


def test_a_hung_guest_fails_the_bundle_under_test(lab: FakeLab, tmp_path: Path) -> None:
    [a] = bundles(tmp_path, 1)
    lab.plan = {a.name: "hang"}
    report = runner.run([a])
    assert "did not finish within" in report.bundles[0].test.reason


def test_after_an_unclean_kernel_the_rest_gets_a_fresh_guest(lab: FakeLab, tmp_path: Path) -> None:
    a, b = bundles(tmp_path, 2)
    lab.plan = {a.name: "unclean"}
    report = runner.run([a, b])
    assert lab.boots == [(RELEASE, [a.name, b.name]), (RELEASE, [b.name])]
    assert [t.test.result for t in report.bundles] == ["failed", "passed"]


def test_a_runner_that_tests_nothing_is_an_error(lab: FakeLab, tmp_path: Path) -> None:
    lab.silent = True
    with pytest.raises(PatchTestError, match=r"ended .* before it tested"):
        runner.run(bundles(tmp_path, 1))


def test_each_build_gets_its_own_guest(lab: FakeLab, tmp_path: Path) -> None:
    lab.build_ids["6.1.0-55-amd64"] = BUILD_B
    [a] = bundles(tmp_path, 1)
    other = make_bundle(tmp_path, 1, test=None, release="6.1.0-55-amd64", build_id=BUILD_B)
    report = runner.run([a, other, a])  # a twice: tested once
    assert lab.boots == [(RELEASE, [a.name]), ("6.1.0-55-amd64", [other.name])]
    assert len(report.bundles) == 2


def test_a_bundle_for_another_build_is_refused_before_any_boot(
    lab: FakeLab, tmp_path: Path
) -> None:
    good = bundles(tmp_path, 1)
    wrong = make_bundle(tmp_path, 1, test=None, build_id=BUILD_B)
    with pytest.raises(PatchTestError, match=r"not built for 6.1.0-56-amd64 .*fedcba987654") as e:
        runner.run([*good, wrong])
    assert e.value.exit_code == 90 and "suture build --kernel" in e.value.hint
    assert lab.boots == []
    assert bundle.read_manifest(wrong).test is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent.sh", "no such file"),
        (lambda p: (p / "plain.sh").write_text("exit 0") and p / "plain.sh", "is not executable"),
        (lambda p: Path("/proc/self/status"), "mounts afresh"),
    ],
)
def test_a_script_the_guest_cannot_run_is_refused(
    lab: FakeLab, tmp_path: Path, make: Any, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        runner.run(bundles(tmp_path, 1), make(tmp_path))
    assert lab.boots == []


def test_what_is_not_a_bundle_is_refused(lab: FakeLab, tmp_path: Path) -> None:
    ko = tmp_path / "x.ko"
    ko.write_bytes(b"\x7fELF")
    with pytest.raises(UsageError, match="is not a bundle"):
        runner.run([ko])


def test_stress_ng_is_required(
    lab: FakeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="stress-ng is not installed") as e:
        runner.run(bundles(tmp_path, 1))
    assert e.value.hint == "apt-get install stress-ng"


# --- the command line: suture test, and the publish gate ----------------------------


def test_cli_test_json_and_exit_codes(
    lab: FakeLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = bundles(tmp_path, 2)
    assert main(["test", str(a), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["format"], data["ok"], data["bundles"][0]["result"]) == (1, True, "passed")
    assert data["bundles"][0]["test"]["format"] == 1
    lab.plan = {b.name: "fail"}
    assert main(["test", str(a), str(b)]) == 91
    out, err = capsys.readouterr()
    assert f"passed: {a}" in out and f"FAILED: {b}" in out and "kernel log:" in out
    assert "1 of 2 bundles failed their test" in err
    assert main(["test", str(b), "--json"]) == 91
    assert json.loads(capsys.readouterr().out)["ok"] is False
    wrong = make_bundle(tmp_path, 1, test=None, build_id=BUILD_B)
    assert main(["test", str(wrong), "--json"]) == 90
    assert json.loads(capsys.readouterr().out)["error"] == "test"
    assert main(["test", str(a), "--timeout", "0"]) == 64


def test_cli_publish_refuses_an_untested_bundle_and_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    create.init(repo)
    untested = make_bundle(tmp_path, 1, test=None)
    assert main(["publish", str(untested), "--repo", str(repo)]) == 62
    err = capsys.readouterr().err
    assert "publish refused" in err and "has no test result" in err
    assert f"suture test {untested}" in err and "--untested" in err
    assert main(["publish", str(untested), "--repo", str(repo), "--json"]) == 62
    data = json.loads(capsys.readouterr().out)
    assert (data["error"], data["result"]) == ("untested", "untested")
    assert main(["publish", str(untested), "--repo", str(repo), "--untested", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["test"] == "untested"
    assert "published as untested" in err
    tested = make_bundle(tmp_path, 2)
    assert main(["publish", str(tested), "--repo", str(repo)]) == 0
    assert "warning" not in capsys.readouterr().err
