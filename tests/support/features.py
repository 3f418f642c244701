"""The builder's feature fixes and what each must change: shared by the guest tests (no tests here).

tests/test_guest_build.py builds them all on the default build, and
tests/test_guest_series_build.py a subset on the newer series; the in-guest
checks are tests/kernel/test_built.py.
"""

from __future__ import annotations

from suture.builder import source
from tests.support.fixes import SHOW, SYSCALL_EDITS

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
    # is_stack() is inlined into both its callers: the patch replaces the callers
    # (6.1 only: from 6.5 it is mm.h's vma_is_initial_stack()).
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
# Features of code only some series have; the rest must apply on every series.
SERIES_ONLY = frozenset({"inline"})


def applies(tree: source.SourceTree, path: str, edits: list[tuple[str, str]]) -> bool:
    """Whether each edit's text is in the build's ``path``."""
    text = (tree.path / path).read_text()
    return all(old in text for old, _ in edits)


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
        "\textra_offset = dotdot_size - EXT4_INLINE_DOTDOT_SIZE;\n",
        '\tpr_info_once("suture-ext4-inline: dir type %u\\n", ext4_filetype_table[EXT4_FT_DIR]);\n'
        "\textra_offset = dotdot_size - EXT4_INLINE_DOTDOT_SIZE;\n",
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
