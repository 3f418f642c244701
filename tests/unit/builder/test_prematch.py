"""suture.builder.prematch and the generated check: expected bytes, and what may differ."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder import module, prematch
from suture.builder.elfobj import ObjectFile

SOURCE = """\
extern int counter;
extern void other(int);
int patched(int x)
{
\tif (x > 3)
\t\tother(x);
\treturn counter + x;
}
"""


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> ObjectFile:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    folder = tmp_path_factory.mktemp("prematch")
    (folder / "f.c").write_text(SOURCE)
    # kbuild's flags for this in short: ftrace entries, recorded; one section per function.
    subprocess.run(
        ["gcc", "-O2", "-fno-pie", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-c", str(folder / "f.c"), "-o", str(folder / "f.o")],
        check=True, capture_output=True,
    )  # fmt: skip
    return ObjectFile.load(folder / "f.o")


def test_relocated_fields_and_the_ftrace_call_may_differ(obj: ObjectFile) -> None:
    sec = obj.functions()["patched"]
    e = prematch.expected(obj, sec, "patched")
    assert e.code == sec.data and len(e.mask) == len(e.code)
    hidden = {i for i, m in enumerate(e.mask) if not m}
    for r in sec.relas:
        assert set(range(r.offset, r.offset + 4)) <= hidden  # counter, other, __fentry__
    start = 4 if e.code.startswith(prematch.ENDBR64) else 0
    assert set(range(start, start + 5)) <= hidden  # the whole call __fentry__, opcode too
    assert 0 < e.checked < len(e.code)
    zeroed = bytes(0 if i in hidden else b for i, b in enumerate(e.code))
    assert e.sha256 == hashlib.sha256(zeroed).hexdigest()


def test_the_generated_module_checks_first_then_runs_the_fixes_own_callback() -> None:
    e = prematch.Expected("cmdline_proc_show", b"\x0f\x1f\x44\x00\x00\xc3", b"\x00" * 5 + b"\x01")
    objects = [
        module.KlpObject(
            "vmlinux",
            [module.PatchedFunction("cmdline_proc_show", "n0")],
            {"pre_patch": "fix_pre"},
            [e],
        ),
        module.KlpObject("mrp", [module.PatchedFunction("mrp_rcv", "n1")], {}, [None]),
    ]
    c = module.stub_source("suture_x", objects, {})
    assert ".pre_patch = suture_prematch_pre_patch0," in c
    assert "return ((int (*)(struct klp_object *))(void *)fix_pre)(obj);" in c
    assert ".pre_patch = (void *)fix_pre" not in c  # only through the check
    assert "suture_prematch_pre_patch1" not in c  # nothing to check in mrp
    assert (
        "static const unsigned char suture_code0_0[] = {\n\t0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3" in c
    )
    assert '{ "cmdline_proc_show", 6, suture_code0_0, suture_mask0_0 },' in c
    assert "module_param_string(prematch, suture_refused" in c
    assert "return -EILSEQ;" in c
    plain = module.stub_source(
        "suture_y", [module.KlpObject("vmlinux", [module.PatchedFunction("f", "n")])], {}
    )
    assert "suture_prematch" not in plain  # nothing expected: no check


def test_the_check_runs_before_the_run_time_part_which_calls_the_fixes_own_callback() -> None:
    e = prematch.Expected("cmdline_proc_show", b"\xc3", b"\x01")
    wired = {k: f"suture_{k}_0" for k in ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")}
    obj = module.KlpObject(
        "vmlinux",
        [module.PatchedFunction("cmdline_proc_show", "n0")],
        {"pre_patch": "fix_pre"},
        [e],
        runtime_callbacks=wired,
    )
    c = module.stub_source("suture_x", [obj], {}, runtime="/* run-time part */\n")
    assert ".pre_patch = suture_prematch_pre_patch0," in c
    assert ".post_patch = suture_post_patch_0," in c
    assert "return suture_pre_patch_0(obj);" in c  # the run-time part calls fix_pre itself
    assert "fix_pre)(obj)" not in c
    assert c.index("/* run-time part */") < c.index("static int suture_prematch_pre_patch0")


SOURCE_612 = """\
extern int counter;
extern void other(int);
int patched(int x)
{
\tasm volatile("661: nop; nop; nop\\n662:\\n"
\t\t".pushsection .altinstructions,\\"a\\"\\n"
\t\t" .long 661b - .\\n .long 663f - .\\n .long 0\\n .byte 662b-661b\\n .byte 664f-663f\\n"
\t\t".popsection\\n"
\t\t".pushsection .altinstr_replacement,\\"ax\\"\\n663: lfence\\n664:\\n.popsection\\n");
\tif (x > 3)
\t\tother(x);
\treturn counter + x;
}
"""


def test_on_6_12_the_padding_thunks_and_14_byte_alternatives_are_left_out(
    tmp_path: Path,
) -> None:
    # As 6.12 and 7.x build: CALL_PADDING, return thunks, objtool at link time (so
    # the object has no .return_sites), struct alt_instr of 14 bytes.
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "f.c").write_text(SOURCE_612)
    subprocess.run(
        ["gcc", "-O2", "-fno-pie", "-pg", "-mfentry", "-mrecord-mcount", "-ffunction-sections",
         "-fpatchable-function-entry=16,16", "-mfunction-return=thunk-extern",
         "-c", str(tmp_path / "f.c"), "-o", str(tmp_path / "f.o")],
        check=True, capture_output=True,
    )  # fmt: skip
    obj = ObjectFile.load(tmp_path / "f.o")
    sec = obj.functions()["patched"]
    assert sec.start == 16 and not any(t.name == ".return_sites" for t in obj.sections)
    e = prematch.expected(obj, sec, "patched")
    assert e.code == bytes(sec.data[16:])  # from the symbol on, as old_func
    hidden = {i for i, m in enumerate(e.mask) if not m}
    nops = e.code.index(b"\x90\x90\x90")
    assert {nops, nops + 1, nops + 2} <= hidden  # the alternative's 3 bytes (entry of 14)
    thunks = [r for r in sec.relas if obj.symbols[r.sym].name == "__x86_return_thunk"]
    assert thunks
    for r in thunks:
        assert set(range(r.offset - 1 - 16, r.offset + 4 - 16)) <= hidden  # jmp and rel32


def test_a_static_call_site_without_its_table_is_left_out(tmp_path: Path) -> None:
    # 7.x: might_resched() is a static call (its trampoline __SCT__might_resched)
    # that the kernel turns into a NOP at boot under lazy preemption; objtool
    # lists the site in vmlinux's table only.
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "f.c").write_text(
        "extern void __SCT__might_resched(void);\n"
        "int counter;\n"
        "int patched(int x)\n{\n\t__SCT__might_resched();\n\treturn counter + x;\n}\n"
    )
    subprocess.run(
        ["gcc", "-O2", "-fno-pie", "-ffunction-sections", "-fpatchable-function-entry=16,16",
         "-c", str(tmp_path / "f.c"), "-o", str(tmp_path / "f.o")],
        check=True, capture_output=True,
    )  # fmt: skip
    obj = ObjectFile.load(tmp_path / "f.o")
    sec = obj.functions()["patched"]
    e = prematch.expected(obj, sec, "patched")
    hidden = {i for i, m in enumerate(e.mask) if not m}
    [site] = [r for r in sec.relas if obj.symbols[r.sym].name == "__SCT__might_resched"]
    assert set(range(site.offset - 1 - 16, site.offset + 4 - 16)) <= hidden  # call and rel32
