"""What the target kernel exports, and where its symbols are (kallsyms of a booted build).

Module.symvers (in the build's headers) lists the exported symbols: the
module loader resolves those. /proc/kallsyms of the running target build
lists every symbol with its position among same-named ones, which the
livepatch core needs for names that are not unique. It is read once per
build from a lab guest and cached.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from suture.errors import BuildError
from suture.fsutil import atomic_write, cache_dir
from suture.lab import guest, kernels


def exported(tree: kernels.KernelTree) -> set[str]:
    """Symbols vmlinux exports to modules (``Module.symvers``, module column ``vmlinux``)."""
    path = tree.headers_dir / "Module.symvers"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise BuildError(f"cannot read {path}: {e.strerror}", hint="fetch the kernel again") from e
    return {f[1] for line in lines if len(f := line.split("\t")) >= 3 and f[2] == "vmlinux"}


@dataclass(frozen=True)
class Kallsyms:
    """Symbol names of one build with how often each occurs (vmlinux and its modules)."""

    counts: Counter[str]

    def sympos(self, name: str) -> int:
        """0 when ``name`` is unique (or absent: the core will say so at load).

        Raises:
            BuildError: several symbols have this name; picking one is not supported yet.
        """
        if self.counts.get(name, 0) > 1:
            raise BuildError(
                f"the kernel has {self.counts[name]} symbols named {name}; the patch would "
                "need to say which one, which this Suture does not work out yet",
            )
        return 0


def kallsyms(release: str) -> Kallsyms:
    """The vmlinux symbols of ``release``, read in a lab guest on first use and cached."""
    path = cache_dir() / "kallsyms" / release
    if not path.exists():
        tree = kernels.fetch(release)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = guest.GuestConfig(timeout=300, output_dir=Path(tmp))
            result = guest.run(
                tree,
                ["sh", "-c", 'cat /proc/kallsyms > "$SUTURE_OUT/kallsyms"'],
                cfg,
                cwd=Path("/"),
            )
            if result.returncode != 0:
                raise BuildError(f"reading /proc/kallsyms in the {release} guest failed")
            atomic_write(path, (Path(tmp) / "kallsyms").read_bytes())
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 3:  # vmlinux symbols only: module lines carry "[module]"
            counts[fields[2]] += 1
    return Kallsyms(counts)
