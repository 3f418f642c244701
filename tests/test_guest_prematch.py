"""Pre-match in a guest of the build: bundles built here, some with one expected byte altered.

Genuine bundles of several kinds of function (a small vmlinux function, a
syscall's stubs, functions with alternatives and static branches, module
functions with tracepoints) must pass their own check against the code the
running kernel really has. Copies of two of them (vmlinux's
cmdline_proc_show, mrp's mrp_rcv) get one checked byte of their expected
code flipped: the first must be refused at load, the second as mrp loads.
tests/kernel/test_prematch.py runs inside the guest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from suture import bundle
from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.packages import kernels
from tests.builds import LAB
from tests.support.fixes import SHOW, SYSCALL_EDITS, make_fix
from tests.support.guest import require_qemu, run_guest_tests

pytestmark = pytest.mark.guest

# name -> (file, edits, the module it is in or "" for vmlinux)
FIXES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "cmdline": ("fs/proc/cmdline.c", [(SHOW, '\tseq_puts(m, "pm:");\n' + SHOW)], ""),
    "syscall": ("kernel/sys.c", SYSCALL_EDITS, ""),
    "task_mmu": (
        "fs/proc/task_mmu.c",
        [
            (
                "\treturn vma->vm_start <= vma->vm_mm->start_stack &&\n"
                "\t\tvma->vm_end >= vma->vm_mm->start_stack;\n",
                "\treturn 0;\n",
            )
        ],
        "",
    ),
    "mrp": (
        "net/802/mrp.c",
        [
            (
                "\tif (!mrp_cb(skb)->vah)\n\t\treturn -1;\n\t*offset += sizeof(_vah);",
                "\tif (!mrp_cb(skb)->vah || skb->len < *offset + sizeof(_vah))\n\t\treturn -1;\n"
                "\t*offset += sizeof(_vah);",
            )
        ],
        "mrp",
    ),
    "ext4": (
        "fs/ext4/super.c",
        [
            (
                "\ttrace_ext4_sync_fs(sb, wait);\n",
                '\ttrace_ext4_sync_fs(sb, wait);\n\tpr_info("suture-pm: sync_fs\\n");\n',
            )
        ],
        "ext4",
    ),
}
ALTERED = ("cmdline", "mrp")


def alter(path: Path) -> Path:
    """``suture_pm_bad_<key>.bundle``: the same patch, its first checked expected byte flipped."""
    manifest, module = bundle.unpack(path.read_bytes(), str(path))
    elf = ELFFile(io.BytesIO(module))
    symtab = elf.get_section_by_name(".symtab")
    symbols = {s.name: s for s in symtab.iter_symbols()}  # type: ignore[union-attr]

    def offset(name: str) -> int:
        sym = symbols[name]
        return int(elf.get_section(sym["st_shndx"])["sh_offset"] + sym["st_value"])

    # The first object with a checked function (a module's patch also has an object
    # for vmlinux, first, for the run-time part's hand-over: suture_code1_0 then).
    first = min(n for n in symbols if n.startswith("suture_code") and n.endswith("_0"))
    code, mask = offset(first), offset(first.replace("code", "mask"))
    checked = next(i for i in range(symbols[first]["st_size"]) if module[mask + i])
    altered = bytearray(module)
    altered[code + checked] ^= 0xFF
    data = bytes(altered)
    new = dataclasses.replace(
        manifest, module_sha256=hashlib.sha256(data).hexdigest(), module_size=len(data)
    )
    out = path.with_name(path.name.replace("suture_pm_", "suture_pm_bad_"))
    bundle.write(out, new, data)
    return out


def test_prematch_in_guest(tmp_path: Path, kernel_release: str) -> None:
    require_qemu()
    release = kernel_release
    tree = source.prepare(release)
    out = tmp_path / "bundles"
    genuine: dict[str, str] = {}
    for key, (path, edits, module) in FIXES.items():
        fix = make_fix(tree, path, *edits, out=tmp_path)
        name = f"suture_pm_{key}"
        build(BuildRequest(release, fix, out, name=name), LAB)
        genuine[name] = module
        manifest = bundle.read_manifest(out / f"{name}.bundle")
        assert all(f.old_sha256 for f in manifest.all_functions), manifest
    for key in ALTERED:
        alter(out / f"suture_pm_{key}.bundle")
    env = {"SUTURE_TEST_BUNDLES": str(out), "SUTURE_TEST_GENUINE": json.dumps(genuine)}
    run_guest_tests(kernels.fetch(release), "tests/kernel/test_prematch.py", env)
