"""Reading objects: a distro's compressed modules (Debian 13 ships .ko.xz)."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.elfobj import ObjectFile
from suture.errors import BuildError

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    src = tmp_path / "mod.c"
    src.write_text("int mod_value = 3;\nint mod_read(void) { return mod_value; }\n")
    obj = tmp_path / "mod.ko"
    subprocess.run(["gcc", "-c", "-O2", str(src), "-o", str(obj)], check=True)
    return obj


@pytest.mark.parametrize(("suffix", "pack"), [(".xz", lzma.compress), (".gz", gzip.compress)])
def test_a_compressed_module_reads_as_the_plain_one(plain: Path, suffix: str, pack: object) -> None:
    packed = plain.with_name(plain.name + suffix)
    packed.write_bytes(pack(plain.read_bytes()))  # type: ignore[operator]
    names = [s.name for s in ObjectFile.load(packed).symbols]
    assert names == [s.name for s in ObjectFile.load(plain).symbols]
    assert "mod_read" in names


def test_a_damaged_compressed_module_is_a_build_error(plain: Path) -> None:
    broken = plain.with_name(plain.name + ".xz")
    broken.write_bytes(b"\xfd7zXZ\x00 not really")
    with pytest.raises(BuildError, match="cannot read object"):
        ObjectFile.load(broken)
