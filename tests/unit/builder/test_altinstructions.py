"""``.altinstructions`` entries cut at the size the build uses: 12 bytes on 6.1, 14 after.

``struct alt_instr`` gained a 32-bit ``ft_flags`` in place of the 16-bit cpuid
after 6.1. Cut at 12 bytes, a 6.12 patch's table held torn entries and the
module loader's apply_alternatives() hit its BUG() (6.12.117: stackdepot's
and madvise's fixes). The entries here are written as the kernel's
ALTERNATIVE macro writes them, in gcc-compiled functions.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.elfobj import ObjectFile
from suture.builder.extract import _entry_size, extract
from suture.builder.sections import ENTRY_TABLES

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CFLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-ffunction-sections",
          "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]  # fmt: skip
# One alternative: the original site, its entry, its replacement. FLAGS is the
# cpuid field: ".2byte" (6.1's u16) or ".4byte" (ft_flags after 6.1).
ALT = r"""
    asm volatile("661: nop; nop\n662:\n"
        ".pushsection .altinstructions,\"a\"\n"
        " .long 661b - .\n .long 663f - .\n FLAGS 5\n"
        " .byte 662b - 661b\n .byte 664f - 663f\n"
        ".popsection\n"
        ".pushsection .altinstr_replacement,\"ax\"\n663: xchg %ax, %ax\n664:\n.popsection");
"""
SOURCE = """
int first(int x) {{ {alt} return x + 1; }}
int second(int x) {{ {alt} {alt} return x + 2; }}
"""


def _object(tmp_path: Path, flags: str) -> ObjectFile:
    src = tmp_path / "alt.c"
    src.write_text(SOURCE.format(alt=ALT.replace("FLAGS", flags)))
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(tmp_path / "alt.o")], check=True)
    return ObjectFile.load(tmp_path / "alt.o")


@pytest.mark.parametrize(("flags", "size"), [(".2byte", 12), (".4byte", 14)], ids=["6.1", "6.12"])
def test_entry_size_read_from_the_object(tmp_path: Path, flags: str, size: int) -> None:
    obj = _object(tmp_path, flags)
    table = obj.by_name[".altinstructions"]
    assert len(table.data) == 3 * size
    assert _entry_size(obj, table, ENTRY_TABLES[".altinstructions"]) == size


def test_a_patch_carries_whole_entries(tmp_path: Path) -> None:
    obj = _object(tmp_path, ".4byte")
    patch = extract(obj, {"second": "second"}, renames={}, exported={"__fentry__"})
    (tmp_path / "patch.o").write_bytes(patch.data)
    carried = ObjectFile.load(tmp_path / "patch.o").by_name[".altinstructions"]
    assert len(carried.data) == 2 * 14  # second's two entries, whole; none of first's
