"""Helpers for the unit tests: fake /proc and /sys trees, kernel identities, tiny ELF modules."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from suture.kernel.identity import KernelIdentity

RELEASE = "6.1.0-56-amd64"
VERMAGIC = f"{RELEASE} SMP preempt mod_unload modversions "
BUILD_ID = "0123456789abcdef0123456789abcdef01234567"
SIGNATURE_MAGIC = b"~Module signature appended~\n"


def put(root: Path, rel: str, text: str = "") -> Path:
    """Write ``text`` to ``root/rel``, creating folders; returns the path."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note: namesz, descsz, type, then name and desc each padded to 4 bytes."""
    name0 = name + b"\0"
    return (
        struct.pack("<III", len(name0), len(desc), ntype)
        + name0.ljust((len(name0) + 3) & ~3, b"\0")
        + desc.ljust((len(desc) + 3) & ~3, b"\0")
    )


def identity(**changes: object) -> KernelIdentity:
    """A plain livepatch-capable kernel, with ``changes`` applied."""
    fields: dict[str, object] = {
        "release": RELEASE,
        "build_id": BUILD_ID,
        "arch": "x86_64",
        "distro": "Debian GNU/Linux 12 (bookworm)",
        "livepatch": True,
        "lockdown": "none",
        "sig_enforce": False,
        "taint": 0,
    }
    fields.update(changes)
    return KernelIdentity(**fields)  # type: ignore[arg-type]


def fake_kernel(
    root: Path,
    *,
    release: str = RELEASE,
    build_id: str = BUILD_ID,
    livepatch: bool = True,
    lockdown: str = "[none] integrity confidentiality",
    sig_enforce: str = "N",
    taint: str = "0",
) -> Path:
    """A sysroot with the files :func:`suture.kernel.identity.read_identity` reads."""
    put(root, "proc/sys/kernel/osrelease", release + "\n")
    notes = note(b"GNU", 3, bytes.fromhex(build_id)) if build_id else b""
    (root / "sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "sys/kernel/notes").write_bytes(notes)
    if livepatch:
        (root / "sys/kernel/livepatch").mkdir(parents=True, exist_ok=True)
    put(root, "sys/kernel/security/lockdown", lockdown + "\n")
    put(root, "sys/module/module/parameters/sig_enforce", sig_enforce + "\n")
    put(root, "proc/sys/kernel/tainted", taint + "\n")
    put(root, "proc/sys/kernel/random/boot_id", "boot-1\n")
    return root


def compile_object(dest: Path, source: str) -> Path:
    """Compile C ``source`` to the relocatable ELF ``dest`` with gcc (skips without gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = dest.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-c", str(src), "-o", str(dest)], check=True, capture_output=True)
    return dest


def compile_module(dest: Path, entries: list[str]) -> Path:
    """A tiny ELF whose ``.modinfo`` holds ``entries`` (``key=value``), like a kernel module."""
    lines = [
        f'__attribute__((section(".modinfo"), used)) static const char m{i}[] = "{entry}";'
        for i, entry in enumerate(entries)
    ]
    return compile_object(dest, "\n".join([*lines, "int init_module(void) { return 0; }", ""]))


def livepatch_entries(name: str = "foo", vermagic: str = VERMAGIC) -> list[str]:
    """The ``.modinfo`` of a live patch module named ``name``."""
    return [f"vermagic={vermagic}", f"name={name}", "depends=", "livepatch=Y"]


LIVEPATCH = "sys/kernel/livepatch"


class FakeCore:
    """The kernel's module loader and livepatch core, on a fake sysroot, for the real engine.

    ``load`` makes the patch's sysfs folder (an atomic replace removes the
    others), a write of ``enabled`` is answered as the core would (a disable
    ends and frees the patch), ``unload`` removes a module whose patch is
    gone. ``stuck`` keeps a transition from finishing. Use :meth:`install`.

    Attributes:
        root: the sysroot (made with :func:`fake_kernel`).
        stuck: a loaded patch's transition never ends (until cleared).
        modules: the loaded modules.
    """

    def __init__(self, root: Path, bypass: Any = None) -> None:
        self.root = root
        self.stuck = False
        self.modules: set[str] = set()
        self._bypass = bypass or contextlib.nullcontext

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCore:
        """Stand in for finit_module/delete_module and the core's answer to sysfs writes."""
        from suture.kernel import livepatch, module  # noqa: PLC0415 - only when faked

        real_write = livepatch.write
        monkeypatch.setattr(module, "load", self.load)
        monkeypatch.setattr(module, "unload", self.unload)

        def write(path: Path, text: str) -> None:
            real_write(path, text)  # the agent's write: it may fail
            self.written(path, text)

        monkeypatch.setattr(livepatch, "write", write)
        return self

    def load(self, path: Path, params: str = "") -> None:
        from suture.kernel.modinfo import read_modinfo  # noqa: PLC0415

        name = read_modinfo(path).name
        with self._bypass():
            base = self.root / LIVEPATCH
            for other in list(base.iterdir()) if base.is_dir() else []:
                shutil.rmtree(other)  # cumulative: the new patch replaces them
            put(self.root, f"{LIVEPATCH}/{name}/enabled", "1\n")
            put(self.root, f"{LIVEPATCH}/{name}/transition", "1\n" if self.stuck else "0\n")
            put(self.root, f"{LIVEPATCH}/{name}/signal", "")
            put(self.root, f"{LIVEPATCH}/{name}/vmlinux/patched", "1\n")
            (self.root / LIVEPATCH / name / "vmlinux" / "cmdline_proc_show,1").mkdir()
        self.modules.add(name)

    def unload(self, name: str, timeout: float = 5.0) -> None:
        from suture.errors import LoadError  # noqa: PLC0415

        if (self.root / LIVEPATCH / name).exists():
            raise LoadError(f"cannot remove module {name}: busy")
        self.modules.discard(name)

    def written(self, path: Path, text: str) -> None:
        """The core's answer to a write the engine made."""
        if path.name != "enabled" or text != "0":
            return
        with self._bypass():
            if not self.stuck:
                shutil.rmtree(path.parent)  # the disable ends at once and the patch is freed

    def finish(self) -> None:
        """Let stuck transitions end (enabled patches are then fully applied)."""
        self.stuck = False
        with self._bypass():
            for t in (self.root / LIVEPATCH).glob("*/transition"):
                t.write_text("0\n")
            for e in (self.root / LIVEPATCH).glob("*/enabled"):
                if e.read_text().strip() == "0":
                    shutil.rmtree(e.parent)

    def live(self) -> set[str]:
        """Names of the enabled patches."""
        base = self.root / LIVEPATCH
        return {p.name for p in base.glob("*") if (p / "enabled").read_text().strip() == "1"}
