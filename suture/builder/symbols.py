"""What the target kernel exports, and where its symbols are.

Module.symvers (in the build's headers) lists the exported symbols: the
module loader resolves those. /proc/kallsyms of the running target build
lists every symbol with its position among same-named ones, which the
livepatch core needs for names that are not unique; the lab reads it in a
guest (suture/lab/kallsyms.py) and the builder parses it here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from suture.errors import BuildError
from suture.kernel.modinfo import module_bytes
from suture.packages import kernels


def export_owners(tree: kernels.KernelTree) -> dict[str, str]:
    """Every exported symbol of the build -> ``vmlinux`` or the module that exports it.

    Read from ``Module.symvers``, whose third column is ``vmlinux`` or the
    module's path in the tree (``drivers/md/md-mod``); the kernel names that
    module ``md_mod``.
    """
    path = tree.headers_dir / "Module.symvers"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise BuildError(f"cannot read {path}: {e.strerror}", hint="fetch the kernel again") from e
    return {
        f[1]: f[2].rsplit("/", 1)[-1].replace("-", "_")
        for line in lines
        if len(f := line.split("\t")) >= 3
    }


@dataclass(frozen=True)
class Kallsyms:
    """vmlinux symbols of one build in kallsyms order (by address): name -> [(address, type)]."""

    by_name: dict[str, list[tuple[int, str]]]

    def count(self, name: str) -> int:
        """How many vmlinux symbols have this name."""
        return len(self.by_name.get(name, []))

    def sympos(self, name: str, neighbours: Sequence[str] = ()) -> int:
        """The livepatch ``sympos`` of ``name``: 0 when unique, else its 1-based position.

        A local name several files use is told apart by the symbols of the
        patched file around it: the candidate nearest to a uniquely named
        symbol of that file, of the same kind (code or data), is ours.

        Raises:
            BuildError: the name is ambiguous and no neighbour tells which one it is.
        """
        candidates = self.by_name.get(name, [])
        if len(candidates) <= 1:
            return 0
        kind = _kind(candidates[0][1])
        anchors = [
            entries[0][0]
            for n in neighbours
            if len(entries := self.by_name.get(n, [])) == 1 and _kind(entries[0][1]) == kind
        ]
        if not anchors:
            raise BuildError(
                f"the kernel has {len(candidates)} symbols named {name} and nothing in the "
                "patched file tells which one is meant",
            )
        distance = [min(abs(addr - a) for a in anchors) for addr, _ in candidates]
        best = distance.index(min(distance))
        if distance.count(distance[best]) > 1 or distance[best] > _MAX_NEIGHBOUR_GAP:
            raise BuildError(f"cannot tell which of the {len(candidates)} symbols {name} is meant")
        return best + 1


_MAX_NEIGHBOUR_GAP = 1 << 20  # one object's code or data is far smaller


def _kind(kallsyms_type: str) -> str:
    return "text" if kallsyms_type in "tTwW" else "data"


def _module_files(tree: kernels.KernelTree, module: str) -> list[Path]:
    return [
        p
        for p in tree.modules_dir.joinpath("kernel").rglob("*.ko*")
        if p.name.split(".ko")[0].replace("-", "_") == module
    ]


def has_module(tree: kernels.KernelTree, module: str) -> bool:
    """The image ships ``module`` (its configuration builds it)."""
    return bool(_module_files(tree, module))


def module_file(tree: kernels.KernelTree, module: str) -> Path:
    """The distro's ``module``.ko.

    Raises:
        BuildError: the image ships no such module.
    """
    candidates = _module_files(tree, module)
    if not candidates:
        raise BuildError(f"the image of {tree.release} has no module {module}")
    return candidates[0]


def module_symbols(tree: kernels.KernelTree, module: str) -> Kallsyms:
    """The symbols of the distro's ``module``.ko, in its symtab's order (module kallsyms order).

    Raises:
        BuildError: the image ships no such module.
    """
    by_name: dict[str, list[tuple[int, str]]] = {}
    path = module_file(tree, module)
    try:
        symtab = ELFFile(io.BytesIO(module_bytes(path))).get_section_by_name(".symtab")
    except (OSError, ValueError, ELFError) as e:
        raise BuildError(f"cannot read the symbols of {path}: {e}") from e
    if isinstance(symtab, SymbolTableSection):
        for i, sym in enumerate(symtab.iter_symbols()):
            kind = "t" if sym["st_info"]["type"] == "STT_FUNC" else "d"
            if sym.name and sym["st_shndx"] != "SHN_UNDEF":
                by_name.setdefault(sym.name, []).append((i, kind))
    return Kallsyms(by_name)


def parse_kallsyms(text: str) -> Kallsyms:
    """The vmlinux symbols in the text of ``/proc/kallsyms`` (module lines are left out)."""
    by_name: dict[str, list[tuple[int, str]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3:  # vmlinux symbols only: module lines carry "[module]"
            by_name.setdefault(fields[2], []).append((int(fields[0], 16), fields[1]))
    return Kallsyms(by_name)
