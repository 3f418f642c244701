"""What ``/proc`` says about processes: mappings, threads, tracer, seccomp, Yama.

Libraries are identified by the GNU build id of the file a process maps,
read through ``/proc/PID/map_files/<range>``: that link opens the mapped
file itself, so a process in another mount namespace (a container) is found
by its library's build id even when its path means nothing here.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from suture.kernel.identity import parse_build_id

PROC = Path("/proc")
YAMA = Path("/proc/sys/kernel/yama/ptrace_scope")
_PT_NOTE = 4
_PT_LOAD = 1


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str  # e.g. "r-xp"
    offset: int
    inode: int
    path: str  # "" for anonymous memory

    @property
    def executable(self) -> bool:
        """Mapped with PROT_EXEC."""
        return self.perms[2] == "x"

    @property
    def range_name(self) -> str:
        """The entry's name under ``/proc/PID/map_files``."""
        return f"{self.start:x}-{self.end:x}"


def maps(pid: int) -> list[Mapping]:
    """The process's mappings, in address order (empty when it is gone)."""
    try:
        text = (PROC / str(pid) / "maps").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        lo, hi = parts[0].split("-")
        out.append(
            Mapping(
                int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), int(parts[4]),
                parts[5].strip() if len(parts) > 5 else "",
            )
        )  # fmt: skip
    return out


def threads(pid: int) -> list[int]:
    """The thread ids of ``pid`` (empty when it is gone)."""
    try:
        return sorted(int(t.name) for t in (PROC / str(pid) / "task").iterdir())
    except OSError:
        return []


def status_field(pid: int, name: str) -> str:
    """One field of ``/proc/PID/status`` ("" when absent or the process is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    except OSError:
        return ""
    return ""


def yama_scope() -> int | None:
    """``kernel.yama.ptrace_scope`` (None: no Yama in this kernel)."""
    try:
        return int(YAMA.read_text())
    except (OSError, ValueError):
        return None


def pids() -> list[int]:
    """Every process id visible here (this PID namespace and those below it)."""
    return sorted(int(d.name) for d in PROC.iterdir() if d.name.isdigit())


def file_build_id(path: Path) -> str:
    """The GNU build id of an ELF file (hex; "" when it has none or cannot be read)."""
    try:
        with path.open("rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return ""
            (phoff,) = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                ptype, _flags, offset, _v, _p, filesz = struct.unpack_from(
                    "<IIQQQQ", table, i * phentsize
                )
                if ptype == _PT_NOTE:
                    f.seek(offset)
                    found = parse_build_id(f.read(filesz))
                    if found:
                        return found
    except OSError:
        return ""
    return ""


@dataclass(frozen=True)
class MappedLibrary:
    """A library file one process maps: where it starts and what build it is."""

    pid: int
    base: int  # the address of file offset 0 (ELF shared objects start at vaddr 0)
    path: str  # as the process names it (its own mount namespace)
    build_id: str
    mapping: Mapping

    @property
    def link(self) -> Path:
        """The file itself, opened through the process (works across mount namespaces)."""
        return PROC / str(self.pid) / "map_files" / self.mapping.range_name


def libraries(
    pid: int,
    cache: dict[tuple[int, str], str] | None = None,
    mappings: list[Mapping] | None = None,
) -> Iterator[MappedLibrary]:
    """The files ``pid`` maps at offset 0, with their build ids.

    ``cache`` maps (inode, path) to a build id already read: 1,000 processes
    map the same libc, and its notes are read once. ``mappings``: the
    process's maps when the caller has just read them.
    """
    seen: set[str] = set()
    for m in maps(pid) if mappings is None else mappings:
        if m.offset != 0 or not m.path.startswith("/") or m.path in seen:
            continue
        seen.add(m.path)
        key = (m.inode, m.path)
        link = PROC / str(pid) / "map_files" / m.range_name
        build_id = cache.get(key) if cache is not None else None
        if build_id is None:
            build_id = file_build_id(link)
            if cache is not None and build_id:
                cache[key] = build_id
        if build_id:
            yield MappedLibrary(pid, m.start, m.path, build_id, m)


def find(
    pid: int,
    build_id: str,
    cache: dict[tuple[int, str], str] | None = None,
    mappings: list[Mapping] | None = None,
) -> MappedLibrary | None:
    """The library with ``build_id`` that ``pid`` maps, or None."""
    found = libraries(pid, cache, mappings)
    return next((lib for lib in found if lib.build_id == build_id), None)


def mapping_at(mappings: list[Mapping], address: int) -> Mapping | None:
    """The mapping that holds ``address`` (``mappings`` in address order, as maps lists them)."""
    i = bisect.bisect_right(mappings, address, key=lambda m: m.start) - 1
    return mappings[i] if i >= 0 and address < mappings[i].end else None


def executable_segment(path: Path) -> tuple[int, bytes]:
    """The virtual address and file bytes of an ELF file's first executable PT_LOAD."""
    with path.open("rb") as f:
        head = f.read(64)
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            ptype, flags, offset, vaddr, _p, filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize
            )
            if ptype == _PT_LOAD and flags & 1:
                f.seek(offset)
                return vaddr, f.read(filesz)
    return 0, b""
