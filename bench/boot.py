"""Guest boot-to-command time: `suture lab run -- true` against bare QEMU boots of the same kernel.

Prints one JSON document. All variants run in this one process, interleaved,
so that the machine's noise hits them alike. Wall seconds from QEMU's start
to its exit, median and min over --runs.

    .venv/bin/python bench/boot.py [--runs 5] [--kernel RELEASE]

bare-bzimage: QEMU's firmware boots the compressed vmlinuz; the initramfs
    (busybox only) powers off at once. What a plain "qemu -kernel" costs.
bare-pvh: the same with the uncompressed vmlinux (PVH entry), which the lab uses.
suture-lab: the full lab: modules, host root over 9p, overlay, command, exit status.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from suture.lab import guest, initramfs
from suture.packages import kernels, vmlinux

BARE_INIT = b"#!/bin/busybox sh\n/bin/busybox reboot -f\n"


def bare_initrd(dest: Path) -> Path:
    cpio = initramfs.CpioWriter()
    for d in ("bin", "dev"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
    cpio.file("init", BARE_INIT, 0o755)
    path = dest / "bare.cpio"
    path.write_bytes(cpio.finish())
    return path


def bare_boot(kernel: Path, initrd: Path) -> float:
    argv = [
        guest.QEMU, "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "1024",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 rdinit=/init panic=-1 quiet",
    ]  # fmt: skip
    start = time.monotonic()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def lab_boot(tree: kernels.KernelTree) -> float:
    start = time.monotonic()
    result = guest.run(tree, ["true"], stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"the guest command failed with {result.returncode}")
    return time.monotonic() - start


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(samples), 3),
        "min_s": round(min(samples), 3),
        "runs": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernel")
    args = parser.parse_args()
    tree = kernels.fetch(args.kernel)
    pvh = vmlinux.ensure(tree.vmlinuz, tree.vmlinux)
    samples: dict[str, list[float]] = {"bare-bzimage": [], "bare-pvh": [], "suture-lab": []}
    with tempfile.TemporaryDirectory() as tmp:
        initrd = bare_initrd(Path(tmp))
        lab_boot(tree)  # warm the initramfs cache and the host page cache
        for _ in range(args.runs):
            samples["bare-bzimage"].append(bare_boot(tree.vmlinuz, initrd))
            samples["bare-pvh"].append(bare_boot(pvh, initrd))
            samples["suture-lab"].append(lab_boot(tree))
    result = {
        "format": 1,
        "bench": "boot-to-command",
        "kernel": tree.release,
        "accel": "tcg",
        "goal": "suture-lab median <= 5 s",
        "results": {k: summary(v) for k, v in samples.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
