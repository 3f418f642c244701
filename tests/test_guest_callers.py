"""A changed function without an ftrace entry, built on the host and applied in a guest.

may_create() in fs/namei.c is ``static inline`` (so ``notrace``) and GCC
keeps it out of line: the livepatch core cannot redirect it. The builder
carries its new code and patches its callers (vfs_mkdir, vfs_create ...)
instead. generate_random_uuid() in lib/uuid.c (lib/ is built without
ftrace) is called from other files: the builder compiles those and patches
the callers there (proc_do_uuid for /proc/sys/kernel/random/uuid).
A fix inside the syscall body of wait4 is patched through its wrappers,
compiled to call the carried body instead of jumping to it.
tests/kernel/test_callers.py checks these behaviours in the guest. The
paths left to the old code (exports, pointers) and ``--complete`` are
checked on the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suture import bundle
from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.errors import BuildError
from suture.packages import kernels
from tests.builds import LAB
from tests.support.fixes import make_fix
from tests.support.guest import require_qemu, run_guest_tests

pytestmark = pytest.mark.guest

DENY = (
    "\tif (child->d_inode)\n\t\treturn -EEXIST;\n\tif (IS_DEADDIR(dir))",
    "\tif (child->d_inode)\n\t\treturn -EEXIST;\n"
    '\tif (child->d_name.len == 13 && !memcmp(child->d_name.name, "suture-denied", 13))\n'
    "\t\treturn -EPERM;\n\tif (IS_DEADDIR(dir))",
)
# Callers of may_create() that keep their ftrace entry; vfs_mkobj() has it inlined.
REDIRECTED = {"vfs_create", "vfs_link", "vfs_mkdir", "vfs_mknod", "vfs_mkobj", "vfs_rename",
              "vfs_symlink"}  # fmt: skip


@pytest.fixture(scope="module")
def tree(kernel_release: str) -> source.SourceTree:
    require_qemu()
    return source.prepare(kernel_release)


WAIT4 = (
    "\tstruct rusage r;\n\tlong err = kernel_wait4(upid, stat_addr, options, ru ? &r : NULL);\n",
    "\tstruct rusage r;\n\tlong err;\n\n\tif (upid == -4242)\n\t\treturn -ENOTTY;\n"
    "\terr = kernel_wait4(upid, stat_addr, options, ru ? &r : NULL);\n",
)
UUID = (
    "\tget_random_bytes(uuid, 16);\n\t/* Set UUID version to 4",
    "\tmemset(uuid, 0x5a, 16);\n\t/* Set UUID version to 4",
)


def test_exported_without_fentry_is_partial(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    # kernel/irq_work.c is built without ftrace and irq_work_sync() is exported.
    fix = make_fix(
        tree,
        "kernel/irq_work.c",
        # A check at the start: the same in every 6.1 build (the body changed in 6.1.18x).
        ("void irq_work_sync(struct irq_work *work)\n{\n",
         "void irq_work_sync(struct irq_work *work)\n{\n\tif (!work)\n\t\treturn;\n"),
        out=tmp_path,
    )  # fmt: skip
    with pytest.raises(BuildError, match=r"irq_work_sync changed but .*exported"):
        build(BuildRequest(kernel_release, fix, tmp_path, complete=True), LAB)
    report = build(BuildRequest(kernel_release, fix, tmp_path / "out", name="suture_t_irq"), LAB)
    assert report.carried == ["irq_work_sync"]
    # Callers in kernel/relay.c, kernel/events/core.c, kernel/bpf/ and the
    # scheduler (kernel/sched/build_utility.c includes cpufreq_schedutil.c).
    assert {"relay_close_buf", "_free_event", "ringbuf_map_free", "sugov_stop"} <= set(
        report.objects["vmlinux"]
    )
    assert "irq_work_sync" not in report.objects["vmlinux"]
    assert "irq_work_sync: it is exported, so modules may call the old code" in report.unpatched
    # kernel/trace/ is built without ftrace too: its callers stay old, and say so.
    assert any("ring_buffer_free" in u and "no ftrace entry" in u for u in report.unpatched)
    manifest = bundle.read_manifest(tmp_path / "out" / "suture_t_irq.bundle")
    assert list(manifest.unpatched) == report.unpatched


def test_callers_patched_in_guest(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    out = tmp_path / "bundles"
    fix = make_fix(tree, "fs/namei.c", DENY, out=tmp_path)
    report = build(BuildRequest(kernel_release, fix, out, name="suture_t_callers"), LAB)
    assert report.carried == ["may_create"]
    assert report.unpatched == []  # every way in is a patched caller
    manifest = bundle.read_manifest(out / "suture_t_callers.bundle")
    assert set(manifest.functions) == REDIRECTED
    # A syscall body: __do_sys_wait4 has no ftrace entry and its wrappers reach it
    # by a tail jump; they are patched with copies that call it.
    fix = make_fix(tree, "kernel/exit.c", WAIT4, out=tmp_path)
    report = build(BuildRequest(kernel_release, fix, out, name="suture_t_wait4"), LAB)
    assert report.carried == ["__do_sys_wait4"]
    assert sorted(report.objects["vmlinux"]) == ["__ia32_sys_wait4", "__x64_sys_wait4"]
    assert report.unpatched == []
    fix = make_fix(tree, "lib/uuid.c", UUID, out=tmp_path)
    report = build(BuildRequest(kernel_release, fix, out, name="suture_t_uuid"), LAB)
    assert report.carried == ["generate_random_uuid"]
    assert "proc_do_uuid" in report.objects["vmlinux"]
    run_guest_tests(
        kernels.fetch(kernel_release),
        "tests/kernel/test_callers.py",
        {"SUTURE_TEST_BUNDLES": str(out)},
    )
