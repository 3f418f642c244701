"""A carried function's cold part is named after the function's new name in the patch.

objtool, which kbuild runs on the module's link (6.12, 7.x), finds the
function a ``foo.cold`` belongs to by the name before ``.cold`` and fails the
build when it is not there (``nmi_handle.part.0.cold(): can't find parent
function``, 6.12.117's arch/x86/kernel/nmi.c).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.elfobj import ObjectFile
from suture.builder.extract import extract, new_symbol_name

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CFLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-ffunction-sections",
          "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]  # fmt: skip
SOURCE = """\
extern void report(int) __attribute__((cold));
extern int sink(int);
int handle(int x)
{
\tif (__builtin_expect(x > 100, 0)) {
\t\treport(x);
\t\treport(x + 1);
\t}
\treturn sink(x) * 2;
}
"""


def _symbols(path: Path) -> dict[str, str]:
    out = subprocess.run(["readelf", "-sW", str(path)], capture_output=True, text=True, check=True)
    names = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[3] in ("FUNC", "NOTYPE", "OBJECT"):
            names[fields[7]] = fields[4]  # name -> binding
    return names


def test_cold_part_follows_the_renamed_function(tmp_path: Path) -> None:
    src = tmp_path / "nmi.c"
    src.write_text(SOURCE)
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(tmp_path / "nmi.o")], check=True)
    obj = ObjectFile.load(tmp_path / "nmi.o")
    if "handle.cold" not in obj.functions():
        pytest.skip("this gcc made no cold part")
    exported = {"sink", "report", "__fentry__"}
    patch = extract(obj, {"handle": "handle"}, renames={}, exported=exported)
    (tmp_path / "patch.o").write_bytes(patch.data)
    names = _symbols(tmp_path / "patch.o")
    new = new_symbol_name("handle")
    assert names[new] == "GLOBAL"
    assert names[new + ".cold"] == "LOCAL"  # objtool's parent lookup finds `new`
    assert "handle.cold" not in names
