"""Other kernel series on real builds: boot, the Debian 13 root, the build root's compiler.

The builds are the newest the archive offers now in each set (resolved at run
time, never pinned): Debian 13's 6.12 and trixie-backports' 7.x. They are read
through Suture's private apt lists; the host's apt configuration is untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from suture.builder import compile as compile_mod
from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.lab import rootfs
from suture.packages import kernels
from tests.builds import LAB, newest
from tests.support.fixes import SHOW, make_fix
from tests.support.guest import require_qemu

pytestmark = pytest.mark.guest
SUTURE = [sys.executable, "-m", "suture.cli.main"]
ENDBR64 = bytes.fromhex("f30f1efa")


@pytest.mark.parametrize("set_name", ["debian13", "trixie-backports"])
def test_fetch_and_boot_the_newest_build(set_name: str) -> None:
    require_qemu()
    release = newest(set_name)
    proc = subprocess.run(
        [*SUTURE, "lab", "run", "--kernel", release, "--",
         "sh", "-c", "uname -r; test -d /sys/kernel/livepatch && echo livepatch"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [release, "livepatch"]
    assert (
        json.loads((kernels.kernels_dir() / release / "kernel.json").read_text())["series"]
        == set_name
    )


def test_the_agent_end_to_end_on_the_debian13_root(tmp_path: Path) -> None:
    # The wheel's agent on Debian 13's userland (Python 3.13) and a 6.12 kernel:
    # enrol, update, level 1 replaced by level 2, boot re-apply, unload
    # (tests/support/agent_e2e.py runs inside, with the root's Python).
    require_qemu()
    release = newest("debian13")
    root = rootfs.ensure("debian13")
    assert (root / rootfs.VENV.lstrip("/") / "bin" / "suture").exists()
    tree = source.prepare(release)
    out = tmp_path / "bundles"
    for level in (1, 2):
        fix = make_fix(
            tree,
            "fs/proc/cmdline.c",
            (SHOW, f'\tseq_printf(m, "L{level}:%s", saved_command_line);\n'),
            out=tmp_path,
        )
        build(BuildRequest(release, fix, out, name=f"suture_cmdline_l{level}", level=level), LAB)
    script = Path(__file__).parent / "support" / "agent_e2e.py"
    result = subprocess.run(
        [*SUTURE, "lab", "run", "--kernel", release, "--root", "debian13", "--timeout", "900",
         "--host-path", str(out), "--env", f"SUTURE_TEST_BUNDLES={out}",
         "--", f"{rootfs.VENV}/bin/python", "-I", str(script)],
        capture_output=True, text=True, check=False, timeout=1200, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    assert result.stdout.startswith("Python 3.13."), result.stdout
    assert f"suture at {rootfs.VENV}/bin/suture" in result.stdout  # the wheel, not the checkout
    assert "agent end to end: all steps passed" in result.stdout


def test_a_6_12_unit_compiles_with_gcc_14_from_the_build_root(tmp_path: Path) -> None:
    release = newest("debian13")
    tree = source.prepare(release)
    assert tree.toolchain is not None and not tree.toolchain.on_host
    assert tree.toolchain.name == "trixie-gcc-14"
    assert "gcc-14" in tree.cc
    meta = json.loads((tree.path.parent / "tree.json").read_text())
    assert meta["toolchain"] == "trixie-gcc-14"
    assert "fs/proc/cmdline.c" in compile_mod.compile_originals(
        tree, ["fs/proc/cmdline.c"], tmp_path
    )
    with (tmp_path / "fs" / "proc" / "cmdline.o").open("rb") as f:
        elf = ELFFile(f)
        comment = elf.get_section_by_name(".comment")
        assert comment is not None
        # The compiler the build's config names, nothing else.
        assert tree.toolchain.version_text.split(" ", 1)[1].encode() in comment.data()
        index = elf.get_section_index(".text.cmdline_proc_show")
        text = elf.get_section(index).data()
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        (sym,) = symtab.get_symbol_by_name("cmdline_proc_show")
        start = sym["st_value"]
        # What 6.1 objects lack (docs/kernel-series-objects.md): 16 bytes of
        # padding before the function, endbr64 (IBT) at its start, and a
        # __patchable_function_entries section tied to its text section.
        assert start == 16 and text[:start] == b"\x90" * start
        assert text[start : start + 4] == ENDBR64
        entries = [s for s in elf.iter_sections() if s.name == "__patchable_function_entries"]
        assert index in {s["sh_link"] for s in entries}
