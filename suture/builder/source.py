"""The exact distro source of a kernel build, configured and prepared once per build.

Debian ships the source of each point release as ``linux-source-X.Y`` at the
image's package version. With the image's config, ``olddefconfig`` and
``modules_prepare``, compiling one file reproduces the shipped code (DESIGN).

Layout under ``<cache>/source/<release>/``: ``source.json`` (written last:
the tree is complete) and ``linux/`` (the prepared tree).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from suture.errors import BuildError, SourceGoneError, ToolMissingError
from suture.fsutil import atomic_write, cache_dir, locked
from suture.lab import apt, kernels

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

    @property
    def config(self) -> Path:
        """The tree's .config (the image's, after olddefconfig)."""
        return self.path / ".config"

    def make_argv(self, *targets: str) -> list[str]:
        """``make`` in this tree with the kernel's own compiler."""
        return ["make", "-s", f"-j{JOBS}", "-C", str(self.path), f"CC={self.cc}", *targets]


def config_value(config_text: str, key: str) -> str:
    """The value of ``CONFIG_<key>`` in a .config text ("" when unset), quotes removed."""
    match = re.search(rf"^CONFIG_{key}=(.*)$", config_text, re.MULTILINE)
    return match.group(1).strip('"') if match else ""


def required_compiler(config_text: str) -> tuple[str, str]:
    """The compiler command and its ``--version`` line that built the kernel.

    ``CONFIG_CC_VERSION_TEXT`` is the first line of ``$(CC) --version``;
    its first word is the command (``gcc-12``).
    """
    text = config_value(config_text, "CC_VERSION_TEXT")
    if not text:
        raise BuildError("the kernel config names no compiler (CONFIG_CC_VERSION_TEXT)")
    return text.split(" ", 1)[0], text


def check_compiler(config_text: str) -> str:
    """The local compiler command, when it is exactly the one the kernel was built with.

    Raises:
        BuildError: the compiler is missing or another version; names the one needed.
    """
    cc, wanted = required_compiler(config_text)
    found = ""
    if shutil.which(cc):
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
        found = proc.stdout.splitlines()[0] if proc.stdout else ""
    if found != wanted:
        raise BuildError(
            f"this kernel was built with '{wanted}', but the local {cc} is "
            f"{repr(found) if found else 'missing'}",
            hint=f"build on a machine with exactly '{wanted}' (for Debian 12 kernels: "
            "Debian 12's gcc-12), so that unchanged code compiles to the same bytes",
        )
    return cc


def _check_tools() -> None:
    for tool, package in _TOOLS.items():
        if shutil.which(tool) is None:
            raise ToolMissingError(f"{tool} is not installed", hint=f"apt-get install {package}")


def source_dir(release: str) -> Path:
    """Where the prepared tree of ``release`` lives."""
    return cache_dir() / "source" / release


def prepare(release: str | None = None) -> SourceTree:
    """Fetch, unpack, configure and prepare the source of ``release`` (cached).

    Raises:
        BuildError: wrong compiler, or configuring failed.
        SourceGoneError: the build's source package is no longer in the archive.
        DownloadError: the source package could not be downloaded or unpacked.
    """
    image = kernels.fetch(release)
    config_text = image.config.read_text()
    cc = check_compiler(config_text)
    _check_tools()
    dest = source_dir(image.release)
    with locked(dest.parent / ".lock"):
        meta = dest / "source.json"
        if meta.exists():
            return SourceTree(image.release, image.version, dest / "linux", cc)
        try:
            _prepare_locked(image, dest, cc)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)  # never leave half a tree behind
            raise
        atomic_write(
            meta,
            json.dumps(
                {"format": FORMAT_VERSION, "release": image.release, "version": image.version}
            ).encode(),
        )
    return SourceTree(image.release, image.version, dest / "linux", cc)


def _series(version: str) -> str:
    """``6.1.170-3`` -> ``6.1``: the X.Y of linux-source-X.Y."""
    return ".".join(version.split(".")[:2])


def _prepare_locked(image: kernels.KernelTree, dest: Path, cc: str) -> None:
    package = f"linux-source-{_series(image.version)}"
    if image.version not in apt.versions(package):
        raise SourceGoneError(
            f"the archive has no {package}={image.version}, the source of {image.release}",
            release=image.release,
            hint="only builds whose source package is still in the archive can be patched",
        )
    if dest.exists():
        shutil.rmtree(dest)  # an earlier, interrupted preparation
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix=".fetch.", dir=dest) as tmp:
        work = Path(tmp)
        (deb,) = apt.download([f"{package}={image.version}"], work)
        apt.unpack(deb, work / "root")
        (tarball,) = (work / "root" / "usr" / "src").glob("linux-source-*.tar.*")
        print(f"suture: unpacking {tarball.name}", file=sys.stderr)
        with tarfile.open(tarball) as tar:
            tar.extractall(work / "tree", filter="data")
        (top,) = (work / "tree").iterdir()
        top.rename(dest / "linux")
    tree = SourceTree(image.release, image.version, dest / "linux", cc)
    shutil.copyfile(image.config, tree.config)
    # Debian's signing keys are not in the source; blank them so kbuild does not look.
    _run(
        tree,
        ["scripts/config", "--set-str", "SYSTEM_TRUSTED_KEYS", "",
         "--set-str", "SYSTEM_REVOCATION_KEYS", "", "--set-str", "MODULE_SIG_KEY", ""],
        "blanking the signing keys",
    )  # fmt: skip
    _run(tree, tree.make_argv("olddefconfig"), "olddefconfig")
    print("suture: preparing the tree (modules_prepare)", file=sys.stderr)
    _run(tree, tree.make_argv("modules_prepare"), "modules_prepare")


def _run(tree: SourceTree, argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, cwd=tree.path, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed in {tree.path}:\n{(proc.stderr or proc.stdout).strip()[-3000:]}",
            hint="remove the folder and run the build again",
        )
