"""Read a kernel module's ``.modinfo`` section (what ``modinfo(8)`` prints).

The section is a run of NUL-terminated ``key=value`` strings written by
``MODULE_INFO()`` and modpost: ``vermagic``, ``depends``, ``name``,
``livepatch`` and our own ``suture_build_id``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from suture.errors import ModuleFormatError

# This module is on the agent's path, which runs on every host: it reads the
# one section it needs with struct instead of importing pyelftools (whose
# import alone took 1.5 s of a 4 s `suture apply` in the TCG guest). The
# builder, which needs a full ELF model, uses pyelftools.
_ELF64_LE = b"\x7fELF\x02\x01"
_EHDR = struct.Struct("<16xHHIQQQIHHHHHH")  # e_type .. e_shstrndx
_SHDR = struct.Struct("<IIQQQQIIQQ")  # sh_name sh_type sh_flags sh_addr sh_offset sh_size ...


@dataclass(frozen=True)
class ModInfo:
    """The ``.modinfo`` of one module file; keys may repeat (``alias``)."""

    path: Path
    fields: dict[str, list[str]]

    def get(self, key: str, default: str = "") -> str:
        """The first value of ``key``, or ``default``."""
        values = self.fields.get(key)
        return values[0] if values else default

    @property
    def name(self) -> str:
        """The module name the kernel will use (modpost writes ``name=``)."""
        return self.get("name") or self.path.name.split(".")[0].replace("-", "_")

    @property
    def vermagic(self) -> str:
        """The kernel version magic, e.g. ``6.1.0-56-amd64 SMP preempt mod_unload modversions``."""
        return self.get("vermagic")

    @property
    def release(self) -> str:
        """The kernel release the module was built for: the first word of vermagic."""
        return self.vermagic.split(" ", 1)[0]

    @property
    def depends(self) -> list[str]:
        """Modules that must be loaded first."""
        return [d for d in self.get("depends").split(",") if d]

    @property
    def is_livepatch(self) -> bool:
        """True for a module marked ``MODULE_INFO(livepatch, "Y")``."""
        return self.get("livepatch") == "Y"


def section_data(data: bytes, wanted: bytes) -> bytes | None:
    """The contents of section ``wanted`` of an ELF64 little-endian file, or None."""
    if not data.startswith(_ELF64_LE):
        raise ValueError("not a 64-bit little-endian ELF file")
    fields = _EHDR.unpack_from(data)
    shoff, shentsize, shnum, shstrndx = fields[5], fields[10], fields[11], fields[12]
    headers = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx]
    names = data[strtab[4] : strtab[4] + strtab[5]]
    for sh in headers:
        if names[sh[0] : names.index(b"\0", sh[0])] == wanted:
            return data[sh[4] : sh[4] + sh[5]]
    return None


def module_bytes(path: Path) -> bytes:
    """The ELF bytes of a module file: ``.ko``, or ``.ko.xz``/``.ko.gz`` as distros ship them.

    Debian 13's modules are xz-compressed (CONFIG_MODULE_COMPRESS_XZ).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is compressed in a way this reader does not know, or damaged.
    """
    data = path.read_bytes()
    if path.suffix == ".zst":
        raise ValueError("zstd-compressed modules are not supported; decompress it first")
    if path.suffix not in (".xz", ".gz"):
        return data
    # Imported here: plain .ko files (every module Suture builds) need neither.
    import gzip  # noqa: PLC0415
    import lzma  # noqa: PLC0415

    try:
        return lzma.decompress(data) if path.suffix == ".xz" else gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise ValueError(f"damaged {path.suffix} compression: {e}") from e


def read_modinfo(path: Path) -> ModInfo:
    """Parse ``path``'s ``.modinfo`` (the module may be xz- or gzip-compressed).

    Raises:
        ModuleFormatError: the file is missing, not ELF, or has no ``.modinfo``.
    """
    try:
        raw = section_data(module_bytes(path), b".modinfo") or b""
    except FileNotFoundError as e:
        raise ModuleFormatError(f"{path}: no such file", hint="check the path") from e
    except (OSError, ValueError, struct.error, IndexError) as e:
        raise ModuleFormatError(
            f"{path}: not a kernel module ({e})", hint="pass a .ko file or a Suture bundle"
        ) from e
    if not raw:
        raise ModuleFormatError(
            f"{path}: no .modinfo section, so not a kernel module",
            hint="pass a .ko file built with kbuild",
        )
    return ModInfo(path=path, fields=parse_modinfo(raw))


def parse_modinfo(raw: bytes) -> dict[str, list[str]]:
    """``key=value`` entries of a ``.modinfo`` section; a key may repeat (``alias``)."""
    fields: dict[str, list[str]] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    return fields
