"""Carrying a changed function without an ftrace entry and patching its callers instead.

The objects come from small C sources compiled here with gcc, flags as
kbuild's in short (``-O2 -fno-pie -pg -mfentry -ffunction-sections
-fdata-sections -c``); ``notrace`` is kbuild's ``no_instrument_function``
and ``noipa`` keeps GCC from inlining or cloning the helpers.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.callers import (
    MAX_DEPTH,
    CallerPlan,
    OutsideRefs,
    Reference,
    RefKind,
    plan_callers,
)
from suture.builder.elfobj import ObjectFile
from suture.builder.image_refs import ImageIndex, LoadedSection, _rel32_hits
from suture.builder.slots import Home, Slot
from suture.builder.symbols import Kallsyms
from suture.errors import BuildError

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CFLAGS = ["-O2", "-fno-pie", "-pg", "-mfentry", "-ffunction-sections", "-fdata-sections", "-c"]
PRELUDE = """\
#define notrace __attribute__((no_instrument_function))
#define noipa __attribute__((noipa))
#define __init __attribute__((section(".init.text")))
extern int sink(int);
struct ops { int (*fn)(int); };
"""
HELPER = "static noipa notrace int helper(int x) { return sink(x * 3); }\n"


def _objects(tmp_path: Path, body: str, helper: str = HELPER) -> tuple[ObjectFile, ObjectFile]:
    """``body`` compiled with ``helper`` as is (the original) and with its constant changed."""
    objs = []
    for name, code in (("orig", helper), ("patched", helper.replace("x * 3", "x * 4"))):
        src = tmp_path / name / "x.c"
        src.parent.mkdir(parents=True)
        src.write_text(PRELUDE + code + body)
        subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(src.with_suffix(".o"))], check=True)
        objs.append(ObjectFile.load(src.with_suffix(".o")))
    return objs[0], objs[1]


def _none_outside(_name: str) -> list[Reference] | None:
    return []


def _plan(
    tmp_path: Path, body: str, helper: str = HELPER, outside: OutsideRefs = _none_outside
) -> CallerPlan:
    orig, patched = _objects(tmp_path, body, helper)
    return plan_callers(orig, patched, ["helper"], fixed=set(), vmlinux=True, outside=outside)


def test_a_caller_with_fentry_is_patched(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "int user(int x) { return helper(x) + 1; }\n")
    assert plan.carried == ["helper"]
    assert plan.patched == ["user"]
    assert plan.paths == {"user": "helper"}


def test_a_caller_without_fentry_is_carried_too(tmp_path: Path) -> None:
    body = (
        "static noipa notrace int middle(int x) { return helper(x) + 2; }\n"
        "int top(int x) { return middle(x) + 1; }\n"
    )
    plan = _plan(tmp_path, body)
    assert plan.carried == ["helper", "middle"]
    assert plan.patched == ["top"]


def test_a_tail_jump_is_no_anchor(tmp_path: Path) -> None:
    # jumper's frame is gone while helper runs: its callers hold the patched frame.
    body = (
        "noipa int jumper(int x) { return helper(x); }\nint top(int x) { return jumper(x) + 1; }\n"
    )
    plan = _plan(tmp_path, body)
    assert plan.carried == ["helper", "jumper"]
    assert plan.patched == ["top"]


def test_a_tail_jumper_reached_only_by_pointer_is_patched_with_a_frame(tmp_path: Path) -> None:
    # A syscall wrapper: reached through the syscall table, it tail-jumps to the
    # body. Carrying it leaves no way in; patching it (its copy compiled to call)
    # covers every way in.
    body = (
        "noipa int jumper(int x) { return helper(x); }\nstruct ops jumper_ops = { .fn = jumper };\n"
    )
    plan = _plan(tmp_path, body)
    assert plan.framed == ["jumper"]
    assert plan.carried == ["helper"]
    assert plan.patched == []
    assert plan.unpatched == []
    assert plan.paths == {"jumper": "helper"}


def test_framing_is_refused_when_the_old_code_reaches_replaced_code(tmp_path: Path) -> None:
    # A task switched while it runs the old helper (no frame of jumper) would
    # go on into other's new code from old code.
    # The ops table is const: carrying jumper cannot redirect it either.
    helper = "static noipa notrace int helper(int x) { return other(x * 3) + 1; }\n"
    body = (
        "noipa int jumper(int x) { return helper(x); }\n"
        "const struct ops jumper_ops = { .fn = jumper };\n"
    )
    orig, patched = _objects(
        tmp_path, body, "noipa int other(int x) { return sink(x); }\n" + helper
    )
    with pytest.raises(BuildError, match="its old code reaches other, which the patch replaces"):
        plan_callers(
            orig, patched, ["helper"], fixed={"other"}, vmlinux=True, outside=_none_outside
        )


def test_a_changed_caller_that_tail_jumps_is_refused(tmp_path: Path) -> None:
    orig, patched = _objects(tmp_path, "int user(int x) { return helper(x); }\n")
    with pytest.raises(BuildError, match="the changed user tail-jumps to it"):
        plan_callers(orig, patched, ["helper"], fixed={"user"}, vmlinux=True, outside=_none_outside)


def test_address_taken_in_code_is_left_old_and_noted(tmp_path: Path) -> None:
    body = (
        "extern void keep(int (*fn)(int));\n"
        "int user(int x) { return helper(x) + 1; }\nvoid reg(void) { keep(helper); }\n"
    )
    plan = _plan(tmp_path, body)
    assert plan.patched == ["user"]
    assert plan.unpatched == [
        "helper: its address is taken in reg, so calls through that pointer stay old"
    ]
    orig, patched = _objects(tmp_path / "b", body)
    with pytest.raises(BuildError, match="address is taken in reg"):
        plan_callers(
            orig, patched, ["helper"], fixed=set(), vmlinux=True, outside=_none_outside,
            complete=True,
        )  # fmt: skip


def test_a_pointer_in_writable_data_is_redirected(tmp_path: Path) -> None:
    body = (
        "struct ops helper_ops = { .fn = helper };\n"
        "struct two { long pad; int (*fn)(int); } helper_two = { .fn = helper };\n"
    )
    plan = _plan(tmp_path, body, outside=_none_outside)
    assert plan.unpatched == []
    assert plan.reached  # a redirected slot is a way in that reaches the new code
    found = {(s.symbol, s.offset, s.home) for s, fn in plan.slots if fn == "helper"}
    assert found == {("helper_ops", 0, Home.WRITABLE), ("helper_two", 8, Home.WRITABLE)}
    orig, patched = _objects(tmp_path / "b", body)
    complete = plan_callers(
        orig, patched, ["helper"], fixed=set(), vmlinux=True, outside=_none_outside, complete=True
    )  # a redirected slot leaves nothing old: --complete holds
    assert len(complete.slots) == 2


@pytest.mark.parametrize(
    ("declaration", "why"),
    [
        ("const struct ops helper_ops = { .fn = helper };", "read-only"),
        ('struct ops helper_ops __attribute__((section(".data..ro_after_init"))) = '
         "{ .fn = helper };", "__ro_after_init"),
        ('struct ops helper_ops __attribute__((section(".init.data"))) = { .fn = helper };',
         "boot-time data"),
        # A PREL32 table entry, as the kernel's relative tables are.
        ('asm(".pushsection .data.helper_ops, \\"aw\\"\\n.type helper_ops, @object\\n'
         '.size helper_ops, 4\\nhelper_ops: .long helper - .\\n.popsection");\n'
         "void *keep_helper = helper;", "PC-relative offset"),
        ("struct __attribute__((packed)) odd { char c; int (*fn)(int); } helper_ops = "
         "{ .fn = helper };", "not 8-byte aligned"),
    ],
)  # fmt: skip
def test_a_pointer_that_cannot_be_redirected_is_refused_and_named(
    tmp_path: Path, declaration: str, why: str
) -> None:
    body = "int user(int x) { return helper(x) + 1; }\n" + declaration + "\n"
    with pytest.raises(BuildError, match=rf"stored where .*: helper_ops\+0x[01] \(.*\): .*{why}"):
        _plan(tmp_path, body)


def test_an_initcall_entry_is_a_call_at_boot(tmp_path: Path) -> None:
    body = (
        "int user(int x) { return helper(x) + 1; }\n"
        'static int (*entry)(int) __attribute__((section(".initcall6.init"), used)) = helper;\n'
    )
    plan = _plan(tmp_path, body)
    assert plan.patched == ["user"]
    assert plan.slots == []
    assert plan.unpatched == []


def test_no_patchable_path_is_refused(tmp_path: Path) -> None:
    body = (
        "extern void keep(int (*fn)(int));\n"
        "static noipa notrace int middle(int x) { return helper(x) + 2; }\n"
        "void reg(void) { keep(middle); }\n"
    )
    with pytest.raises(
        BuildError, match=r"no path to it passes .*helper <- middle: its address is taken in reg"
    ):
        _plan(tmp_path, body)


def test_address_taken_by_a_carried_function_is_refused(tmp_path: Path) -> None:
    # middle's new code would hand out a pointer to the patch's copy of helper.
    body = (
        "extern void keep(int (*fn)(int));\n"
        "static noipa notrace int middle(int x) { keep(helper); return helper(x) + 2; }\n"
        "int top(int x) { return middle(x) + 1; }\n"
    )
    with pytest.raises(BuildError, match="taken in middle, which the patch replaces"):
        _plan(tmp_path, body)


def test_exported_is_left_old_and_noted(tmp_path: Path) -> None:
    helper = "noipa notrace int helper(int x) { return sink(x * 3); }\n"
    body = (
        "int user(int x) { return helper(x) + 1; }\n"
        '__attribute__((section("___ksymtab_gpl+helper"), used)) '
        "static void *const __ksymtab_helper = helper;\n"
    )
    plan = _plan(tmp_path, body, helper)
    assert plan.patched == ["user"]
    assert plan.unpatched == ["helper: it is exported, so modules may call the old code"]


def test_global_callers_in_other_files_go_to_the_pipeline(tmp_path: Path) -> None:
    helper = "noipa notrace int helper(int x) { return sink(x * 3); }\n"
    body = "int user(int x) { return helper(x) + 1; }\n"
    caller = Reference("other_caller", RefKind.CALL, address=0x1000)
    jumper = Reference("other_jumper", RefKind.JUMP, address=0x2000)

    def elsewhere(_name: str) -> list[Reference] | None:
        return [caller, jumper]

    def unknown(_name: str) -> list[Reference] | None:
        return None

    plan = _plan(tmp_path, body, helper, outside=elsewhere)
    assert plan.patched == ["user"]
    assert plan.outside == [(caller, "helper")]
    assert plan.unpatched == ["helper: other_jumper tail-jumps to it from another file"]
    plan = _plan(tmp_path / "b", body, helper, outside=unknown)
    assert plan.unpatched == ["helper: it is global and its callers in other files are not known"]
    # Only callers elsewhere: the plan stands, for the pipeline to find them.
    only = _plan(tmp_path / "c", "int x;\n", helper, outside=elsewhere)
    assert only.patched == []
    assert only.outside == [(caller, "helper")]


def test_boot_code_is_no_path_but_must_not_be_the_only_one(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        "int __init setup(void) { return helper(1); }\nint user(int x) { return helper(x); }\n"
        "int other(int x) { return helper(x) + 1; }\n",
    )
    assert plan.patched == ["other"]  # user tail-jumps: carried, nothing calls it
    with pytest.raises(BuildError, match="no caller with an ftrace entry"):
        _plan(tmp_path / "b", "int __init setup(void) { return helper(1) + 1; }\n")


def test_depth_is_bounded(tmp_path: Path) -> None:
    chain = ["helper"] + [f"level{i}" for i in range(MAX_DEPTH + 1)]
    body = "".join(
        f"static noipa notrace int {name}(int x) {{ return {below}(x) + 1; }}\n"
        for below, name in itertools.pairwise(chain)
    )
    body += f"int top(int x) {{ return {chain[-1]}(x) + 1; }}\n"
    with pytest.raises(BuildError, match=f"no path to it .* within {MAX_DEPTH} levels"):
        _plan(tmp_path, body)


# -- the vmlinux image scan ----------------------------------------------------

BASE = 0xFFFFFFFF81000000
TARGET = BASE + 0x100


def _call(site: int, target: int, op: bytes = b"\xe8") -> bytes:
    return op + (target - (site + len(op) + 4)).to_bytes(4, "little", signed=True)


def _index(text: bytes, data: bytes = b"") -> ImageIndex:
    ksyms = Kallsyms({
        "caller": [(BASE, "T")],
        "target": [(TARGET, "T")],
        "jumper": [(BASE + 0x40, "t")],
        "ops": [(BASE + 0x1000000, "D")],
    })  # fmt: skip
    data_sec = LoadedSection(".data", BASE + 0x1000000, data, text=False, writable=True)
    return ImageIndex([LoadedSection(".text", BASE, text, True), data_sec], ksyms)


def test_image_scan_names_calls_jumps_and_pointers() -> None:
    text = bytearray(0x200)
    text[0x10:0x15] = _call(BASE + 0x10, TARGET)
    text[0x40:0x45] = _call(BASE + 0x40, TARGET, b"\xe9")
    text[0xFC:0x100] = bytes(4)  # the padding before a function: a zero "displacement"
    data = TARGET.to_bytes(8, "little")
    refs = _index(bytes(text), data).references(TARGET, own={TARGET})
    assert Reference("caller", RefKind.CALL, address=BASE) in refs
    assert Reference("jumper", RefKind.JUMP, address=BASE + 0x40) in refs
    ops = BASE + 0x1000000
    slot = Slot("ops", 0, ".data", Home.WRITABLE, 8, relative=False, address=ops)
    assert Reference("ops", RefKind.ADDRESS, address=ops, slot=slot) in refs
    assert len(refs) == 3


def test_image_scan_tells_where_a_stored_pointer_may_be_written() -> None:
    ops = BASE + 0x1000000
    ksyms = Kallsyms({
        "target": [(TARGET, "T")],
        "table": [(ops, "d")],
        "late": [(ops + 0x10, "d")],
        "hooks": [(ops + 0x20, "D")],
        "__start_rodata": [(ops, "D")],
        "__start_ro_after_init": [(ops + 0x10, "D")],
        "__end_ro_after_init": [(ops + 0x20, "D")],
        "__end_rodata": [(ops + 0x20, "D")],
        "_sdata": [(ops + 0x20, "D")],
        "_edata": [(ops + 0x40, "D")],
    })  # fmt: skip
    data = bytearray(0x40)
    for at in (0x8, 0x10, 0x28):
        data[at : at + 8] = TARGET.to_bytes(8, "little")
    data[0x34:0x38] = (TARGET & 0xFFFFFFFF).to_bytes(4, "little")  # a 32-bit address
    # The image's .rodata is writable in the ELF (it holds ro_after_init): kallsyms decides.
    index = ImageIndex([LoadedSection(".rodata", ops, bytes(data), False, True)], ksyms)
    found = {
        (r.slot.symbol, r.slot.offset, r.slot.home, r.slot.width)
        for r in index.references(TARGET, own=set())
        if r.slot is not None
    }
    assert found == {
        ("table", 8, Home.READ_ONLY, 8),
        ("late", 0, Home.RO_AFTER_INIT, 8),
        ("hooks", 8, Home.WRITABLE, 8),
        ("hooks", 0x14, Home.WRITABLE, 4),
    }
    # Without the bounds in kallsyms, .rodata is never taken for writable.
    bare = Kallsyms({k: v for k, v in ksyms.by_name.items() if not k.startswith(("_", "__"))})
    index = ImageIndex([LoadedSection(".rodata", ops, bytes(data), False, True)], bare)
    homes = {r.slot.home for r in index.references(TARGET, own=set()) if r.slot is not None}
    assert homes == {Home.READ_ONLY}


def test_image_scan_leaves_out_the_object_itself() -> None:
    text = bytearray(0x200)
    text[0x10:0x15] = _call(BASE + 0x10, TARGET)
    assert _index(bytes(text)).references(TARGET, own={TARGET, BASE}) == []


def test_rel32_scan_finds_every_displacement() -> None:
    data = bytearray(b"\xcc" * 200_000)  # int3 filler: no zero displacement before target
    base, target = 0x1000, 0x1000 + 150_000
    sites = [5, 70_000, 149_990, 199_000]
    for p in sites:
        data[p : p + 4] = (target - (base + p + 4)).to_bytes(4, "little", signed=True)
    assert _rel32_hits(bytes(data), base, target, 4) == sites
