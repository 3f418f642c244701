"""Finding the source of a caller in another file, and checking it is the running code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.elfobj import ObjectFile
from suture.builder.outside import _defines, definition_files, matches_image


def test_definitions_and_declarations_told_apart() -> None:
    assert _defines("static int foo(int a,\n\t       int b)\n{\n\treturn a;\n}\n", "foo")
    assert _defines("void\nfoo(void)\n{\n}\n", "foo")  # the type on the line above
    assert _defines("static void __cold foo(void) __releases(x)\n{\n}\n", "foo")
    assert not _defines("int foo(int a);\n", "foo")
    assert not _defines("\treturn foo(a);\n", "foo")  # a call, indented
    assert not _defines("#define foo(x) (x)\n", "foo")
    assert not _defines("static int foobar(void)\n{\n}\n", "foo")


def test_definition_files_include_the_files_that_include_them(tmp_path: Path) -> None:
    sched = tmp_path / "kernel" / "sched"
    sched.mkdir(parents=True)
    (sched / "cpufreq_schedutil.c").write_text("static void sugov_stop(void)\n{\n}\n")
    (sched / "build_utility.c").write_text('#ifdef X\n# include "cpufreq_schedutil.c"\n#endif\n')
    (sched / "core.c").write_text("extern void sugov_stop(void);\n")
    (tmp_path / "arch" / "arm64").mkdir(parents=True)
    (tmp_path / "arch" / "arm64" / "x.c").write_text("void sugov_stop(void)\n{\n}\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "y.c").write_text("void sugov_stop(void)\n{\n}\n")
    (sched / "fair.c").write_text("void other(void)\n{\n}\n")
    assert definition_files(tmp_path, ["sugov_stop", "other", "nowhere"]) == {
        "sugov_stop": ["kernel/sched/cpufreq_schedutil.c", "kernel/sched/build_utility.c"],
        "other": ["kernel/sched/fair.c"],
        "nowhere": [],
    }


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_matches_image_masks_relocations_and_the_entry(tmp_path: Path) -> None:
    src = tmp_path / "x.c"
    src.write_text("extern int sink(int);\nint user(int x) { return sink(x * 3) + 1; }\n")
    flags = ["-O2", "-fno-pie", "-pg", "-mfentry", "-ffunction-sections", "-c"]
    subprocess.run(["gcc", *flags, str(src), "-o", str(tmp_path / "x.o")], check=True)
    obj = ObjectFile.load(tmp_path / "x.o")
    sec = obj.functions()["user"]
    linked = bytearray(sec.data)
    linked[0:5] = b"\x0f\x1f\x44\x00\x00"  # the fentry call, a nop once linked
    for r in sec.relas:
        linked[r.offset : r.offset + 4] = b"\x12\x34\x56\x78"  # relocated
    assert matches_image(obj, sec, bytes(linked))
    other = bytearray(linked)
    other[-2] ^= 0xFF  # code that differs
    assert not matches_image(obj, sec, bytes(other))
    assert not matches_image(obj, sec, bytes(linked[:-1]))
    assert not matches_image(obj, sec, None)
