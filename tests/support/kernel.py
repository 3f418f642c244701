"""Helpers for the unit tests: fake /proc and /sys trees, kernel identities, tiny ELF modules."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

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
