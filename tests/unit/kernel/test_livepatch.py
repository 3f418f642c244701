"""suture.kernel.livepatch: reading and driving a fake /sys/kernel/livepatch tree."""

from __future__ import annotations

from pathlib import Path

from suture.kernel.livepatch import (
    BlockingTask,
    LivepatchSysfs,
    PatchedFunction,
    PatchedObject,
)
from tests.support.kernel import put

LP = "sys/kernel/livepatch"


def add_patch(
    root: Path,
    name: str,
    *,
    enabled: str = "1",
    transition: str = "0",
    replace: str | None = "0",
    signal: bool = False,
    stack_order: str | None = None,
) -> Path:
    """A patch folder the way the livepatch core lays it out, patching cmdline_proc_show."""
    pdir = root / LP / name
    put(root, f"{LP}/{name}/enabled", enabled + "\n")
    put(root, f"{LP}/{name}/transition", transition + "\n")
    put(root, f"{LP}/{name}/force")
    if replace is not None:
        put(root, f"{LP}/{name}/replace", replace + "\n")
    if signal:
        put(root, f"{LP}/{name}/signal")
    if stack_order is not None:
        put(root, f"{LP}/{name}/stack_order", stack_order + "\n")
    put(root, f"{LP}/{name}/vmlinux/patched", "1\n")
    (pdir / "vmlinux/cmdline_proc_show,1").mkdir()
    return pdir


def add_task(
    root: Path, pid: int, tid: int, comm: str, patch_state: str, *, stack: str | None = None
) -> None:
    """A /proc/<pid>/task/<tid> with patch_state, comm and (root only) stack."""
    tdir = f"proc/{pid}/task/{tid}"
    put(root, f"{tdir}/patch_state", patch_state + "\n")
    put(root, f"{tdir}/comm", comm + "\n")
    if stack is not None:
        put(root, f"{tdir}/stack", stack)


def pid_of(task: BlockingTask) -> int:
    return task.pid


def test_unavailable_without_the_folder(tmp_path: Path) -> None:
    lp = LivepatchSysfs(tmp_path)
    assert not lp.available()
    assert lp.names() == []
    assert lp.states() == []
    assert lp.state("nope") is None
    assert not lp.exists("nope")
    assert not lp.in_transition("nope")


def test_names_are_sorted_folders_only(tmp_path: Path) -> None:
    add_patch(tmp_path, "zeta")
    add_patch(tmp_path, "alpha")
    put(tmp_path, f"{LP}/stray-file")
    lp = LivepatchSysfs(tmp_path)
    assert lp.available()
    assert lp.names() == ["alpha", "zeta"]
    assert lp.exists("alpha")
    assert not lp.exists("stray-file")


def test_state_reads_objects_and_functions(tmp_path: Path) -> None:
    pdir = add_patch(tmp_path, "suture_test_v1", replace="1")
    (pdir / "vmlinux/do_sys_open,0").mkdir()
    put(tmp_path, f"{LP}/suture_test_v1/ext4/patched", "0\n")
    (pdir / "ext4/ext4_file_open,2").mkdir()

    state = LivepatchSysfs(tmp_path).state("suture_test_v1")

    assert state is not None
    assert state.name == "suture_test_v1"
    assert state.enabled is True
    assert state.transition is False
    assert state.replace is True
    assert state.objects == (
        PatchedObject("ext4", False, (PatchedFunction("ext4_file_open", 2),)),
        PatchedObject(
            "vmlinux",
            True,
            (PatchedFunction("cmdline_proc_show", 1), PatchedFunction("do_sys_open", 0)),
        ),
    )
    data = state.to_dict()
    assert data["replace"] is True
    assert data["objects"] == [
        {"name": "ext4", "patched": False, "functions": [{"name": "ext4_file_open", "sympos": 2}]},
        {
            "name": "vmlinux",
            "patched": True,
            "functions": [
                {"name": "cmdline_proc_show", "sympos": 1},
                {"name": "do_sys_open", "sympos": 0},
            ],
        },
    ]


def test_state_without_replace_file(tmp_path: Path) -> None:
    add_patch(tmp_path, "old", enabled="0", transition="1", replace=None)
    state = LivepatchSysfs(tmp_path).state("old")
    assert state is not None
    assert state.enabled is False
    assert state.transition is True
    assert state.replace is None


def test_state_of_a_half_gone_patch_is_none(tmp_path: Path) -> None:
    pdir = add_patch(tmp_path, "going")
    (pdir / "transition").unlink()
    assert LivepatchSysfs(tmp_path).state("going") is None


def test_states_lists_every_patch(tmp_path: Path) -> None:
    add_patch(tmp_path, "b")
    add_patch(tmp_path, "a", transition="1")
    states = LivepatchSysfs(tmp_path).states()
    assert [s.name for s in states] == ["a", "b"]
    assert [s.transition for s in states] == [True, False]


def test_in_transition(tmp_path: Path) -> None:
    add_patch(tmp_path, "p", transition="1")
    lp = LivepatchSysfs(tmp_path)
    assert lp.in_transition("p")
    put(tmp_path, f"{LP}/p/transition", "0\n")
    assert not lp.in_transition("p")


def test_set_enabled_writes(tmp_path: Path) -> None:
    pdir = add_patch(tmp_path, "p")
    lp = LivepatchSysfs(tmp_path)
    lp.set_enabled("p", False)
    assert (pdir / "enabled").read_text() == "0"
    lp.set_enabled("p", True)
    assert (pdir / "enabled").read_text() == "1"


def test_signal_absent_on_newer_kernels(tmp_path: Path) -> None:
    pdir = add_patch(tmp_path, "p")
    assert LivepatchSysfs(tmp_path).signal("p") is False
    assert not (pdir / "signal").exists()


def test_signal_present_writes_one(tmp_path: Path) -> None:
    pdir = add_patch(tmp_path, "p", signal=True)
    assert LivepatchSysfs(tmp_path).signal("p") is True
    assert (pdir / "signal").read_text() == "1"


def test_blocking_tasks(tmp_path: Path) -> None:
    add_task(
        tmp_path,
        42,
        42,
        "cat",
        "0",
        stack="[<0>] msleep+0x2d/0x40\n[<0>] suture_sleep_read+0x11/0x20 [suture_sleeper]\n"
        "[<0>] vfs_read+0x9c/0x180\n[<0>] ksys_read+0x6f/0xf0\n",
    )
    add_task(tmp_path, 42, 43, "cat-worker", "1", stack="[<0>] do_nanosleep+0x1/0x2\n")  # switched
    add_task(tmp_path, 7, 7, "kthreadd", "-1")  # no transition running for it
    add_task(tmp_path, 9, 9, "no-stack", "0")  # stack unreadable (not root)
    put(tmp_path, "proc/10/task/10/patch_state", "garbage\n")
    put(tmp_path, "proc/self/task/1/patch_state", "0\n")  # not a pid folder

    tasks = sorted(LivepatchSysfs(tmp_path).blocking_tasks(target_patched=True), key=pid_of)

    assert tasks == [
        BlockingTask(9, "no-stack", ()),
        BlockingTask(42, "cat", ("msleep", "suture_sleep_read", "vfs_read", "ksys_read")),
    ]


def test_blocking_tasks_when_reverting(tmp_path: Path) -> None:
    add_task(tmp_path, 42, 42, "cat", "0")
    add_task(tmp_path, 42, 43, "worker", "1", stack="[<0>] msleep+0x2d/0x40\n")
    tasks = LivepatchSysfs(tmp_path).blocking_tasks(target_patched=False)
    assert tasks == [BlockingTask(43, "worker", ("msleep",))]


def test_blocking_task_describe() -> None:
    task = BlockingTask(42, "cat", ("msleep", "suture_sleep_read", "vfs_read", "ksys_read"))
    assert task.describe() == "pid 42 (cat) in msleep < suture_sleep_read < vfs_read"
    assert BlockingTask(9, "sh", ()).describe() == "pid 9 (sh)"


def test_stack_order_where_the_kernel_has_it(tmp_path: Path) -> None:
    add_patch(tmp_path, "a", replace="0", stack_order="1")  # 7.3
    add_patch(tmp_path, "b", replace="0", stack_order="2")
    add_patch(tmp_path, "c", replace=None)  # 6.1: neither file
    add_patch(tmp_path, "d")  # 6.12: replace only
    got = {s.name: s for s in LivepatchSysfs(tmp_path).states()}
    assert [got[n].stack_order for n in "abcd"] == [1, 2, None, None]
    assert [got[n].replace for n in "abcd"] == [False, False, None, False]
    assert got["b"].to_dict()["stack_order"] == 2
