"""Who includes what in a prepared kernel tree: the include graph, computed once per build.

A header change reaches the units that include the header, directly or
through other headers (or ``.c`` files included by other ``.c`` files, as
kernel/sched/build_*.c do). The graph is read from the ``#include`` lines of
the tree's C files (one ``grep``, then each line resolved the way the
compiler would: the including file's folder for ``"..."``, then the unit's
``-I`` folders from the build's catalog). It over-approximates on purpose:
an include inside an ``#if`` that this configuration leaves out still
counts, so a unit is never missed, only compiled for nothing.

Cached beside the build's tree as JSON (file -> the files it includes).
"""

from __future__ import annotations

import json
import os
import posixpath  # paths as strings: hundreds of thousands of them, relative to the tree
import re
import subprocess
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from suture.builder.catalog import Catalog
from suture.builder.source import SourceTree
from suture.fsutil import atomic_write, locked

FORMAT_VERSION = 1
GRAPH_FILE = "includes.json"

# Top folders that hold no kernel code for x86-64 builds (arch/ is read for x86 only).
_SKIPPED_TOP = {"Documentation", "tools", "samples", "scripts", "arch", "LICENSES", "debian", "usr"}
_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


@dataclass
class IncludeGraph:
    """File -> the files it includes (paths relative to the tree), and its inverse."""

    edges: dict[str, list[str]]
    _included_by: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def included_by(self) -> dict[str, list[str]]:
        """File -> the files that include it (built on first use)."""
        if not self._included_by:
            for src, targets in self.edges.items():
                for dst in targets:
                    self._included_by.setdefault(dst, []).append(src)
        return self._included_by

    def reaching(self, files: Iterable[str]) -> set[str]:
        """Every file that includes one of ``files``, directly or not (``files`` too)."""
        inverse = self.included_by()
        seen = set(files)
        todo = deque(seen)
        while todo:
            for parent in inverse.get(todo.popleft(), ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen

    def closure(self, files: Iterable[str]) -> set[str]:
        """Every file that ``files`` include, directly or not (``files`` too)."""
        seen = set(files)
        todo = deque(seen)
        while todo:
            for child in self.edges.get(todo.popleft(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen


def _code_dirs(root: Path) -> list[str]:
    dirs = [
        p.name
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIPPED_TOP
    ]
    return [*dirs, "arch/x86"]


def _existing(root: Path, dirs: list[str]) -> set[str]:
    """Every .c and .h file under ``dirs``."""
    found: set[str] = set()
    for top in dirs:
        for folder, _, names in os.walk(root / top):
            rel = posixpath.relpath(folder, root)
            found.update(f"{rel}/{n}" for n in names if n.endswith((".c", ".h")))
    return found


def _search_dirs(catalog: Catalog) -> tuple[list[str], dict[str, list[str]]]:
    """The include path every unit has, and the extra ``-I`` folders of units by folder."""
    common: list[str] = []
    extra: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for unit in catalog.units.values():
        for d in unit.include_dirs:
            counts[d] = counts.get(d, 0) + 1
    # kbuild's own -I list is on (nearly) every command; host programs compiled
    # along the way have their own.
    most = len(catalog.units) * 9 // 10
    common = [d for d, n in counts.items() if n >= most]
    for unit in catalog.units.values():
        folder = posixpath.dirname(unit.source)
        for d in unit.include_dirs:
            if d not in common and d not in extra.setdefault(folder, []):
                extra[folder].append(d)
    return common, extra


def compute(root: Path, catalog: Catalog) -> IncludeGraph:
    """Read the include graph of the tree at ``root``."""
    dirs = _code_dirs(root)
    files = _existing(root, dirs)
    proc = subprocess.run(
        ["grep", "-rEH", "--include=*.[ch]", r'^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]',
         *dirs],
        cwd=root, capture_output=True, text=True, errors="replace", check=False,
    )  # fmt: skip
    common, extra = _search_dirs(catalog)
    edges: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        path, _, directive = line.partition(":")
        match = _INCLUDE.match(directive)
        if match is None:
            continue
        quoted, spec = match.group(1) == '"', match.group(2).strip()
        folder = posixpath.dirname(path)
        candidates = [posixpath.join(folder, spec)] if quoted else []
        candidates += [posixpath.join(d, spec) for d in (*common, *extra.get(folder, ()))]
        for candidate in candidates:
            resolved = posixpath.normpath(candidate)
            if resolved in files:
                targets = edges.setdefault(path, [])
                if resolved not in targets:
                    targets.append(resolved)
                break
    return IncludeGraph(edges)


def load(tree: SourceTree, catalog: Catalog) -> IncludeGraph:
    """The build's include graph, from the cache beside its tree or computed (then cached)."""
    path = tree.path.parent / GRAPH_FILE
    with locked(tree.path.parent / ".includes.lock"):
        if path.exists():
            data = json.loads(path.read_bytes())
            if data.get("format") == FORMAT_VERSION:
                return IncludeGraph({k: list(v) for k, v in data["edges"].items()})
        graph = compute(tree.path, catalog)
        atomic_write(path, json.dumps({"format": FORMAT_VERSION, "edges": graph.edges}).encode())
        return graph
