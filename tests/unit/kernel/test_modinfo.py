"""suture.kernel.modinfo: ``.modinfo`` of a real (tiny, gcc-built) ELF object."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.errors import ModuleFormatError
from suture.kernel.modinfo import ModInfo, read_modinfo
from tests.support.kernel import RELEASE, VERMAGIC, compile_module, compile_object


@pytest.fixture(scope="module")
def foo_ko(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entries = [
        f"vermagic={VERMAGIC}",
        "name=foo",
        "depends=a,b",
        "livepatch=Y",
        "alias=foo-one",
        "alias=foo-two",
        "description=has = signs = inside",
    ]
    return compile_module(tmp_path_factory.mktemp("modinfo") / "foo-mod.o", entries)


def test_read_modinfo_fields(foo_ko: Path) -> None:
    info = read_modinfo(foo_ko)
    assert info.path == foo_ko
    assert info.fields["vermagic"] == [VERMAGIC]
    assert info.fields["alias"] == ["foo-one", "foo-two"]  # repeated keys keep every value
    assert info.get("description") == "has = signs = inside"
    assert info.get("missing") == ""
    assert info.get("missing", "x") == "x"


def test_read_modinfo_properties(foo_ko: Path) -> None:
    info = read_modinfo(foo_ko)
    assert info.name == "foo"
    assert info.vermagic == VERMAGIC
    assert info.release == RELEASE
    assert info.depends == ["a", "b"]
    assert info.is_livepatch


def test_modinfo_defaults_without_fields(tmp_path: Path) -> None:
    info = ModInfo(path=tmp_path / "my-module.ko.xz", fields={"depends": [""]})
    assert info.name == "my_module"  # from the file name, as the kernel names it
    assert info.release == ""
    assert info.depends == []
    assert not info.is_livepatch
    assert not ModInfo(path=tmp_path / "x.ko", fields={"livepatch": ["N"]}).is_livepatch


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModuleFormatError, match="no such file") as e:
        read_modinfo(tmp_path / "absent.ko")
    assert e.value.exit_code == 30
    assert e.value.hint


def test_not_elf(tmp_path: Path) -> None:
    path = tmp_path / "text.ko"
    path.write_text("this is not a kernel module\n" * 4)
    with pytest.raises(ModuleFormatError, match="not a kernel module"):
        read_modinfo(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.ko"
    path.write_bytes(b"")
    with pytest.raises(ModuleFormatError):
        read_modinfo(path)


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModuleFormatError):
        read_modinfo(tmp_path)


def test_elf_without_modinfo(tmp_path: Path) -> None:
    path = compile_object(tmp_path / "plain.o", "int answer(void) { return 42; }\n")
    with pytest.raises(ModuleFormatError, match=r"no \.modinfo section"):
        read_modinfo(path)


def test_truncated_elf(foo_ko: Path, tmp_path: Path) -> None:
    data = foo_ko.read_bytes()
    path = tmp_path / "cut.ko"
    for size in (4, 6, 16, 63, 64, 200, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(ModuleFormatError):
            read_modinfo(path)


def test_elf32_is_not_read_as_a_module(tmp_path: Path) -> None:
    path = tmp_path / "elf32.ko"
    path.write_bytes(b"\x7fELF\x01\x01\x01" + b"\0" * 200)
    with pytest.raises(ModuleFormatError):
        read_modinfo(path)
