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
from suture.packages.toolchain import Toolchain

BUILD_JOBS = str(os.cpu_count() or 1)


def build_module(
    headers_dir: Path,
    source: Path,
    name: str,
    out_dir: Path,
    cflags: str = "",
    *,
    toolchain: Toolchain | None = None,
) -> Path:
    """Compile ``source`` as module ``name`` in ``out_dir``; returns the ``.ko``.

    kbuild runs with ``toolchain`` (the build's compiler where it runs), or
    with the host's tools when None.

    Raises:
        ToolMissingError: make or gcc is missing.
        KbuildError: compiling or linking failed (the compiler's output is in the message).
    """
    for tool in ("make", "gcc") if toolchain is None or toolchain.on_host else ():
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
    argv = ["make", "-s", f"-j{BUILD_JOBS}", "-C", str(headers_dir), f"M={out_dir}", "modules"]
    if toolchain is not None:
        # The build's own compiler, not whatever `gcc` is where it runs.
        argv = toolchain.wrap([*argv, f"CC={toolchain.cc}"], cwd=out_dir, paths=(headers_dir,))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    ko = out_dir / f"{name}.ko"
    if proc.returncode != 0 or not ko.exists():
        raise KbuildError(
            f"building module {name} failed:\n{proc.stderr.strip()[-3000:]}",
            hint="fix the source; the compiler's messages are above",
        )
    return ko
