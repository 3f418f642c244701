"""The kernel build a patch is made for: one object holding everything the builder reads of it.

A build is its image (vmlinuz, modules, headers), its prepared source tree,
its kallsyms (where each symbol is), its exports and its image index (who
refers to what). Each is read once, on first use, and kept for the whole
build, however many files, callers and objects the fix involves.

Symbol positions come through :class:`SymbolPositions`, which the lab
implements by booting the build (suture/lab/kallsyms.py): the builder never
runs a guest itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from suture.builder import catalog as catalog_mod
from suture.builder import includes, source, symbols
from suture.builder.elfobj import ObjectFile
from suture.builder.image_refs import ImageIndex, KernelStrings
from suture.kernel.identity import parse_build_id
from suture.kernel.modinfo import section_data
from suture.packages import kernels, vmlinux


class SymbolPositions(Protocol):
    """Where a build's vmlinux symbols are: the text of its ``/proc/kallsyms``."""

    def kallsyms_text(self, image: kernels.KernelTree) -> str:
        """``/proc/kallsyms`` of that build, booted without KASLR."""
        ...


@dataclass(eq=False)
class Target:
    """One kernel build: image, prepared tree and symbols, each read once."""

    image: kernels.KernelTree
    tree: source.SourceTree
    positions: SymbolPositions
    _modules: dict[str, symbols.Kallsyms] = field(default_factory=dict, repr=False)
    _module_files: dict[str, ObjectFile] = field(default_factory=dict, repr=False)

    @property
    def release(self) -> str:
        """The build's release, e.g. ``6.1.0-57-amd64``."""
        return self.image.release

    @functools.cached_property
    def kallsyms(self) -> symbols.Kallsyms:
        """The vmlinux symbols, in kallsyms order."""
        return symbols.parse_kallsyms(self.positions.kallsyms_text(self.image))

    @functools.cached_property
    def objtool_at_link(self) -> bool:
        """Whether objtool runs on each linked module, not on its objects (delay-objtool).

        So it is on IBT builds (6.12, 7.x) and Clang LTO ones; on 6.1 each object
        has its own tables, and ``ld -r`` joins them.
        """
        config = self.image.config.read_text()
        return any(f"\n{c}=y" in config for c in ("CONFIG_X86_KERNEL_IBT", "CONFIG_LTO_CLANG"))

    @functools.cached_property
    def export_owners(self) -> dict[str, str]:
        """Every exported symbol -> ``vmlinux`` or the module exporting it."""
        return symbols.export_owners(self.image)

    @functools.cached_property
    def exported(self) -> set[str]:
        """What vmlinux exports: the module loader resolves those."""
        return {name for name, owner in self.export_owners.items() if owner == "vmlinux"}

    @functools.cached_property
    def vmlinux(self) -> Path:
        """The uncompressed image (extracted from vmlinuz once)."""
        return vmlinux.ensure(self.image.vmlinuz, self.image.vmlinux)

    @functools.cached_property
    def image_index(self) -> ImageIndex:
        """The image's loaded sections, indexed by kallsyms: who refers to what."""
        return ImageIndex.load(self.vmlinux, self.kallsyms)

    @functools.cached_property
    def kernel_strings(self) -> KernelStrings:
        """The image's read-only strings, for the patch to use instead of copies."""
        return KernelStrings(self.image_index, self.kallsyms)

    @functools.cached_property
    def build_id(self) -> str:
        """The GNU build id of vmlinux (what ``/sys/kernel/notes`` says on a host)."""
        return parse_build_id(section_data(self.vmlinux.read_bytes(), b".notes") or b"")

    @functools.cached_property
    def catalog(self) -> catalog_mod.Catalog:
        """Every C unit the build compiles, and how (kbuild's dry run, cached per build)."""
        return catalog_mod.load(self.tree)

    @functools.cached_property
    def include_graph(self) -> includes.IncludeGraph:
        """Who includes what in the build's tree (cached per build)."""
        return includes.load(self.tree, self.catalog)

    def symbols_of(self, objname: str) -> symbols.Kallsyms:
        """The symbols of ``vmlinux`` or of one of the build's modules (read once each)."""
        if objname == "vmlinux":
            return self.kallsyms
        if objname not in self._modules:
            self._modules[objname] = symbols.module_symbols(self.image, objname)
        return self._modules[objname]

    def module_file(self, objname: str) -> ObjectFile:
        """The build's own ``.ko`` of module ``objname``, as an object (read once each)."""
        if objname not in self._module_files:
            self._module_files[objname] = ObjectFile.load(symbols.module_file(self.image, objname))
        return self._module_files[objname]

    def ships_module(self, name: str) -> bool:
        """The image ships module ``name`` (its configuration builds it)."""
        return symbols.has_module(self.image, name)


def open_target(release: str | None, positions: SymbolPositions) -> Target:
    """Fetch the build ``release`` (default: the distro's current one) and prepare its source.

    Raises:
        LabError: the build's packages cannot be fetched.
        BuildError: its source cannot be prepared (wrong compiler, kbuild failed).
    """
    # The source first: a build whose exact source left the archive is refused
    # before its image is downloaded (its headers may have left too).
    tree = source.prepare(kernels.resolve(release))
    return Target(kernels.fetch(tree.release), tree, positions)
