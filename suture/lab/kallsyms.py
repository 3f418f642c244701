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

from elftools.elf.elffile import ELFFile

from suture.errors import LabError
from suture.fsutil import atomic_write, cache_dir
from suture.lab import guest
from suture.packages import vmlinux
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
        if path.exists():
            text = path.read_text()
            if at_link_address(text, image):
                return text
            path.unlink()  # read from a boot that KASLR moved: its addresses are not the image's
        with tempfile.TemporaryDirectory() as tmp:
            # The builder looks symbols up in the image by these addresses. The
            # lab's PVH boot is not randomised, but its bzImage fallback is.
            cfg = guest.GuestConfig(timeout=300, output_dir=Path(tmp), extra_cmdline="nokaslr")
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
            text = out.read_text()
            if not at_link_address(text, image):
                raise LabError(
                    f"the {image.release} guest's /proc/kallsyms is not at the image's "
                    "addresses, though it booted with nokaslr",
                    hint="look at the build's kernel command line handling: "
                    f"suture lab run --kernel {image.release} -- cat /proc/cmdline",
                )
            atomic_write(path, text.encode())
        return text


def text_address(kallsyms: str) -> int | None:
    """Where ``_text`` (the start of the kernel's code) is in a kallsyms text, or None."""
    for line in kallsyms.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == "_text":
            return int(fields[0], 16)
    return None


def at_link_address(kallsyms: str, image: KernelTree) -> bool:
    """Whether the kallsyms text has the image's own addresses (read from a boot without KASLR)."""
    with vmlinux.ensure(image.vmlinuz, image.vmlinux).open("rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
    return text is not None and text_address(kallsyms) == text["sh_addr"]
