"""Build the test kernel modules of tests/fixtures/modules for a fetched kernel."""

from __future__ import annotations

from pathlib import Path

from suture.builder.kbuild import build_module
from suture.builder.source import toolchain_of
from suture.packages.kernels import KernelTree

FIXTURES = Path(__file__).parent / "fixtures" / "modules"

# name -> (source, extra cflags)
MODULES = {
    "suture_test_v1": ("cmdline_patch.c", "-DLEVEL=1"),
    "suture_test_v2": ("cmdline_patch.c", "-DLEVEL=2 -DREPLACE=1"),
    "suture_sleeper": ("sleeper.c", ""),
    "suture_sleeper_patch": ("sleeper_patch.c", ""),
}


def build(tree: KernelTree, out: Path, names: tuple[str, ...] = tuple(MODULES)) -> dict[str, Path]:
    """Build ``names`` against ``tree``'s headers, each in its own folder under ``out``.

    kbuild runs with the build's own compiler: the host's, or its build root's.
    """
    chain = toolchain_of(tree)
    built = {}
    for name in names:
        source, cflags = MODULES[name]
        built[name] = build_module(
            tree.headers_dir, FIXTURES / source, name, out / name, cflags, toolchain=chain
        )
    return built
