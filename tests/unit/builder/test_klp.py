"""The ELF writer and the klp conversion, checked with readelf (binutils)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder import elfwrite as ew
from suture.builder import klp

pytestmark = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils")

R_X86_64_PC32 = 2


def _object() -> bytes:
    """A tiny object: .text calling an undefined `hidden` and an undefined `exported`."""
    text = ew.OutSection(
        ".text.f",
        ew.SHT.PROGBITS,
        ew.SHF.ALLOC | ew.SHF.EXECINSTR,
        b"\xe8\0\0\0\0\xe8\0\0\0\0\xc3",
        16,
    )
    syms = [
        ew.OutSymbol("", 3, 1),  # section symbol of .text.f
        ew.OutSymbol("f", (1 << 4) | 2, 1, 0, 11),
        ew.OutSymbol("hidden", 1 << 4, ew.SHN_UNDEF),
        ew.OutSymbol("exported", 1 << 4, ew.SHN_UNDEF),
    ]
    strtab = ew.StringTable()
    symdata = ew.pack_symbols(syms, strtab)
    relas = [ew.OutRela(1, R_X86_64_PC32, 3, -4), ew.OutRela(6, R_X86_64_PC32, 4, -4)]
    return ew.write(
        [
            text,
            ew.OutSection(".symtab", ew.SHT.SYMTAB, 0, symdata, 8, 24, link=3, info=2),
            ew.OutSection(".strtab", ew.SHT.STRTAB, 0, bytes(strtab.data)),
            ew.OutSection(
                ".rela.text.f",
                ew.SHT.RELA,
                ew.SHF.INFO_LINK,
                ew.pack_relas(relas),
                8,
                24,
                link=2,
                info=1,
            ),
        ]
    )


def _readelf(tmp_path: Path, data: bytes, *flags: str) -> str:
    path = tmp_path / "x.o"
    path.write_bytes(data)
    return subprocess.run(
        ["readelf", "-W", *flags, str(path)], capture_output=True, text=True, check=True
    ).stdout


def test_writer_output_reads_back(tmp_path: Path) -> None:
    out = _readelf(tmp_path, _object(), "-s", "-r")
    assert "hidden - 4" in out and "exported - 4" in out
    assert " f\n" in out


def test_convert_moves_relocations(tmp_path: Path) -> None:
    converted = klp.convert(_object(), {"hidden": klp.KlpSymbol("vmlinux", "hidden", 2)})
    out = _readelf(tmp_path, converted, "-S", "-s", "-r")
    assert ".klp.rela.vmlinux..text.f" in out
    assert ".klp.sym.vmlinux.hidden,2" in out
    assert "OS [0xff20]" in out  # SHN_LIVEPATCH
    # The normal relocation section keeps only the exported reference.
    normal = out.split("Relocation section '.rela.text.f'")[1].split("Relocation section")[0]
    assert "exported" in normal and "hidden" not in normal


def test_convert_refuses_unknown_symbol() -> None:
    with pytest.raises(Exception, match="lacks the undefined symbols"):
        klp.convert(_object(), {"nothere": klp.KlpSymbol("vmlinux", "nothere")})


def test_convert_splits_relocations_by_object(tmp_path: Path) -> None:
    # Two patched objects in one module: each klp.rela section names one object,
    # and the module's symbol names (tags) map to the kernel's names.
    converted = klp.convert(
        _object(),
        {
            "hidden": klp.KlpSymbol("vmlinux", "show", 1),
            "exported": klp.KlpSymbol("mrp", "mrp_rcv", 0),
        },
    )
    out = _readelf(tmp_path, converted, "-r")
    sections = {
        part.split("'")[0]: part for part in out.split("Relocation section '")[1:]
    }  # name -> its listing
    assert ".klp.sym.vmlinux.show,1" in sections[".klp.rela.vmlinux..text.f"]
    assert "mrp" not in sections[".klp.rela.vmlinux..text.f"]
    assert ".klp.sym.mrp.mrp_rcv,0" in sections[".klp.rela.mrp..text.f"]
    assert "vmlinux" not in sections[".klp.rela.mrp..text.f"]
    assert "R_X86" not in sections.get(".rela.text.f", "")


def test_another_modules_export_is_applied_with_the_patched_module(tmp_path: Path) -> None:
    # raid456's patch calls md_check_recovery, which md_mod exports: the core
    # looks it up in md_mod, but only once raid456 (which needs md_mod) loads.
    converted = klp.convert(
        _object(),
        {
            "hidden": klp.KlpSymbol("raid456", "raid5d", 0),
            "exported": klp.KlpSymbol("md_mod", "md_check_recovery", 0, applied_with="raid456"),
        },
    )
    out = _readelf(tmp_path, converted, "-r")
    sections = {part.split("'")[0]: part for part in out.split("Relocation section '")[1:]}
    assert set(sections) == {".klp.rela.raid456..text.f"}
    listing = sections[".klp.rela.raid456..text.f"]
    assert ".klp.sym.raid456.raid5d,0" in listing
    assert ".klp.sym.md_mod.md_check_recovery,0" in listing
