"""The exact distro source of a kernel build, configured and prepared once per build.

Debian ships the source of each point release as ``linux-source-X.Y`` at the
image's package version. With the image's config, ``olddefconfig`` and
``modules_prepare``, compiling one file reproduces the shipped code (DESIGN).

The source package is unpacked once per version and shared read-only
(suture.packages.sources); the tree of a build is a farm of hard links to it plus
what configuring adds (.config, include/generated, scripts' programs).
Layout under ``<cache>/trees/<release>/``: ``tree.json`` (written last: the
tree is complete; it names the shared source) and ``linux/`` (the prepared
tree). Whatever changes a file of the tree replaces it rather than writing
into it (compile.py), so the shared source stays as Debian ships it.

Every kbuild run in the tree goes through the build's :class:`Toolchain`
(suture.packages.toolchain): the host's compiler when it is exactly the one the
config names, else a build root of the build's own distro release, chosen by
the build's series (suture.packages.sets).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from suture import progress
from suture.errors import BuildError, SourceGoneError, ToolMissingError
from suture.fsutil import atomic_write, cache_dir, locked
from suture.packages import cache, kernels, sets, sources
from suture.packages import toolchain as toolchain_mod
from suture.packages.toolchain import Toolchain

FORMAT_VERSION = 1
JOBS = str(os.cpu_count() or 1)

# Tools kbuild needs to prepare a tree (Debian package names in the hint).
_TOOLS = {"make": "make", "flex": "flex", "bison": "bison", "bc": "bc", "pahole": "dwarves"}


@dataclass(frozen=True)
class SourceTree:
    """A prepared source tree of one kernel build."""

    release: str
    version: str
    path: Path
    cc: str  # the compiler command that built this kernel, e.g. gcc-12
    # Where that compiler runs; None: the host (a tree made by hand, in tests).
    toolchain: Toolchain | None = None

    @property
    def config(self) -> Path:
        """The tree's .config (the image's, after olddefconfig)."""
        return self.path / ".config"

    def make_argv(self, *targets: str) -> list[str]:
        """``make`` in this tree with the kernel's own compiler, where that compiler runs."""
        return self.wrap(
            ["make", "-s", f"-j{JOBS}", "-C", str(self.path), f"CC={self.cc}", *targets]
        )

    def wrap(self, argv: list[str], *paths: Path) -> list[str]:
        """``argv`` run with the build's toolchain (the tree and ``paths`` visible in it)."""
        if self.toolchain is None:
            return argv
        return self.toolchain.wrap(argv, cwd=self.path, paths=paths)


config_value = toolchain_mod.config_value
required_compiler = toolchain_mod.required_compiler


def _check_tools(chain: Toolchain) -> None:
    if not chain.on_host:
        return  # the build root has them all (suture.packages.buildroot)
    for tool, package in _TOOLS.items():
        if shutil.which(tool) is None:
            raise ToolMissingError(f"{tool} is not installed", hint=f"apt-get install {package}")


def source_dir(release: str) -> Path:
    """Where the prepared tree of ``release`` lives."""
    return cache_dir() / "trees" / release


def prepare(release: str | None = None) -> SourceTree:
    """Fetch, unpack, configure and prepare the source of ``release`` (cached).

    Raises:
        BuildError: wrong compiler, or configuring failed.
        SourceGoneError: the exact source package of the build is not in the
            archive (checked before anything is downloaded).
        DownloadError: the source package could not be downloaded.
    """
    release = kernels.resolve(release)
    dest = source_dir(release)
    if not (dest / "tree.json").exists():
        _require_source(release)
    image = kernels.fetch(release)
    chain = toolchain_of(image)
    _check_tools(chain)
    tree = SourceTree(image.release, image.version, dest / "linux", chain.cc, chain)
    with locked(dest.parent / ".lock"):
        meta = dest / "tree.json"
        if meta.exists():
            _record_source_use(meta)
            return tree
        package = sets.source_package(image.release, image.version)
        name = sources.spec(package, image.version)
        with cache.pinned(cache.SOURCE, name):
            shared = sources.ensure(package, image.version, image.release)
            try:
                _prepare_locked(image, shared, tree)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)  # never leave half a tree behind
                raise
            record = {
                "format": FORMAT_VERSION,
                "release": image.release,
                "version": image.version,
                "source": name,
                "toolchain": chain.name or "host",
                "compiler": chain.version_text,
            }
            atomic_write(meta, json.dumps(record).encode())
    cache.enforce()
    return tree


def toolchain_of(image: kernels.KernelTree) -> Toolchain:
    """Where the exact compiler of the fetched build ``image`` runs (a build root made once).

    Raises:
        BuildError: nothing here has exactly the compiler its config names.
    """
    return sets.series_for(image.release).toolchain(image.config.read_text())


def _require_source(release: str) -> None:
    """Refuse a build whose exact source left the archive, before downloading anything."""
    image = kernels.cached(release)
    if image is not None and sources.cached(
        sets.source_package(release, image.version), image.version
    ):
        return  # both here already: no need to ask the archive
    (build,) = sets.describe([release])
    if not build.source_available:
        raise SourceGoneError(release, build.source_package, build.image_version)


def _record_source_use(meta: Path) -> None:
    """A build's use is its source's use too (its tree keeps the source needed anyway)."""
    try:
        name = str(json.loads(meta.read_text()).get("source", ""))
    except (OSError, ValueError, AttributeError):
        return
    if name:
        cache.record_use(cache.SOURCE, name)


def _prepare_locked(image: kernels.KernelTree, shared: Path, tree: SourceTree) -> None:
    dest = tree.path.parent
    if dest.exists():
        shutil.rmtree(dest)  # an earlier, interrupted preparation
    dest.mkdir(parents=True)
    # Files written from here on have later times; the coarse file clock may lag a little.
    since = time.time() - 2
    sources.farm(shared, tree.path)
    atomic_write(tree.config, image.config.read_bytes())
    # Debian's signing keys are not in the source; blank them so kbuild does not look.
    _run(
        tree,
        tree.wrap(["./scripts/config", "--set-str", "SYSTEM_TRUSTED_KEYS", "",
         "--set-str", "SYSTEM_REVOCATION_KEYS", "", "--set-str", "MODULE_SIG_KEY", ""]),
        "blanking the signing keys",
    )  # fmt: skip
    _run(tree, tree.make_argv("olddefconfig"), "olddefconfig")
    logging.getLogger("suture.builder").info("preparing the tree (modules_prepare)")
    _run(tree, tree.make_argv("modules_prepare"), "modules_prepare")
    written = sources.touched(tree.path, since)
    if written:
        package = sets.source_package(image.release, image.version)
        sources.discard(package, image.version)
        raise BuildError(
            f"preparing {image.release} wrote into {len(written)} files shared with the source "
            f"{sources.spec(package, image.version)} ({', '.join(written[:5])}); that source "
            "will be unpacked again",
            hint="report this as a bug in Suture; remove the cache's trees made from that "
            "source ('suture lab cache --prune --max 0')",
        )


def _run(tree: SourceTree, argv: list[str], what: str) -> None:
    with progress.heartbeat(what):
        proc = subprocess.run(argv, cwd=tree.path, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed in {tree.path}:\n{(proc.stderr or proc.stdout).strip()[-3000:]}",
            hint="remove the folder and run the build again",
        )
