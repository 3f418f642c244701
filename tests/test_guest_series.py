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
from suture.lab import rootfs
from suture.packages import kernels
from tests.builds import newest
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


def test_debian13_root_runs_the_agent_from_the_wheel() -> None:
    require_qemu()
    release = newest("debian13")
    root = rootfs.ensure("debian13")
    script = (
        "python3 --version; command -v suture; suture uname -r; "
        "suture --json status --state-dir /tmp/agent > /tmp/status.json; echo status=$?; "
        "cat /tmp/status.json"
    )
    assert (root / rootfs.VENV.lstrip("/") / "bin" / "suture").exists()
    result = subprocess.run(
        [*SUTURE, "lab", "run", "--kernel", release, "--root", "debian13", "--timeout", "600",
         "--", "sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=900, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Python 3.13."), lines
    assert lines[1] == f"{rootfs.VENV}/bin/suture"  # the wheel, not the host's checkout
    assert lines[2].startswith(release)
    # Exit 1: no patches for this build (README); the document says what runs.
    assert lines[3] in ("status=0", "status=1"), lines
    status = json.loads("\n".join(lines[4:]))
    assert status["kernel"]["release"] == release


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
