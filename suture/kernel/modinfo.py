"""Read a kernel module's ``.modinfo`` section (what ``modinfo(8)`` prints).

The section is a run of NUL-terminated ``key=value`` strings written by
``MODULE_INFO()`` and modpost: ``vermagic``, ``depends``, ``name``,
``livepatch`` and our own ``suture_build_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from suture.errors import ModuleFormatError


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


def read_modinfo(path: Path) -> ModInfo:
    """Parse ``path``'s ``.modinfo``.

    Raises:
        ModuleFormatError: the file is missing, not ELF, or has no ``.modinfo``.
    """
    try:
        with path.open("rb") as f:
            section = ELFFile(f).get_section_by_name(".modinfo")
            raw: bytes = section.data() if section is not None else b""
    except FileNotFoundError as e:
        raise ModuleFormatError(f"{path}: no such file", hint="check the path") from e
    except (ELFError, OSError) as e:
        raise ModuleFormatError(
            f"{path}: not a kernel module ({e})", hint="pass a .ko file or a Suture bundle"
        ) from e
    if not raw:
        raise ModuleFormatError(
            f"{path}: no .modinfo section, so not a kernel module",
            hint="pass a .ko file built with kbuild",
        )
    fields: dict[str, list[str]] = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    return ModInfo(path=path, fields=fields)
