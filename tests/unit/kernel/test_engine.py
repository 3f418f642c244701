"""suture.kernel.engine: apply, back-out, unload and status against a fake kernel.

``module.load``/``module.unload`` are replaced by a :class:`FakeKernel` that
creates and removes the patch's sysfs folder the way the livepatch core does.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from suture.errors import LoadError, NotLoadedError, PreflightError, TransitionError
from suture.kernel import engine, module
from suture.kernel.engine import TransitionPolicy
from suture.kernel.livepatch import LivepatchSysfs
from tests.support.kernel import (
    BUILD_ID,
    RELEASE,
    compile_module,
    fake_kernel,
    livepatch_entries,
    put,
)

LP = "sys/kernel/livepatch"
SHORT = TransitionPolicy(timeout=0.2, backout_timeout=0.2)


@pytest.fixture(scope="module")
def patch_ko(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A live patch "module" named suture_fix, built for RELEASE."""
    dest = tmp_path_factory.mktemp("engine") / "suture_fix.ko"
    return compile_module(dest, livepatch_entries("suture_fix"))


@dataclass
class FakeKernel:
    """Stands in for finit_module/delete_module and for the core's reaction to ``enabled``.

    Attributes:
        root: the fake sysroot.
        finishes: a loaded patch's transition ends at once ("0") or never ("1").
        backout_finishes: writing enabled=0 ends the (reverse) transition and frees the patch.
        replaces: patches that the loaded one retires (atomic replace).
    """

    root: Path
    finishes: bool = True
    backout_finishes: bool = True
    replaces: tuple[str, ...] = ()
    loaded: list[Path] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    enabled_writes: list[tuple[str, str]] = field(default_factory=list)

    def load(self, path: Path, params: str = "") -> None:
        name = path.name.split(".")[0]
        self.loaded.append(path)
        put(self.root, f"{LP}/{name}/enabled", "1\n")
        put(self.root, f"{LP}/{name}/transition", "0\n" if self.finishes else "1\n")
        put(self.root, f"{LP}/{name}/vmlinux/patched", "1\n")
        for old in self.replaces:
            shutil.rmtree(self.root / LP / old)

    def unload(self, name: str, timeout: float = 5.0) -> None:
        if (self.root / LP / name).exists():
            raise LoadError(f"cannot remove module {name}: busy")
        self.unloaded.append(name)

    def set_enabled(self, lp: LivepatchSysfs, name: str, enabled: bool) -> None:
        (lp.base / name / "enabled").write_text("1" if enabled else "0")
        self.enabled_writes.append((name, (lp.base / name / "enabled").read_text()))
        if not enabled and self.backout_finishes:
            (lp.base / name / "transition").write_text("0")
            shutil.rmtree(lp.base / name)  # the core frees a disabled patch


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    root = fake_kernel(tmp_path / "root")
    fake = FakeKernel(root)
    monkeypatch.setattr(module, "load", fake.load)
    monkeypatch.setattr(module, "unload", fake.unload)

    def set_enabled(lp: LivepatchSysfs, name: str, enabled: bool) -> None:
        fake.set_enabled(lp, name, enabled)

    monkeypatch.setattr(LivepatchSysfs, "set_enabled", set_enabled)
    return fake


def add_loaded_patch(root: Path, name: str, *, enabled: str = "1", transition: str = "0") -> None:
    put(root, f"{LP}/{name}/enabled", enabled + "\n")
    put(root, f"{LP}/{name}/transition", transition + "\n")
    put(root, f"{LP}/{name}/vmlinux/patched", "1\n")
    (root / LP / name / "vmlinux/cmdline_proc_show,1").mkdir()


def test_apply_happy_path(kernel: FakeKernel, patch_ko: Path) -> None:
    result = engine.apply(patch_ko, SHORT, build_id=BUILD_ID, sysroot=kernel.root)
    assert kernel.loaded == [patch_ko]
    assert result.name == "suture_fix"
    assert result.superseded == []
    assert not result.signalled
    assert 0 <= result.seconds < 0.2
    assert set(result.to_dict()) == {"name", "seconds", "signalled", "superseded", "kept"}
    assert kernel.unloaded == []


def test_apply_replace_unloads_superseded_modules(kernel: FakeKernel, patch_ko: Path) -> None:
    add_loaded_patch(kernel.root, "suture_old")
    kernel.replaces = ("suture_old",)
    result = engine.apply(patch_ko, SHORT, sysroot=kernel.root)
    assert result.superseded == ["suture_old"]
    assert kernel.unloaded == ["suture_old"]


def test_apply_replace_keeps_a_module_that_keeps_itself(kernel: FakeKernel, patch_ko: Path) -> None:
    # Level 1 redirected a stored pointer into its module: it is never removed.
    add_loaded_patch(kernel.root, "suture_old")
    put(kernel.root, "sys/module/suture_old/parameters/kept", "Y\n")
    kernel.replaces = ("suture_old",)
    result = engine.apply(patch_ko, SHORT, sysroot=kernel.root)
    assert result.superseded == ["suture_old"]
    assert result.kept == ["suture_old"]
    assert kernel.unloaded == []


@pytest.mark.parametrize(
    ("setup", "check"),
    [
        ({"release": "6.1.0-47-amd64"}, "kernel-build"),
        ({"livepatch": False}, "livepatch"),
        ({"lockdown": "none [integrity] confidentiality"}, "signature"),
        ({"sig_enforce": "Y"}, "signature"),
    ],
)
def test_apply_refuses_before_loading(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    patch_ko: Path,
    setup: dict[str, object],
    check: str,
) -> None:
    root = fake_kernel(tmp_path / "root", **setup)  # type: ignore[arg-type]

    def must_not_load(path: Path, params: str = "") -> None:
        pytest.fail(f"module.load({path}) was called despite a failed pre-flight check")

    monkeypatch.setattr(module, "load", must_not_load)
    with pytest.raises(PreflightError) as e:
        engine.apply(patch_ko, SHORT, sysroot=root)
    assert e.value.check == check


def test_apply_refuses_another_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, patch_ko: Path
) -> None:
    root = fake_kernel(tmp_path / "root")
    calls: list[Path] = []
    monkeypatch.setattr(module, "load", lambda path, params="": calls.append(path))
    with pytest.raises(PreflightError, match="same release, another build") as e:
        engine.apply(patch_ko, SHORT, build_id="ab" * 20, sysroot=root)
    assert e.value.check == "kernel-build"
    assert calls == []


def test_apply_refuses_when_already_loaded(kernel: FakeKernel, patch_ko: Path) -> None:
    add_loaded_patch(kernel.root, "suture_fix")
    with pytest.raises(PreflightError) as e:
        engine.apply(patch_ko, SHORT, sysroot=kernel.root)
    assert e.value.check == "already-loaded"
    assert kernel.loaded == []


def test_stuck_transition_is_reversed(kernel: FakeKernel, patch_ko: Path) -> None:
    kernel.finishes = False
    put(kernel.root, "proc/42/task/42/patch_state", "0\n")
    put(kernel.root, "proc/42/task/42/comm", "cat\n")
    put(kernel.root, "proc/42/task/42/stack", "[<0>] msleep+0x2d/0x40\n[<0>] vfs_read+0x9c/0x180\n")
    put(kernel.root, "proc/1/task/1/patch_state", "1\n")
    put(kernel.root, "proc/1/task/1/comm", "init\n")

    with pytest.raises(TransitionError) as e:
        engine.apply(patch_ko, SHORT, sysroot=kernel.root)

    assert kernel.loaded == [patch_ko]
    assert kernel.enabled_writes == [("suture_fix", "0")]
    assert kernel.unloaded == ["suture_fix"]
    assert "did not finish within 0.2 s" in e.value.message
    assert "reversed" in e.value.message
    assert "blocked by pid 42 (cat) in msleep < vfs_read" in e.value.message
    assert "init" not in e.value.message
    assert e.value.exit_code == 33


def test_stuck_backout_keeps_the_module(kernel: FakeKernel, patch_ko: Path) -> None:
    kernel.finishes = False
    kernel.backout_finishes = False
    with pytest.raises(TransitionError, match="backing out suture_fix did not finish"):
        engine.apply(patch_ko, SHORT, sysroot=kernel.root)
    assert kernel.enabled_writes == [("suture_fix", "0")]
    assert kernel.unloaded == []


def test_wait_transition_signals_where_the_file_exists(kernel: FakeKernel) -> None:
    add_loaded_patch(kernel.root, "p", transition="1")
    put(kernel.root, f"{LP}/p/signal")
    lp = LivepatchSysfs(kernel.root)
    finished, signalled = engine._wait_transition(lp, "p", 0.05, 0.0)
    assert (finished, signalled) == (False, True)
    assert (kernel.root / LP / "p/signal").read_text() == "1"


def test_unload(kernel: FakeKernel) -> None:
    add_loaded_patch(kernel.root, "suture_fix")
    engine.unload("suture_fix", SHORT, sysroot=kernel.root)
    assert kernel.enabled_writes == [("suture_fix", "0")]
    assert kernel.unloaded == ["suture_fix"]


def test_unload_disables_but_keeps_a_module_that_keeps_itself(kernel: FakeKernel) -> None:
    add_loaded_patch(kernel.root, "suture_fix")
    put(kernel.root, "sys/module/suture_fix/parameters/kept", "Y\n")
    assert engine.unload("suture_fix", SHORT, sysroot=kernel.root) is False
    assert kernel.enabled_writes == [("suture_fix", "0")]
    assert kernel.unloaded == []
    put(kernel.root, "sys/module/suture_fix/initstate", "live\n")
    put(kernel.root, "sys/module/suture_fix/taint", "OEK\n")
    assert engine.unload("suture_fix", SHORT, sysroot=kernel.root) is False  # asked again
    assert kernel.unloaded == []


def test_unload_unknown(kernel: FakeKernel) -> None:
    with pytest.raises(NotLoadedError, match="no live patch named nope"):
        engine.unload("nope", SHORT, sysroot=kernel.root)
    assert kernel.unloaded == []


def test_unload_leftover_module_of_a_superseded_patch(kernel: FakeKernel) -> None:
    put(kernel.root, "sys/module/suture_old/initstate", "live\n")
    put(kernel.root, "sys/module/suture_old/taint", "OEK\n")
    engine.unload("suture_old", SHORT, sysroot=kernel.root)
    assert kernel.unloaded == ["suture_old"]
    assert kernel.enabled_writes == []


def test_unload_stuck_disable_is_reversed(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loaded_patch(kernel.root, "suture_fix")
    kernel.backout_finishes = False

    def set_enabled(lp: LivepatchSysfs, name: str, enabled: bool) -> None:
        kernel.set_enabled(lp, name, enabled)
        # Disabling starts a transition that never ends; re-enabling ends it.
        (lp.base / name / "transition").write_text("0" if enabled else "1")

    monkeypatch.setattr(LivepatchSysfs, "set_enabled", set_enabled)
    with pytest.raises(TransitionError, match="patch stays applied"):
        engine.unload("suture_fix", SHORT, sysroot=kernel.root)
    assert kernel.enabled_writes == [("suture_fix", "0"), ("suture_fix", "1")]
    assert kernel.unloaded == []


def test_unload_all_newest_first(kernel: FakeKernel) -> None:
    add_loaded_patch(kernel.root, "a_first")
    add_loaded_patch(kernel.root, "b_second")
    assert engine.unload_all(SHORT, sysroot=kernel.root) == ["b_second", "a_first"]
    assert kernel.unloaded == ["b_second", "a_first"]


def test_status(tmp_path: Path) -> None:
    root = fake_kernel(tmp_path / "root", taint="32768")
    add_loaded_patch(root, "suture_fix")
    data = engine.status(root)
    assert json.loads(json.dumps(data)) == data  # JSON-ready
    assert data["format"] == 1
    kernel = data["kernel"]
    assert isinstance(kernel, dict)
    assert kernel["release"] == RELEASE
    assert kernel["build_id"] == BUILD_ID
    assert kernel["livepatch"] is True
    assert kernel["taint_flags"] == "K"
    assert data["patches"] == [
        {
            "name": "suture_fix",
            "enabled": True,
            "transition": False,
            "replace": None,
            "stack_order": None,
            "objects": [
                {
                    "name": "vmlinux",
                    "patched": True,
                    "functions": [{"name": "cmdline_proc_show", "sympos": 1}],
                }
            ],
            "prematch_refused": [],
        }
    ]


def test_status_without_patches(tmp_path: Path) -> None:
    data = engine.status(fake_kernel(tmp_path / "root", livepatch=False))
    assert data["patches"] == []
    assert data["kernel"]["livepatch"] is False  # type: ignore[index]
