"""suture.packages.vmlinux: the ELF kernel out of a (fake) bzImage."""

from __future__ import annotations

import gzip
import lzma
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from suture.errors import LabError
from suture.packages import vmlinux

ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)


def test_extract_xz() -> None:
    assert vmlinux.extract(b"junk" + xz(ELF) + b"trailer") == ELF


def test_extract_gzip() -> None:
    assert vmlinux.extract(b"junk\x1f\x8b" + gzip.compress(ELF) + b"trailer\0\0\0") == ELF


def test_extract_zstd() -> None:
    # Debian's 6.12 and 7.x images: the zstd tool reads the frame, the trailer is left.
    frame = subprocess.run(["zstd", "-c"], input=ELF, capture_output=True, check=True).stdout
    assert vmlinux.extract(b"junk" + frame + b"trailer\0\0") == ELF


def test_extract_skips_false_magic_and_non_elf_payloads() -> None:
    image = (
        b"setup code \xfd7zXZ\x00 not really xz "  # magic, but no stream
        + xz(b"a compressed blob that is not a kernel")  # a stream, but not ELF
        + b"padding"
        + xz(ELF)
        + b"trailer"
    )
    assert vmlinux.extract(image) == ELF


@pytest.mark.parametrize(
    "image",
    [
        b"",
        b"just a boot sector and no payload" * 10,
        b"junk" + xz(b"no elf in here") + b"trailer",
        b"junk" + gzip.compress(b"no elf either") + b"trailer",
        b"junk" + lzma.compress(ELF, format=lzma.FORMAT_ALONE),  # another compression
    ],
)
def test_extract_without_payload(image: bytes) -> None:
    with pytest.raises(LabError, match="no xz, gzip or zstd compressed ELF") as e:
        vmlinux.extract(image)
    assert e.value.hint


@pytest.mark.parametrize("compress", [xz, gzip.compress], ids=["xz", "gzip"])
def test_extract_refuses_a_truncated_payload(compress: Callable[[bytes], bytes]) -> None:
    payload = compress(ELF)
    with pytest.raises(LabError):
        vmlinux.extract(b"junk" + payload[: len(payload) // 2])


def test_ensure_extracts_once(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"junk" + xz(ELF) + b"trailer")
    dest = tmp_path / "out" / "vmlinux"
    assert vmlinux.ensure(vmlinuz, dest) == dest
    assert dest.read_bytes() == ELF
    vmlinuz.write_bytes(b"no longer a kernel")
    assert vmlinux.ensure(vmlinuz, dest).read_bytes() == ELF  # not extracted again


def test_ensure_leaves_nothing_on_failure(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"no payload")
    dest = tmp_path / "vmlinux"
    with pytest.raises(LabError):
        vmlinux.ensure(vmlinuz, dest)
    assert not dest.exists()
