"""Read a build's ``/proc/kallsyms`` in a lab guest: where its symbols are, cached per build.

The builder needs every vmlinux symbol with its address (for the position
among same-named symbols that the livepatch core wants, and to name what the
image scan finds). The image package's System.map is a stub, so the lab boots
the build once, without KASLR, reads ``/proc/kallsyms`` and caches it under
``<cache>/kallsyms/<release>``. This implements the builder's
``SymbolPositions`` interface (suture/builder/target.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from suture.errors import LabError
from suture.fsutil import atomic_write, cache_dir
from suture.lab import guest
from suture.packages.kernels import KernelTree


def cache_path(release: str) -> Path:
    """Where the kallsyms text of ``release`` is cached."""
    return cache_dir() / "kallsyms" / release


class GuestKallsyms:
    """Symbol positions read from a guest booted on the build itself."""

    def kallsyms_text(self, image: KernelTree) -> str:
        """The ``/proc/kallsyms`` text of ``image``'s build, from the cache or a guest boot.

        Raises:
            LabError: the guest could not be booted or did not give the file.
        """
        path = cache_path(image.release)
        if not path.exists():
            with tempfile.TemporaryDirectory() as tmp:
                cfg = guest.GuestConfig(timeout=300, output_dir=Path(tmp))
                result = guest.run(
                    image,
                    ["sh", "-c", 'cat /proc/kallsyms > "$SUTURE_OUT/kallsyms"'],
                    cfg,
                    cwd=Path("/"),
                )
                out = Path(tmp) / "kallsyms"
                if result.returncode != 0 or not out.exists():
                    raise LabError(
                        f"reading /proc/kallsyms in the {image.release} guest failed",
                        hint="check that the build boots: suture lab run --kernel "
                        f"{image.release} -- true",
                    )
                atomic_write(path, out.read_bytes())
        return path.read_text()
