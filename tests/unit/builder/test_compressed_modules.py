"""A distro's modules as they ship (Debian 13: ``.ko.xz``) read by the builder like plain ones."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from suture.builder import symbols
from suture.builder.elfobj import ObjectFile
from suture.errors import BuildError
from tests.support.kernel import compile_object

SOURCE = "int answer(void) { return 42; }\nint counter = 1;\n"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_object(tmp_path_factory.mktemp("ko") / "foo_bar.ko", SOURCE)


def _tree(tmp_path: Path, name: str, data: bytes) -> Any:
    where = tmp_path / "modules" / "kernel" / "drivers"
    where.mkdir(parents=True)
    (where / name).write_bytes(data)
    return SimpleNamespace(modules_dir=tmp_path / "modules", release="test")


@pytest.mark.parametrize(("suffix", "pack"), [(".xz", lzma.compress), (".gz", gzip.compress)])
def test_object_file_reads_a_compressed_module(
    plain: Path, tmp_path: Path, suffix: str, pack: Any
) -> None:
    packed = tmp_path / f"foo_bar.ko{suffix}"
    packed.write_bytes(pack(plain.read_bytes()))
    want, got = ObjectFile.load(plain), ObjectFile.load(packed)
    assert [(s.name, s.data) for s in got.sections] == [(s.name, s.data) for s in want.sections]
    assert {s.name for s in got.symbols} >= {"answer", "counter"}


def test_module_symbols_of_an_xz_module(plain: Path, tmp_path: Path) -> None:
    tree = _tree(tmp_path, "foo-bar.ko.xz", lzma.compress(plain.read_bytes()))
    table = symbols.module_symbols(tree, "foo_bar")
    assert table == symbols.module_symbols(_tree(tmp_path / "plain", "foo-bar.ko",
                                                 plain.read_bytes()), "foo_bar")  # fmt: skip
    assert "answer" in table.by_name


def test_damaged_compression_is_a_build_error(tmp_path: Path) -> None:
    bad = tmp_path / "foo_bar.ko.xz"
    bad.write_bytes(b"\xfd7zXZ\x00 not really xz")
    with pytest.raises(BuildError, match="cannot read object"):
        ObjectFile.load(bad)
    with pytest.raises(BuildError, match="cannot read the symbols of"):
        symbols.module_symbols(_tree(tmp_path, "foo_bar.ko.xz", bad.read_bytes()), "foo_bar")
