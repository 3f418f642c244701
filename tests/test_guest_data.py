"""Changed read-only data and redirected stored pointers, built on the host, applied in a guest.

- fs/proc/array.c: a string of ``task_state_array`` (a ``const char *const``
  table read by /proc/PID/status) changes: the patch carries a new copy of
  the table and patches the two functions that read it; the module goes
  when the patch goes.
- mm/page_alloc.c: a name of ``migratetype_names`` (a global ``const char
  *const`` table) changes; nothing in its own file reads it, and the image
  scan finds its reader in mm/vmstat.c, compiled and patched to use the copy.
- fs/proc/task_mmu.c: ``proc_pid_maps_op`` (a ``const struct
  seq_operations``) shows through a new function: its copy is carried and
  ``pid_maps_open``, which hands its address to seq_open(), is patched, so
  the module keeps itself loaded (open files still use the copy).
- kernel/trace/trace_nop.c (built without ftrace): ``nop_set_flag`` is
  reached only through ``nop_trace.set_flag`` (writable data); the patch
  stores its carried copy there after the transition and puts the original
  back at unpatch. Three cumulative levels: the second takes the slot over,
  the third (without that fix) gives it back.
- lib/crc-t10dif.c (built without ftrace, a module): ``crc_t10dif_notify`` is
  reached through its notifier block: the slot is redirected when the module
  loads, put back when it goes.

tests/kernel/test_data.py checks the behaviour in the guest; the refusals
are checked here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suture import bundle
from suture.builder import source
from suture.builder.kbuild import build_module
from suture.builder.pipeline import BuildRequest, build
from suture.errors import BuildError
from suture.packages import kernels
from tests.builds import LAB
from tests.support.fixes import SHOW, make_fix
from tests.support.guest import require_qemu, run_guest_tests

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parent.parent
NOP = "kernel/trace/trace_nop.c"
REFUSE = '" Now cat trace_options to see the result\\n",\n\t\t\tset);\n\t\treturn -EINVAL;'
ACCEPT = (REFUSE, REFUSE.replace("return -EINVAL;", "return 0;"))
# Level 2 accepts too, and says so in its own words.
ACCEPT_L2 = (REFUSE, REFUSE.replace("return -EINVAL;", 'pr_info("suture level 2 accepts\\n");'
                                    "\n\t\treturn 0;"))  # fmt: skip
# The copy sleeps before accepting: a task is inside it while the slot is put back.
SLEEPY = (
    ("#include <linux/ftrace.h>\n", "#include <linux/ftrace.h>\n#include <linux/delay.h>\n"),
    (REFUSE, REFUSE.replace("return -EINVAL;", "msleep(12000);\n\t\treturn 0;")),
)
STATES = ('"R (running)",', '"R (running, patched)",')
CRC = (
    "\tstruct crypto_alg *alg = data;\n\n",
    '\tstruct crypto_alg *alg = data;\n\n\tpr_info("suture-crc: %s\\n", alg->cra_name);\n',
)
MAPS = (
    (
        "static const struct seq_operations proc_pid_maps_op = {",
        "static int show_map_tagged(struct seq_file *m, void *v)\n{\n"
        '\tseq_puts(m, "suture:");\n\treturn show_map(m, v);\n}\n\n'
        "static const struct seq_operations proc_pid_maps_op = {",
    ),
    ("\t.show\t= show_map\n};\n\nstatic int pid_maps_open", "\t.show\t= show_map_tagged\n"
     "};\n\nstatic int pid_maps_open"),
)  # fmt: skip


@pytest.fixture(scope="module")
def tree(kernel_release: str) -> source.SourceTree:
    require_qemu()
    return source.prepare(kernel_release)


def _build(tree: source.SourceTree, fix: Path, out: Path, name: str) -> dict[str, object]:
    return build(BuildRequest(tree.release, fix, out, name=name), LAB).to_dict()


def test_writable_data_is_still_refused(tree: source.SourceTree, tmp_path: Path) -> None:
    # nop_trace is __read_mostly: writable, in a section it shares with other data.
    fix = make_fix(tree, NOP, ("\t.allow_instances = true,", "\t.allow_instances = false,"),
                   out=tmp_path)  # fmt: skip
    with pytest.raises(BuildError, match=r"changes existing data \(nop_trace\); it is writable"):
        build(BuildRequest(tree.release, fix, tmp_path), LAB)


def test_a_pointer_in_read_only_data_is_refused_and_named(
    tree: source.SourceTree, tmp_path: Path
) -> None:
    # tracing_thresh_read (no ftrace entry) is reached only through a const file_operations.
    body = "\treturn tracing_nsecs_read(&tracing_thresh, ubuf, cnt, ppos);"
    fix = make_fix(
        tree, "kernel/trace/trace.c", (body, "\tif (!cnt)\n\t\treturn 0;\n" + body), out=tmp_path
    )
    with pytest.raises(BuildError, match=r"tracing_thresh_fops\+0x[0-9a-f]+ \(\.rodata") as e:
        build(BuildRequest(tree.release, fix, tmp_path), LAB)
    assert "it is read-only" in e.value.message
    assert "writable data" in e.value.hint


def test_data_copies_and_slots_in_guest(tree: source.SourceTree, tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    report = _build(
        tree, make_fix(tree, "fs/proc/array.c", STATES, out=tmp_path), out, "suture_t_states"
    )
    assert report["data_copies"] == ["task_state_array"]
    assert report["kept"] == []
    assert sorted(report["objects"]["vmlinux"]) == ["do_task_stat", "proc_pid_status"]  # type: ignore[index]
    fix = make_fix(tree, "mm/page_alloc.c", ('\t"Unmovable",', '\t"Unmovable*",'), out=tmp_path)
    report = _build(tree, fix, out, "suture_t_names")
    assert report["data_copies"] == ["migratetype_names"]
    assert report["objects"] == {"vmlinux": ["pagetypeinfo_show"]}  # in mm/vmstat.c
    report = _build(
        tree, make_fix(tree, "fs/proc/task_mmu.c", *MAPS, out=tmp_path), out, "suture_t_maps"
    )
    assert report["data_copies"] == ["proc_pid_maps_op"]
    assert report["objects"] == {"vmlinux": ["pid_maps_open"]}
    assert "pid_maps_open hands out the address of the copy of proc_pid_maps_op" in report["kept"]  # type: ignore[operator]
    slot_fix = make_fix(tree, NOP, ACCEPT, out=tmp_path)
    for name in ("suture_t_slot", "suture_t_lvl1", "suture_t_poked"):
        report = _build(tree, slot_fix, out, name)
        assert report["carried"] == ["nop_set_flag"]
        assert report["objects"] == {"vmlinux": []}
        assert [s.split("+")[0] for s in report["slots"]] == ["nop_trace"]  # type: ignore[union-attr]
        assert report["unpatched"] == []
    _build(tree, make_fix(tree, NOP, ACCEPT_L2, out=tmp_path), out, "suture_t_lvl2")
    l3 = (SHOW, '\tseq_puts(m, "l3:");\n' + SHOW)
    report = _build(
        tree, make_fix(tree, "fs/proc/cmdline.c", l3, out=tmp_path), out, "suture_t_lvl3"
    )
    assert report["slots"] == []
    _build(tree, make_fix(tree, NOP, *SLEEPY, out=tmp_path), out, "suture_t_sleepy")
    report = _build(
        tree, make_fix(tree, "lib/crc-t10dif.c", CRC, out=tmp_path), out, "suture_t_crc"
    )
    assert report["objects"] == {"crc_t10dif": []}
    assert report["slots"] == ["crc_t10dif_nb+0x0 (.data.crc_t10dif_nb) -> crc_t10dif_notify"]
    assert bundle.read_manifest(out / "suture_t_slot.bundle").unpatched == ()
    image = kernels.fetch(tree.release)
    build_module(image.headers_dir, ROOT / "tests/fixtures/modules/slot_poke.c",
                 "suture_slot_poke", out / "poke")  # fmt: skip
    run_guest_tests(image, "tests/kernel/test_data.py", {"SUTURE_TEST_BUNDLES": str(out)})
