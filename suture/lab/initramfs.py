"""The lab's initramfs: static busybox, the guest init, and the few modules it needs.

Debian builds virtio, 9p and overlayfs as modules, so the initramfs carries
them (with their dependencies, read from each module's ``.modinfo``) and the
init loads them in order before it mounts the host's root.
"""

from __future__ import annotations

import hashlib
import io
import stat
from importlib import resources
from pathlib import Path

from suture.errors import LabError, ToolMissingError
from suture.fsutil import atomic_write
from suture.kernel.modinfo import module_bytes, read_modinfo
from suture.packages.kernels import KernelTree

# What the guest init mounts: virtio PCI transport, 9p over virtio, overlayfs.
NEEDED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def _busybox() -> Path:
    for path in BUSYBOX_PATHS:
        if path.exists():
            return path
    raise ToolMissingError(
        "busybox is not installed", hint="apt-get install busybox-static (the static build)"
    )


def _builtin(tree: KernelTree) -> set[str]:
    """The modules the image has built in (``modules.builtin``): nothing to load.

    Debian 13 builds virtio_pci in; Debian 12 builds it as a module.
    """
    try:
        lines = (tree.modules_dir / "modules.builtin").read_text().split()
    except FileNotFoundError:
        return set()
    return {Path(line).name.split(".ko")[0].replace("-", "_") for line in lines}


def module_load_order(tree: KernelTree, wanted: tuple[str, ...] = NEEDED_MODULES) -> list[Path]:
    """The module files to insmod, dependencies first; built-in ones are left out.

    Raises:
        LabError: a module or one of its dependencies is not in the image.
    """
    index = {
        p.name.split(".ko")[0].replace("-", "_"): p
        for p in tree.modules_dir.joinpath("kernel").rglob("*.ko*")
    }
    order: list[Path] = []
    seen: set[str] = _builtin(tree)

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path = index.get(name)
        if path is None:
            raise LabError(
                f"module {name} is not in {tree.modules_dir}",
                hint="fetch the kernel again with 'suture lab fetch'",
            )
        for dep in read_modinfo(path).depends:
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


class CpioWriter:
    """A writer for the ``newc`` cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + name.encode() + b"\0")
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str) -> None:
        """Add a folder (mode 0755)."""
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with ``data``."""
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        """Add a character device node (e.g. ``dev/console``, 5:1)."""
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        """Close the archive with its trailer and return its bytes."""
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def build(tree: KernelTree, dest_dir: Path) -> Path:
    """Write (or reuse) the initramfs for ``tree`` in ``dest_dir``; returns its path.

    The file name carries a hash of its inputs, so a changed init script or
    busybox gives a new file and a cached one is never stale.
    """
    busybox = _busybox().read_bytes()
    init = resources.files("suture.lab").joinpath("guest_init.sh").read_bytes()
    modules = module_load_order(tree)
    digest = hashlib.sha256(busybox + init)
    for mod in modules:
        digest.update(str(mod.relative_to(tree.root)).encode())
    path = dest_dir / f"initramfs-{tree.release}-{digest.hexdigest()[:16]}.cpio"
    if path.exists():
        return path
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "modules", "run", "tmp"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)  # the kernel opens it for init's stdio
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", init, 0o755)
    names = []
    for mod in modules:
        # Decompressed here: busybox's insmod takes plain ELF only.
        name = mod.name.split(".ko")[0] + ".ko"
        try:
            cpio.file(f"modules/{name}", module_bytes(mod))
        except ValueError as e:
            raise LabError(f"{mod}: {e}", hint="fetch the kernel again") from e
        names.append(name)
    cpio.file("modules/order", "".join(f"{n}\n" for n in names).encode())
    atomic_write(path, cpio.finish())
    return path
