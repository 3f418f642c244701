"""Every C translation unit a kernel build compiles, and how: read from kbuild itself.

A fix to a header reaches every unit that includes it, in vmlinux and in
modules, and only units this configuration builds matter. kbuild knows
which those are: ``make -n -k vmlinux modules`` in the prepared tree prints
the compile command of every object without running it (recursive makes
still run, so every folder's Makefile is read with this .config). From each
command the catalog keeps the source, whether the object goes into a module
and which, and the include path the unit is compiled with.

Computed once per build (about 30 s on 2 cores) and cached beside its tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass

from suture.builder.source import SourceTree
from suture.errors import BuildError
from suture.fsutil import atomic_write, locked

FORMAT_VERSION = 1
CATALOG_FILE = "catalog.json"

# `<cc> ... -c -o <object> <source>.c` in make's echo of a compile rule.
_COMPILE = re.compile(r"(?:^|;)\s*(\S*gcc\S*) (.*? -c -o (\S+\.o) (\S+\.c))(?=\s*(?:;|$))")
_MODNAME = re.compile(r"-DKBUILD_MODNAME='\"(\w+)\"'")


@dataclass(frozen=True)
class CompiledUnit:
    """One C file kbuild compiles for this build.

    Attributes:
        source: its path in the tree, e.g. ``fs/proc/base.c``.
        objname: ``vmlinux``, or the module it is linked into.
        include_dirs: the ``-I`` folders of its command, relative to the tree.
        forced: the headers its command includes first (``-include``).
    """

    source: str
    objname: str
    include_dirs: tuple[str, ...]
    forced: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """The build's C units by source path."""

    units: dict[str, CompiledUnit]

    def get(self, source: str) -> CompiledUnit | None:
        """The unit compiled from ``source``, or None when this build does not compile it."""
        return self.units.get(source)

    def to_json(self) -> bytes:
        """Versioned JSON for the cache."""
        units = {
            s: {
                "objname": u.objname,
                "include_dirs": list(u.include_dirs),
                "forced": list(u.forced),
            }
            for s, u in sorted(self.units.items())
        }
        return json.dumps({"format": FORMAT_VERSION, "units": units}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Catalog | None:
        """Read the cache; None when it is of another format (it is then made again)."""
        data = json.loads(raw)
        if data.get("format") != FORMAT_VERSION:
            return None
        return cls(
            {
                s: CompiledUnit(s, u["objname"], tuple(u["include_dirs"]), tuple(u["forced"]))
                for s, u in data["units"].items()
            }
        )


def parse_dry_run(text: str) -> Catalog:
    """The units named by the compile commands of ``make -n`` output."""
    units: dict[str, CompiledUnit] = {}
    for line in text.splitlines():
        if " -c -o " not in line:
            continue
        for match in _COMPILE.finditer(line):
            source = _relative(match.group(4))
            if source in units:
                continue
            units[source] = _unit(source, match.group(2))
    return Catalog(units)


def _relative(path: str) -> str:
    """A path of the command, relative to the tree (``./include`` -> ``include``)."""
    return os.path.normpath(path)


def _unit(source: str, command: str) -> CompiledUnit:
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = command.split()
    dirs: list[str] = []
    forced: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("-I") and len(arg) > 2:
            dirs.append(_relative(arg[2:]))
        elif arg == "-I" and i + 1 < len(argv):
            dirs.append(_relative(argv[i + 1]))
        elif arg == "-include" and i + 1 < len(argv):
            forced.append(_relative(argv[i + 1]))
    module = "-DMODULE" in argv
    name = _MODNAME.search(command)
    objname = name.group(1) if module and name else "vmlinux"
    return CompiledUnit(source, objname, tuple(dict.fromkeys(dirs)), tuple(forced))


def load(tree: SourceTree) -> Catalog:
    """The build's catalog: from the cache beside its tree, else from ``make -n`` (cached).

    Raises:
        BuildError: kbuild's dry run named no unit at all.
    """
    path = tree.path.parent / CATALOG_FILE
    with locked(tree.path.parent / ".catalog.lock"):
        if path.exists():
            cached = Catalog.from_json(path.read_bytes())
            if cached is not None:
                return cached
        proc = subprocess.run(
            tree.wrap(
                ["make", "-n", "-k", "-C", str(tree.path), f"CC={tree.cc}", "vmlinux", "modules"]
            ),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        catalog = parse_dry_run(proc.stdout)
        if not catalog.units:
            raise BuildError(
                f"kbuild's dry run in {tree.path} lists no C file to compile:\n"
                f"{proc.stderr.strip()[-2000:]}",
                hint="remove the build's source folder from the cache and build again",
            )
        atomic_write(path, catalog.to_json())
        return catalog
