"""Build an out-of-tree kernel module with the kernel's own kbuild.

``make -C <headers> M=<dir> modules`` against the ``linux-headers`` tree of
the target build: the module gets that build's vermagic and symbol CRCs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from suture.errors import KbuildError, ToolMissingError

BUILD_JOBS = str(os.cpu_count() or 1)


def build_module(
    headers_dir: Path,
    source: Path,
    name: str,
    out_dir: Path,
    cflags: str = "",
) -> Path:
    """Compile ``source`` as module ``name`` in ``out_dir``; returns the ``.ko``.

    Raises:
        ToolMissingError: make or gcc is missing.
        KbuildError: compiling or linking failed (the compiler's output is in the message).
    """
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise ToolMissingError(f"{tool} is not installed", hint=f"apt-get install {tool}")
    if not (headers_dir / "Makefile").exists():
        raise KbuildError(
            f"{headers_dir} is not a kernel headers tree",
            hint="fetch the kernel first: 'suture lab fetch --kernel RELEASE'",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out_dir / f"{name}.c")
    kbuild = f"obj-m := {name}.o\n"
    if cflags:
        kbuild += f"ccflags-y := {cflags}\n"
    (out_dir / "Kbuild").write_text(kbuild)
    proc = subprocess.run(
        ["make", "-s", f"-j{BUILD_JOBS}", "-C", str(headers_dir), f"M={out_dir}", "modules"],
        capture_output=True,
        text=True,
        check=False,
    )
    ko = out_dir / f"{name}.ko"
    if proc.returncode != 0 or not ko.exists():
        raise KbuildError(
            f"building module {name} failed:\n{proc.stderr.strip()[-3000:]}",
            hint="fix the source; the compiler's messages are above",
        )
    return ko
