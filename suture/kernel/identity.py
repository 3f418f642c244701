"""Who is the running kernel: release, build id, and what it allows.

Every reader takes a ``sysroot`` (default ``/``) so that tests can point it
at a fake tree of ``/proc`` and ``/sys`` files.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

NT_GNU_BUILD_ID = 3

# Bit n of /proc/sys/kernel/tainted, as letters (kernel/panic.c: taint_flags).
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"


@dataclass(frozen=True)
class KernelIdentity:
    """Facts about one running kernel that decide whether a patch may load."""

    release: str
    build_id: str  # hex GNU build id of vmlinux, "" when unknown
    arch: str
    distro: str
    livepatch: bool  # /sys/kernel/livepatch exists (CONFIG_LIVEPATCH)
    lockdown: str  # none, integrity, confidentiality, or "" when not visible
    sig_enforce: bool  # module.sig_enforce: unsigned modules are refused
    taint: int

    @property
    def taint_flags(self) -> str:
        """The taint as the kernel prints it in oopses, e.g. ``OEK``."""
        return "".join(c for i, c in enumerate(TAINT_LETTERS) if self.taint >> i & 1)

    @property
    def needs_signed_modules(self) -> bool:
        """True when the kernel refuses modules without a trusted signature."""
        return self.sig_enforce or self.lockdown not in ("", "none")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {**asdict(self), "taint_flags": self.taint_flags}


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def parse_build_id(notes: bytes) -> str:
    """The GNU build id in a run of ELF notes (``/sys/kernel/notes``), or ""."""
    offset = 0
    while offset + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, offset)
        offset += 12
        name = notes[offset : offset + namesz].rstrip(b"\0")
        offset += (namesz + 3) & ~3
        desc = notes[offset : offset + descsz]
        offset += (descsz + 3) & ~3
        if ntype == NT_GNU_BUILD_ID and name == b"GNU":
            return desc.hex()
    return ""


def _selected(choices: str) -> str:
    """The bracketed word of a sysfs choice list: ``none [integrity] x`` -> ``integrity``."""
    for word in choices.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return ""


def _distro(sysroot: Path) -> str:
    for line in _read(sysroot / "etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip('"')
    return ""


def read_identity(sysroot: Path = Path("/")) -> KernelIdentity:
    """Read the running kernel's identity from ``sysroot``'s /proc and /sys."""
    try:
        notes = (sysroot / "sys/kernel/notes").read_bytes()
    except OSError:
        notes = b""
    return KernelIdentity(
        release=_read(sysroot / "proc/sys/kernel/osrelease") or os.uname().release,
        build_id=parse_build_id(notes),
        arch=os.uname().machine,
        distro=_distro(sysroot),
        livepatch=(sysroot / "sys/kernel/livepatch").is_dir(),
        lockdown=_selected(_read(sysroot / "sys/kernel/security/lockdown")),
        sig_enforce=_read(sysroot / "sys/module/module/parameters/sig_enforce") == "Y",
        taint=int(_read(sysroot / "proc/sys/kernel/tainted", "0") or 0),
    )
