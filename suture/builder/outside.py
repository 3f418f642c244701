"""Callers of a carried function in other files of vmlinux: their source, compiled and checked.

The image scan (image_refs.py) names the functions elsewhere in vmlinux that
call a carried global function, by kallsyms name and address. To patch one,
the builder needs its code as an object: the file that defines it is found
in the source tree (a definition at the start of a line), compiled as it is,
and the compiled function is compared with the image's bytes at that
address, relocated fields and the ftrace/IBT entry left out. Only a function
whose code matches is patched, so a same-named static of another file, or
a file this configuration builds differently, is never taken for it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from suture.builder import callers
from suture.builder.callers import Reference, RefKind
from suture.builder.compile import compile_originals
from suture.builder.elfobj import ObjectFile, RelocType, Section
from suture.builder.image_refs import ImageIndex
from suture.builder.source import SourceTree

# Source folders that never hold x86-64 vmlinux code.
_NOT_VMLINUX = ("Documentation", "tools", "samples", "scripts", "usr", "LICENSES", "debian")
_CANDIDATES = 6  # files defining a name beyond which the caller is left unpatched
_ENTRY = 9  # endbr64 (IBT sealing rewrites it) and the 5-byte fentry call (a nop once linked)


@dataclass
class CallerFile:
    """One other file of vmlinux whose functions call carried code: patched as they are."""

    source: str
    obj: ObjectFile
    callers: dict[str, str] = field(default_factory=dict)  # caller -> carried function it calls


@dataclass
class OutsideResult:
    """The files to patch, and the callers left calling the old code (with why)."""

    files: list[CallerFile] = field(default_factory=list)
    unpatched: list[str] = field(default_factory=list)


def definition_files(tree: Path, names: Iterable[str]) -> dict[str, list[str]]:
    """For each name, the .c files of ``tree`` (x86 and generic code) that define that function.

    One ``grep`` over the tree for all the names; each hit is then read for
    a definition of the names it mentions.
    """
    wanted = sorted(set(names))
    found: dict[str, list[str]] = {name: [] for name in wanted}
    if not wanted:
        return found
    dirs = [
        p.name
        for p in tree.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in (*_NOT_VMLINUX, "arch")
    ]
    dirs.append("arch/x86")
    patterns = [arg for name in wanted for arg in ("-e", name)]
    proc = subprocess.run(
        ["grep", "-rlw", "--include=*.c", *patterns, *dirs],
        cwd=tree, capture_output=True, text=True, check=False,
    )  # fmt: skip
    for rel in sorted(proc.stdout.split()):
        text = (tree / rel).read_text(errors="replace")
        for name in wanted:
            if name in text and _defines(text, name):
                found[name] += [rel, *_including(tree, rel)]
    return found


def _including(tree: Path, rel: str) -> list[str]:
    """Files of the same folder that ``#include`` the .c file ``rel`` (kernel/sched/build_*.c)."""
    path = tree / rel
    pattern = re.compile(rf'^#\s*include\s+"{re.escape(path.name)}"', re.MULTILINE)
    return [
        str(other.relative_to(tree))
        for other in sorted(path.parent.glob("*.c"))
        if other != path and pattern.search(other.read_text(errors="replace"))
    ]


def _defines(text: str, name: str) -> bool:
    """A definition of ``name`` starts a line: its parameter list is followed by ``{``."""
    start = rf"^(?:[A-Za-z_][^;#\n]*?\b)?{re.escape(name)}\s*\("  # the type may be a line above
    for match in re.finditer(start, text, re.MULTILINE):
        depth = 1
        pos = match.end()
        while pos < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[pos], 0)
            pos += 1
        rest = text[pos : pos + 200].lstrip()
        # Attributes may sit between the parameters and the body.
        rest = re.sub(r"^(__\w+(\([^)]*\))?\s*)+", "", rest)
        if rest.startswith("{"):
            return True
    return False


def matches_image(obj: ObjectFile, sec: Section, image: bytes | None) -> bool:
    """The compiled function is the code the image holds, relocated fields aside."""
    code = sec.data[sec.start :]
    if image is None or len(image) != len(code):
        return False
    mask = bytearray(len(code))
    mask[: min(_ENTRY, len(mask))] = b"\x01" * min(_ENTRY, len(mask))
    for r in sec.relas:
        width = 8 if r.type in (RelocType.R_64, RelocType.PC64) else 4
        at = r.offset - sec.start  # relocations lie in the function, never in its padding
        if at >= 0:
            mask[at : at + width] = b"\x01" * width
    return all(m or a == b for m, a, b in zip(mask, code, image, strict=True))


def call_kinds(obj: ObjectFile, sec: Section, target: str) -> set[RefKind]:
    """How the function in ``sec`` refers to the function ``target`` (by name, or its section)."""
    kinds = set()
    for r in sec.relas:
        sym = obj.symbols[r.sym]
        home = obj.symbol_section(sym)
        if sym.name == target or (home is not None and home.symbol and home.symbol.name == target):
            kinds.add(callers.branch_kind(sec, r))
    return kinds


# Whether a compiled function found in the image can be patched for what the patch
# carries (a function it calls, data it uses): "" when it can, else why not.
Accept = Callable[[ObjectFile, Section, str], str]


def calls_only(obj: ObjectFile, sec: Section, carried: str) -> str:
    """Empty when the function has an ftrace entry and only calls ``carried`` (never jumps)."""
    if not callers.has_fentry(obj, sec):
        return "has no ftrace entry"
    kinds = call_kinds(obj, sec, carried)
    if kinds != {RefKind.CALL}:
        return f"does not only call it ({', '.join(k.value for k in kinds)})"
    return ""


def resolve(
    tree: SourceTree,
    index: ImageIndex,
    wanted: Iterable[tuple[Reference, str]],
    work: Path,
    *,
    fix_files: set[str],
    accept: Accept = calls_only,
) -> OutsideResult:
    """Find, compile and check the source of each outside caller (reference, carried name)."""
    result = OutsideResult()
    by_name: dict[str, list[tuple[Reference, str]]] = {}
    for ref, carried in wanted:
        by_name.setdefault(ref.where, []).append((ref, carried))
    files: dict[str, list[str]] = {}  # source -> caller names it may define
    defined = definition_files(tree.path, by_name)
    for name in by_name:
        found = defined[name]
        where = f"{by_name[name][0][1]} <- {name}"
        if not found or len(found) > _CANDIDATES:
            how = "no" if not found else f"{len(found)}"
            result.unpatched.append(f"{where}: {how} files of the source define {name}")
            continue
        for src in found:
            files.setdefault(src, []).append(name)
    objects = compile_originals(tree, sorted(set(files) - fix_files), work)
    placed: dict[str, CallerFile] = {}
    for name, refs in by_name.items():
        homes = [s for s, names in files.items() if name in names]
        if not homes:
            continue
        note = _place(
            name, refs, homes, index=index, objects=objects, fix_files=fix_files, placed=placed,
            accept=accept,
        )  # fmt: skip
        if note:
            result.unpatched.append(f"{refs[0][1]} <- {name}: {note}")
    result.files = list(placed.values())
    return result


def _place(
    name: str,
    refs: list[tuple[Reference, str]],
    homes: list[str],
    *,
    index: ImageIndex,
    objects: dict[str, ObjectFile],
    fix_files: set[str],
    placed: dict[str, CallerFile],
    accept: Accept,
) -> str:
    """Add caller ``name`` to the file whose code is the image's; else say why not."""
    if set(homes) & fix_files:
        return f"{name} may be in a file the fix changes ({', '.join(sorted(homes))})"
    for ref, carried in refs:
        for src in homes:
            obj = objects.get(src)
            sec = obj.functions().get(name) if obj else None
            if obj is None or sec is None:
                continue
            if not matches_image(obj, sec, index.code(ref.address, sec.code_size)):
                continue
            why = accept(obj, sec, carried)
            if why:
                return f"{name} ({src}) {why}"
            entry = placed.setdefault(src, CallerFile(src, obj))
            entry.callers[name] = carried
            break
        else:
            return f"{name}: no file of the source compiles to the code the kernel runs"
    return ""
