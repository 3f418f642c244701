"""The builder end to end: source fixes -> bundles on the host, applied in a guest of that build.

Fixes are made here from the pristine distro source with difflib, so they
always apply to the tree the builder prepares. Refusals and "no change" are
checked on the host; behaviour is checked inside the guest by
tests/kernel/test_built.py.
"""

from __future__ import annotations

import difflib
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
from suture.lab import kernels
from tests.builds import LAB, build_release
from tests.test_guest_engine import require_qemu, run_guest_tests
from tests.test_host_port import SYSCALL_EDITS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.guest


def make_fix(tree: source.SourceTree, path: str, *edits: tuple[str, str], out: Path) -> Path:
    before = (tree.path / path).read_text()
    after = before
    for old, new in edits:
        assert old in after, f"{old!r} not in {path}"
        after = after.replace(old, new, 1)
    text = "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"
        )
    )
    fix = out / (path.replace("/", "_") + f".{abs(hash(text)) % 10**6}.patch")
    fix.write_text(text)
    return fix


def make_multi_fix(
    tree: source.SourceTree, files: list[tuple[str, list[tuple[str, str]]]], out: Path
) -> Path:
    """One fix that edits several files, as ``git diff`` writes it."""
    text = "".join(make_fix(tree, path, *edits, out=out).read_text() for path, edits in files)
    fix = out / f"multi.{abs(hash(text)) % 10**6}.patch"
    fix.write_text(text)
    return fix


SHOW = "\tseq_puts(m, saved_command_line);\n"

FEATURES = {
    # name: (file, edits)
    "string": ("fs/proc/cmdline.c", [(SHOW, '\tseq_printf(m, "v1:%s", saved_command_line);\n')]),
    "newfunc": (
        "fs/proc/cmdline.c",
        [
            (
                "static int cmdline_proc_show",
                "static noinline void suture_tag(struct seq_file *m)\n{\n"
                '\tseq_puts(m, "tagged:");\n}\n\nstatic int cmdline_proc_show',
            ),
            (SHOW, "\tsuture_tag(m);\n" + SHOW),
        ],
    ),
    "statics": (
        "fs/proc/cmdline.c",
        [
            ("static int cmdline_proc_show", "int suture_reads;\n\nstatic int cmdline_proc_show"),
            (
                SHOW,
                "\tstatic int calls;\n\n\tcalls++;\n\tsuture_reads += 10;\n"
                '\tseq_printf(m, "%d/%d:", calls, suture_reads);\n' + SHOW,
            ),
        ],
    ),
    # kpatch's macro header: a fix written for kpatch-build builds unchanged.
    "callbacks": (
        "fs/proc/cmdline.c",
        [
            (
                "#include <linux/seq_file.h>\n",
                '#include <linux/seq_file.h>\n#include "kpatch-macros.h"\n',
            ),
            (
                "static int cmdline_proc_show",
                "static int suture_ready;\n\nstatic int suture_pre(patch_object *obj)\n{\n"
                "\tsuture_ready = 42;\n\treturn 0;\n}\nKPATCH_PRE_PATCH_CALLBACK(suture_pre);\n\n"
                "static int cmdline_proc_show",
            ),
            (SHOW, '\tseq_printf(m, "cb%d:", suture_ready);\n' + SHOW),
        ],
    ),
    # A shadow variable attached to an existing object, freed when the patch goes.
    "shadow": (
        "fs/proc/cmdline.c",
        [
            (
                "#include <linux/seq_file.h>\n",
                '#include <linux/seq_file.h>\n#include "suture_livepatch.h"\n',
            ),
            (
                "static int cmdline_proc_show",
                "static void suture_free(struct klp_object *obj)\n{\n"
                "\tklp_shadow_free_all(1, NULL);\n}\nSUTURE_POST_UNPATCH_CALLBACK(suture_free);\n\n"
                "static int cmdline_proc_show",
            ),
            (
                SHOW,
                "\tint *seen = klp_shadow_get_or_alloc(saved_command_line, 1, sizeof(int),\n"
                "\t\t\t\t\t     GFP_KERNEL, NULL, NULL);\n\n"
                '\tif (seen)\n\t\tseq_printf(m, "sh%d:", ++*seen);\n' + SHOW,
            ),
        ],
    ),
    # is_stack() is inlined into both its callers: the patch replaces the callers.
    "inline": (
        "fs/proc/task_mmu.c",
        [
            (
                "\treturn vma->vm_start <= vma->vm_mm->start_stack &&\n"
                "\t\tvma->vm_end >= vma->vm_mm->start_stack;\n",
                "\treturn 0;\n",
            )
        ],
    ),
    # task_state() is a static inline of proc_pid_status() on 6.1, 6.12 and 7.x alike.
    "inline_caller": (
        "fs/proc/array.c",
        [('"\\nTracerPid:\\t", tpid);', '"\\nTracerPID:\\t", tpid);')],
    ),
    # GCC compiles __set_oom_adj() as __set_oom_adj.isra.0 (an IPA-SRA clone).
    "clone": (
        "fs/proc/base.c",
        [
            (
                "\ttask->signal->oom_score_adj = oom_adj;\n",
                "\tif (oom_adj == 999)\n\t\toom_adj = 998;\n"
                "\ttask->signal->oom_score_adj = oom_adj;\n",
            )
        ],
    ),
    # kpatch's syscall macros: newuname's body is patched through its stubs.
    "kpatch_syscall": ("kernel/sys.c", SYSCALL_EDITS),
    # Lines added above proc_pid_cmdline_read() move its BUG_ON's line (kept in
    # __bug_table, not in its code); only proc_pid_personality() really changes.
    "bug_moved": (
        "fs/proc/base.c",
        [
            (
                "static ssize_t proc_pid_cmdline_read(",
                "/*\n * A comment that moves the BUG_ON below.\n */\n"
                "static ssize_t proc_pid_cmdline_read(",
            ),
            (
                '\t\tseq_printf(m, "%08x\\n", task->personality);',
                '\t\tseq_printf(m, "%08x:p\\n", task->personality);',
            ),
        ],
    ),
}
# A hardening of mrp's vector attribute parser: code built into a module (mrp).
MRP_EDITS = [
    (
        "\tif (!mrp_cb(skb)->vah)\n\t\treturn -1;\n\t*offset += sizeof(_vah);",
        "\tif (!mrp_cb(skb)->vah || skb->len < *offset + sizeof(_vah))\n\t\treturn -1;\n"
        "\t*offset += sizeof(_vah);",
    )
]
# A module's code calling what another module exports: ebtable_filter's table
# set-up calls ebt_register_table() of ebtables (the core looks it up there).
EBT_EDITS = [
    (
        "\treturn ebt_register_table(net, &frame_filter, ebt_ops_filter);",
        '\tpr_info("suture-ebt: filter table set up\\n");\n'
        "\treturn ebt_register_table(net, &frame_filter, ebt_ops_filter);",
    )
]
# A module function with a tracepoint of its own module: the builder compiles it
# again with static branches as key reads (the loader cannot resolve that key).
EXT4_EDITS = [
    (
        "\ttrace_ext4_sync_fs(sb, wait);\n",
        '\ttrace_ext4_sync_fs(sb, wait);\n\tpr_info("suture-ext4: sync_fs\\n");\n',
    )
]
# ACPICA: every file defines its own _acpi_module_name (107 in vmlinux), told
# apart by its contents; the patched code prints this file's.
ACPI_EDITS = [
    (
        "\tACPI_FUNCTION_TRACE(acpi_evaluate_object);\n",
        "\tACPI_FUNCTION_TRACE(acpi_evaluate_object);\n"
        '\tpr_info_once("suture-acpi: %s evaluates %s\\n", _acpi_module_name,\n'
        '\t\t     pathname ? pathname : "?");\n',
    )
]
# ext4's inline directories: ext4_filetype_table, defined by ext4.h, is in ext4.ko
# once per file that uses it, with the same bytes: the module's relocations tell.
EXT4_INLINE_EDITS = [
    (
        "\tint dotdot_offset, dotdot_size, extra_offset, extra_size;\n\n",
        "\tint dotdot_offset, dotdot_size, extra_offset, extra_size;\n\n"
        '\tpr_info_once("suture-ext4-inline: dir type %u\\n", ext4_filetype_table[EXT4_FT_DIR]);\n',
    )
]
# New code one file adds and another file of the same fix uses: a new global
# function and a new global counter of fs/proc/cmdline.c (vmlinux).
SHARED_CMDLINE = (
    "fs/proc/cmdline.c",
    [
        (
            "static int cmdline_proc_show",
            "int suture_shared_seen;\n\nnoinline void suture_shared_note(const char *who)\n{\n"
            '\tsuture_shared_seen++;\n\tpr_info("suture-shared: %s\\n", who);\n}\n\n'
            "static int cmdline_proc_show",
        ),
        (SHOW, '\tseq_printf(m, "s%d:", suture_shared_seen);\n' + SHOW),
    ],
)
SHARED_DECLARATION = "extern int suture_shared_seen;\nvoid suture_shared_note(const char *who);\n"
# Fixes of several files: one module with a klp_object per patched object.
MULTI_FILE = {
    "two_files": [
        ("fs/proc/cmdline.c", [(SHOW, '\tseq_puts(m, "c2:");\n' + SHOW)]),
        (
            "fs/proc/version.c",
            [
                (
                    "\tseq_printf(m, linux_proc_banner,",
                    '\tseq_puts(m, "v2:");\n\tseq_printf(m, linux_proc_banner,',
                )
            ],
        ),
    ],
    "vmlinux_mrp": [
        ("fs/proc/cmdline.c", [(SHOW, '\tseq_puts(m, "mx:");\n' + SHOW)]),
        ("net/802/mrp.c", MRP_EDITS),
    ],
    # /proc/version calls the new function of cmdline.c and reads its new counter.
    "shared_vmlinux": [
        SHARED_CMDLINE,
        (
            "fs/proc/version.c",
            [
                (
                    "static int version_proc_show",
                    SHARED_DECLARATION + "static int version_proc_show",
                ),
                (
                    "\tseq_printf(m, linux_proc_banner,",
                    '\tsuture_shared_note("version");\n'
                    '\tseq_printf(m, "v%d:", suture_shared_seen);\n'
                    "\tseq_printf(m, linux_proc_banner,",
                ),
            ],
        ),
    ],
    # A module's patched code calls the new function of vmlinux's part: one .ko.
    "shared_module": [
        SHARED_CMDLINE,
        (
            "net/bridge/netfilter/ebtable_filter.c",
            [
                (
                    "static int frame_filter_table_init",
                    SHARED_DECLARATION + "static int frame_filter_table_init",
                ),
                (
                    "\treturn ebt_register_table(net, &frame_filter, ebt_ops_filter);",
                    '\tsuture_shared_note("ebt");\n'
                    "\treturn ebt_register_table(net, &frame_filter, ebt_ops_filter);",
                ),
            ],
        ),
    ],
}
# What the builder must list as changed (the manifest's functions), where the test checks it.
CHANGED = {
    "inline": ("show_map_vma", "show_numa_map"),
    "inline_caller": ("proc_pid_status",),
    "clone": ("__set_oom_adj.isra.0",),
    "bug_moved": ("proc_pid_personality",),
    "kpatch_syscall": ("__ia32_sys_newuname", "__x64_sys_newuname"),
}
# The same for fixes of several files: object -> functions, in the manifest's order.
CHANGED_OBJECTS = {
    "two_files": {"vmlinux": ["cmdline_proc_show", "version_proc_show"]},
    "vmlinux_mrp": {"vmlinux": ["cmdline_proc_show"], "mrp": ["mrp_rcv"]},
    "shared_vmlinux": {"vmlinux": ["cmdline_proc_show", "version_proc_show"]},
    "shared_module": {
        "vmlinux": ["cmdline_proc_show"],
        "ebtable_filter": ["frame_filter_table_init"],
    },
}


@pytest.fixture(scope="module")
def tree() -> source.SourceTree:
    require_qemu()
    return source.prepare(build_release())


def test_no_change_is_reported(tree: source.SourceTree, tmp_path: Path) -> None:
    fix = make_fix(
        tree,
        "fs/proc/cmdline.c",
        ("#include <linux/fs.h>", "#include <linux/fs.h>  /* c */"),
        out=tmp_path,
    )
    with pytest.raises(NoChangeError):
        build(BuildRequest(build_release(), fix, tmp_path), LAB)


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
def test_moved_lines_are_no_change(tree: source.SourceTree, tmp_path: Path, path: str) -> None:
    fix = make_fix(tree, path, shift(tree, path), out=tmp_path)
    with pytest.raises(NoChangeError, match="compile the same"):
        build(BuildRequest(build_release(), fix, tmp_path), LAB)
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
    tree: source.SourceTree, tmp_path: Path
) -> None:
    # CONFIG_SERIAL_MAX310X is not set: kbuild still compiles the file when asked
    # by name (and without -DMODULE), but the kernel has none of its functions.
    fix = make_fix(
        tree,
        "drivers/tty/serial/max310x.c",
        ("\ts32 uartclk = 0;\n\tbool xtal;", "\ts32 uartclk = 1;\n\tbool xtal;"),
        out=tmp_path,
    )
    with pytest.raises(NoChangeError, match=r"does not build drivers/tty/serial/max310x.c"):
        build(BuildRequest(build_release(), fix, tmp_path), LAB)


def test_init_code_is_refused(tree: source.SourceTree, tmp_path: Path) -> None:
    fix = make_fix(tree, "fs/proc/cmdline.c", ('"cmdline", 0,', '"cmdline", 0444,'), out=tmp_path)
    with pytest.raises(BuildError, match=r"proc_cmdline_init changed, but __init"):
        build(BuildRequest(build_release(), fix, tmp_path), LAB)


def test_data_change_is_refused(tree: source.SourceTree, tmp_path: Path) -> None:
    # int_seq_ops is const, so it could be carried as a copy (ADR 14), but only
    # proc_interrupts_init (boot code) uses it: the copy would reach nothing.
    fix = make_fix(tree, "fs/proc/interrupts.c", ("\t.stop  = int_seq_stop,\n", ""), out=tmp_path)
    with pytest.raises(BuildError, match=r"changes int_seq_ops, read-only data .*boot code") as e:
        build(BuildRequest(build_release(), fix, tmp_path), LAB)
    assert "pre-patch callback" in e.value.hint


def test_built_patches_in_guest(tree: source.SourceTree, tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    for name, (path, edits) in FEATURES.items():
        fix = make_fix(tree, path, *edits, out=tmp_path)
        report = build(BuildRequest(build_release(), fix, out, name=f"suture_t_{name}"), LAB)
        if name in CHANGED:
            manifest = bundle.read_manifest(out / f"suture_t_{name}.bundle")
            assert sorted(manifest.functions) == sorted(CHANGED[name]), report.to_dict()
    module_fix = make_fix(tree, "net/802/mrp.c", *MRP_EDITS, out=tmp_path)
    build(BuildRequest(build_release(), module_fix, out, name="suture_t_mrp"), LAB)
    ebt_fix = make_fix(tree, "net/bridge/netfilter/ebtable_filter.c", *EBT_EDITS, out=tmp_path)
    build(BuildRequest(build_release(), ebt_fix, out, name="suture_t_ebt"), LAB)
    ext4_fix = make_fix(tree, "fs/ext4/super.c", *EXT4_EDITS, out=tmp_path)
    build(BuildRequest(build_release(), ext4_fix, out, name="suture_t_ext4"), LAB)
    acpi_fix = make_fix(tree, "drivers/acpi/acpica/nsxfeval.c", *ACPI_EDITS, out=tmp_path)
    build(BuildRequest(build_release(), acpi_fix, out, name="suture_t_acpi"), LAB)
    inline_fix = make_fix(tree, "fs/ext4/inline.c", *EXT4_INLINE_EDITS, out=tmp_path)
    build(BuildRequest(build_release(), inline_fix, out, name="suture_t_ext4_inline"), LAB)
    with (out / "suture_t_ext4.ko").open("rb") as f:
        sections = {sec.name for sec in ELFFile(f).iter_sections()}
    assert "__jump_table" not in sections  # the tracepoint's key is read, not jumped on
    for name, files in MULTI_FILE.items():
        fix = make_multi_fix(tree, files, tmp_path)
        report = build(BuildRequest(build_release(), fix, out, name=f"suture_t_{name}"), LAB)
        manifest = bundle.read_manifest(out / f"suture_t_{name}.bundle")
        got = {o.name: sorted(f.name for f in o.functions) for o in manifest.objects}
        assert got == CHANGED_OBJECTS[name], report.to_dict()
        assert [o.name for o in manifest.objects] == list(CHANGED_OBJECTS[name])
    run_guest_tests(
        kernels.fetch(build_release()),
        "tests/kernel/test_built.py",
        {"SUTURE_TEST_BUNDLES": str(out)},
    )
