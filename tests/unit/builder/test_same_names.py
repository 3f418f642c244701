"""Same-named locals told apart by what they hold, in a linked image and in a module.

Two small files define locals of the same names, as ACPICA's files each
define ``_acpi_module_name`` and ext4's files each get a copy of
``ext4_filetype_table`` from ext4.h. They are compiled here with gcc (kbuild's
flags in short) and linked with ld: into an executable image at a kernel
address (vmlinux, named by ``nm``'s listing as kallsyms would) and with
``ld -r`` (a module's ``.ko``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.elfobj import ObjectFile
from suture.builder.image_refs import ImageIndex
from suture.builder.same_names import SameNames
from suture.builder.symbols import Kallsyms, parse_kallsyms
from suture.errors import BuildError

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("ld") is None, reason="needs gcc and ld"
)

CFLAGS = [
    "-O2",
    "-fno-pie",
    "-mcmodel=kernel",
    "-pg",
    "-mfentry",
    "-ffunction-sections",
    "-fdata-sections",
    "-c",
]
SOURCE = """\
extern void report(const char *module, int v);
static const char _acpi_module_name[] = "{module}";
static const unsigned char filetype_table[] = {{ 0, 8, 4, 2, 6, 1, 12, 10 }};
static unsigned long bss_counter;
static const char *bss_last;

__attribute__((noipa)) int use_{n}(int v)
{{
\tbss_counter++;
\treport(_acpi_module_name, v);
\treport(bss_last, v);
\treturn filetype_table[v & 7] + {n};
}}

__attribute__((noipa)) void set_{n}(const char *s)
{{
\tbss_last = s;
}}
"""


# CONFIG_CALL_PADDING (6.2 on): 16 NOPs start each function's section, its symbol after them.
PADDING = ["-fpatchable-function-entry=16,16"]


def _objects(
    tmp_path: Path, modules: tuple[str, ...], extra: tuple[str, ...] = ()
) -> list[ObjectFile]:
    objs = []
    for n, module in enumerate(modules):
        src = tmp_path / f"f{n}.c"
        src.write_text(SOURCE.format(n=n, module=module))
        argv = ["gcc", *CFLAGS, *extra, str(src), "-o", str(src.with_suffix(".o"))]
        subprocess.run(argv, check=True)
        objs.append(ObjectFile.load(src.with_suffix(".o")))
    return objs


def _image(tmp_path: Path, objs: list[ObjectFile]) -> tuple[ImageIndex, Kallsyms]:
    """The objects linked at a kernel address, and their symbols as kallsyms lists them."""
    image = tmp_path / "vmlinux"
    subprocess.run(
        ["ld", "-o", str(image), "-e", "0", "-Ttext=0xffffffff81000000",
         "--unresolved-symbols=ignore-all", *[str(o.path) for o in objs]],
        check=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["nm", "-n", str(image)], capture_output=True, text=True, check=True
    ).stdout
    ksyms = parse_kallsyms("\n".join(line for line in listing.splitlines() if " U " not in line))
    return ImageIndex.load(image, ksyms), ksyms


@pytest.mark.parametrize("extra", [(), tuple(PADDING)], ids=["6.1", "call-padding"])
def test_vmlinux_locals_told_apart_by_their_bytes(tmp_path: Path, extra: tuple[str, ...]) -> None:
    objs = _objects(tmp_path, ("dsutils", "nsxfeval", "exfldio"), extra)
    index, ksyms = _image(tmp_path, objs)
    assert len(ksyms.by_name["_acpi_module_name"]) == 3
    for n, obj in enumerate(objs):
        positions = SameNames(obj, ksyms, image=lambda: index)
        # Each file's name is its own; equal tables are told by its function's reference.
        assert positions.sympos("_acpi_module_name") == n + 1
        assert positions.sympos("filetype_table") == n + 1
        assert positions.sympos("bss_last") == n + 1  # .bss: only the reference tells
        assert positions.sympos(f"use_{n}") == 0  # unique


@pytest.mark.parametrize("extra", [(), tuple(PADDING)], ids=["6.1", "call-padding"])
def test_module_locals_told_apart_by_its_relocations(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    objs = _objects(tmp_path, ("inline", "dir"), extra)
    ko = tmp_path / "m.ko"
    subprocess.run(["ld", "-r", "-o", str(ko), *[str(o.path) for o in objs]], check=True)
    module = ObjectFile.load(ko)
    by_name: dict[str, list[tuple[int, str]]] = {}
    for sym in module.symbols:
        if sym.name and module.symbol_section(sym) is not None:
            by_name.setdefault(sym.name, []).append((sym.index, "t" if sym.type == 2 else "d"))
    ksyms = Kallsyms(by_name)
    for n, obj in enumerate(objs):
        positions = SameNames(obj, ksyms, module=lambda: module)
        assert positions.sympos("filetype_table") == n + 1  # same bytes: the relocations tell
        assert positions.sympos("_acpi_module_name") == n + 1
        assert positions.sympos("bss_last") == n + 1


def test_same_bytes_and_no_reference_is_refused_naming_the_candidates(tmp_path: Path) -> None:
    objs = _objects(tmp_path, ("utils", "utils"))
    index, ksyms = _image(tmp_path, objs)
    # The same module name twice, and the function that uses it is not unique either.
    ksyms.by_name["use_0"] = ksyms.by_name["use_0"] * 2
    positions = SameNames(objs[0], ksyms, image=lambda: index)
    with pytest.raises(BuildError, match=r"2 symbols named _acpi_module_name, and 2 of them \("):
        positions.sympos("_acpi_module_name")
