"""The builder end to end: source fixes -> bundles on the host, applied in a guest of that build.

Fixes are made here from the pristine distro source with difflib, so they
always apply to the tree the builder prepares. Refusals and "no change" are
checked on the host; behaviour is checked inside the guest by
tests/kernel/test_built.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from suture import bundle
from suture.builder import source
from suture.builder.compile import compile_pair
from suture.builder.differ import diff_objects
from suture.builder.elfobj import ObjectFile
from suture.builder.fix import Fix
from suture.builder.pipeline import BuildRequest, build
from suture.errors import BuildError, NoChangeError
from suture.packages import kernels
from tests.builds import LAB
from tests.support.features import (
    ACPI_EDITS,
    CHANGED,
    CHANGED_OBJECTS,
    EBT_EDITS,
    EXT4_EDITS,
    EXT4_INLINE_EDITS,
    FEATURES,
    MRP_EDITS,
    MULTI_FILE,
    SERIES_ONLY,
    applies,
)
from tests.support.fixes import make_fix, make_multi_fix
from tests.support.guest import require_qemu, run_guest_tests

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def tree(kernel_release: str) -> source.SourceTree:
    require_qemu()
    return source.prepare(kernel_release)


def test_no_change_is_reported(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    fix = make_fix(
        tree,
        "fs/proc/cmdline.c",
        ("#include <linux/fs.h>", "#include <linux/fs.h>  /* c */"),
        out=tmp_path,
    )
    with pytest.raises(NoChangeError):
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)


# Big files with an #include added at the top: every __LINE__ and __COUNTER__
# below moves (dynamic debug descriptors get other names, WARN and error helpers
# other lines), and no code changes. With one real change beside the shift,
# that function alone changes: (old, new, function).
SHIFTED = {
    "drivers/base/core.c": ('"DEVNAME=%s"', '"DEVNAME=%s "', "dev_uevent"),
    "kernel/sched/core.c": ("task:%-15.15s state", "task:%-15.15s  state", "sched_show_task"),
    "fs/ext4/inode.c": ("xattr delete (err %d)", "xattr delete (error %d)", "ext4_evict_inode"),
    "net/ipv4/tcp.c": ("TCP_TX_DELAY enabled", "TCP_TX_DELAY on", "do_tcp_setsockopt"),
    "mm/page_alloc.c": (
        "page allocation failure: order:%u",
        "page allocation failure: order %u",
        "__alloc_pages_slowpath.constprop.0",
    ),
}


def shift(tree: source.SourceTree, path: str) -> tuple[str, str]:
    """An edit adding a header and a line below the file's first #include."""
    first = re.search(r"^#include .*\n", (tree.path / path).read_text(), re.MULTILINE)
    assert first is not None
    return first[0], first[0] + "#include <linux/blktrace_api.h>\n/* moved */\n"


@pytest.mark.parametrize("path", sorted(SHIFTED))
def test_moved_lines_are_no_change(
    tree: source.SourceTree, tmp_path: Path, path: str, kernel_release: str
) -> None:
    fix = make_fix(tree, path, shift(tree, path), out=tmp_path)
    with pytest.raises(NoChangeError, match="compile the same"):
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)
    old, new, function = SHIFTED[path]
    fix = make_fix(tree, path, shift(tree, path), (old, new), out=tmp_path)
    (pair,) = compile_pair(tree, fix, tmp_path / "objects")
    diff = diff_objects(
        ObjectFile.load(pair.original),
        ObjectFile.load(pair.patched),
        Fix.parse(fix.read_text()).files[path],
    )
    assert [c.name for c in diff.changed + diff.new] == [function]


def test_code_the_configuration_leaves_out_is_no_change(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    # CONFIG_SERIAL_MAX310X is not set: kbuild still compiles the file when asked
    # by name (and without -DMODULE), but the kernel has none of its functions.
    fix = make_fix(
        tree,
        "drivers/tty/serial/max310x.c",
        ("uartclk = 0;\n\tbool xtal;", "uartclk = 1;\n\tbool xtal;"),  # s32 up to 6.12
        out=tmp_path,
    )
    with pytest.raises(NoChangeError, match=r"does not build drivers/tty/serial/max310x.c"):
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)


def test_init_code_is_refused(tree: source.SourceTree, tmp_path: Path, kernel_release: str) -> None:
    fix = make_fix(tree, "fs/proc/cmdline.c", ('"cmdline", 0,', '"cmdline", 0444,'), out=tmp_path)
    with pytest.raises(BuildError, match=r"proc_cmdline_init changed, but __init"):
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)


def test_data_change_is_refused(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    # devinfo_ops is const, so it could be carried as a copy (ADR 14), but only
    # proc_devices_init (boot code) uses it: the copy would reach nothing.
    # (It was /proc/interrupts' int_seq_ops: 7.x shows interrupts from kernel/irq instead.)
    fix = make_fix(tree, "fs/proc/devices.c", ("\t.stop  = devinfo_stop,\n", ""), out=tmp_path)
    with pytest.raises(BuildError, match=r"changes devinfo_ops, read-only data .*boot code") as e:
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)
    assert "pre-patch callback" in e.value.hint


def test_built_patches_in_guest(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    out = tmp_path / "bundles"
    for name, (path, edits) in FEATURES.items():
        if name in SERIES_ONLY and not applies(tree, path, edits):
            continue  # its in-guest test skips without the bundle
        fix = make_fix(tree, path, *edits, out=tmp_path)
        report = build(BuildRequest(kernel_release, fix, out, name=f"suture_t_{name}"), LAB)
        if name in CHANGED:
            manifest = bundle.read_manifest(out / f"suture_t_{name}.bundle")
            assert sorted(manifest.functions) == sorted(CHANGED[name]), report.to_dict()
    module_fix = make_fix(tree, "net/802/mrp.c", *MRP_EDITS, out=tmp_path)
    build(BuildRequest(kernel_release, module_fix, out, name="suture_t_mrp"), LAB)
    # 7.x builds no legacy ebtables; the in-guest tests of ebt and shared_module skip.
    ebt = "\nCONFIG_BRIDGE_EBT_T_FILTER=" in (tree.path / ".config").read_text()
    if ebt:
        ebt_fix = make_fix(tree, "net/bridge/netfilter/ebtable_filter.c", *EBT_EDITS, out=tmp_path)
        build(BuildRequest(kernel_release, ebt_fix, out, name="suture_t_ebt"), LAB)
    ext4_fix = make_fix(tree, "fs/ext4/super.c", *EXT4_EDITS, out=tmp_path)
    build(BuildRequest(kernel_release, ext4_fix, out, name="suture_t_ext4"), LAB)
    acpi_fix = make_fix(tree, "drivers/acpi/acpica/nsxfeval.c", *ACPI_EDITS, out=tmp_path)
    build(BuildRequest(kernel_release, acpi_fix, out, name="suture_t_acpi"), LAB)
    inline_fix = make_fix(tree, "fs/ext4/inline.c", *EXT4_INLINE_EDITS, out=tmp_path)
    build(BuildRequest(kernel_release, inline_fix, out, name="suture_t_ext4_inline"), LAB)
    with (out / "suture_t_ext4.ko").open("rb") as f:
        sections = {sec.name for sec in ELFFile(f).iter_sections()}
    assert "__jump_table" not in sections  # the tracepoint's key is read, not jumped on
    for name, files in MULTI_FILE.items():
        if name == "shared_module" and not ebt:
            continue
        fix = make_multi_fix(tree, files, tmp_path)
        report = build(BuildRequest(kernel_release, fix, out, name=f"suture_t_{name}"), LAB)
        manifest = bundle.read_manifest(out / f"suture_t_{name}.bundle")
        got = {o.name: sorted(f.name for f in o.functions) for o in manifest.objects}
        assert got == CHANGED_OBJECTS[name], report.to_dict()
        assert [o.name for o in manifest.objects] == list(CHANGED_OBJECTS[name])
    run_guest_tests(
        kernels.fetch(kernel_release),
        "tests/kernel/test_built.py",
        {"SUTURE_TEST_BUNDLES": str(out)},
    )
