"""Take the uncompressed ``vmlinux`` out of a ``vmlinuz`` (bzImage).

QEMU boots an uncompressed ELF kernel through its PVH entry point
(CONFIG_PVH=y in Debian's config), which skips the firmware and the
decompressor: under software emulation that saves seconds on every boot.
The same bytes are what a patch's expected code is checked against.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import zlib
from pathlib import Path

from suture.errors import LabError
from suture.fsutil import atomic_write
from suture.kernel.identity import parse_build_id
from suture.kernel.modinfo import section_data

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # Debian's 6.12 and 7.x images
_ELF_MAGIC = b"\x7fELF"


def extract(image: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage.

    Raises:
        LabError: no xz, gzip or zstd payload that decompresses to ELF (other
            compressions are not read; the caller can boot the bzImage).
    """
    for magic, unpack in ((_XZ_MAGIC, _unxz), (_GZIP_MAGIC, _gunzip), (_ZSTD_MAGIC, _unzstd)):
        start = image.find(magic)
        while start != -1:
            try:
                out = unpack(image[start:])
            except (lzma.LZMAError, zlib.error, OSError, EOFError):
                out = b""
            if out.startswith(_ELF_MAGIC):
                return out
            start = image.find(magic, start + 1)
    raise LabError(
        "no xz, gzip or zstd compressed ELF kernel in the image",
        hint="this kernel uses another compression; the lab boots the bzImage instead",
    )


def _unxz(data: bytes) -> bytes:
    # A decompressor object stops at the end of the first stream and ignores
    # what follows (the bzImage's trailer); a cut-off stream is no kernel.
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    out = d.decompress(data)
    return out if d.eof else b""


def _gunzip(data: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: gzip header
    out = d.decompress(data)
    return out if d.eof else b""


def _unzstd(data: bytes) -> bytes:
    """Unpack zstd with its tool (Python reads zstd from 3.14 on); what follows the frame is left.

    The tool complains about the bzImage's trailer after the kernel's frame,
    and still writes the frame out: the caller checks for an ELF header.
    """
    if shutil.which("zstd") is None:
        raise OSError("the zstd tool is not installed (apt-get install zstd)")
    proc = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=False)
    return proc.stdout


def ensure(vmlinuz: Path, dest: Path) -> Path:
    """``dest`` holding the vmlinux of ``vmlinuz``, extracted once."""
    if not dest.exists():
        atomic_write(dest, extract(vmlinuz.read_bytes()))
    return dest


def build_id(vmlinuz: Path, dest: Path) -> str:
    """The GNU build id of the kernel in ``vmlinuz`` (its vmlinux extracted to ``dest`` once).

    It is what ``/sys/kernel/notes`` shows when that kernel runs; "" when it has none.
    """
    return parse_build_id(section_data(ensure(vmlinuz, dest).read_bytes(), b".notes") or b"")
