"""What a fix to headers changes, and which units of the build that change reaches.

A header holds no code of its own: a change to a ``static inline`` function
or a macro changes the code of every unit that uses it. Those units are found
in two steps:

1. the include graph (includes.py) gives the units that include a changed
   header at all, directly or through other headers;
2. the fix's changed names narrow them: a unit is reached only if its own
   code, or a header it includes, uses one of those names. Names spread: a
   macro or inline function elsewhere that uses a changed name changes too,
   and so does every name that uses it in turn (found with ``grep -w`` over
   the tree until nothing new turns up).

A change to a struct, union, enum, typedef or global declaration alters data
the running kernel already has (its layout, its values, its type) and is
refused, listing each one; so is a changed name used in such a definition
(an array size, an enum value). New state belongs in shadow variables.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from suture.builder import cscan
from suture.builder.catalog import Catalog
from suture.builder.cscan import Item, Kind
from suture.builder.includes import IncludeGraph
from suture.errors import BuildError

MAX_UNITS = 600  # units one header fix may reach, beyond which it is refused
_MAX_ROUNDS = 12  # rounds of spreading changed names
_SHADOW_HINT = (
    "a live patch cannot change data the running kernel already has: keep the "
    "definitions as they are and attach new state with shadow variables (klp_shadow_*)"
)
_WHAT = {
    Kind.STRUCT: "the layout of struct",
    Kind.UNION: "the layout of union",
    Kind.ENUM: "the values of enum",
    Kind.TYPEDEF: "the type",
    Kind.DECLARATION: "the global declaration of",
    Kind.INVOCATION: "the declaration made by",
}


@dataclass
class HeaderChange:
    """What a fix changes in its headers.

    Attributes:
        names: macros and inline functions whose definition changed (or that
            the fix adds or removes): the code that uses them changes.
        refused: the definitions whose change a live patch cannot take.
        changed: each changed item, for the build's report (``header: kind name``).
        called: the names among ``names`` that are function-like macros: used
            only where a ``(`` follows (a field of the same name is no use).
    """

    names: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    called: set[str] = field(default_factory=set)


def _by_key(items: Iterable[Item]) -> dict[tuple[Kind, str], list[tuple[tuple[str, ...], str]]]:
    out: dict[tuple[Kind, str], list[tuple[tuple[str, ...], str]]] = {}
    for item in items:
        out.setdefault(item.key, []).append((item.context, item.text))
    return out


def compare(path: str, old: str, new: str) -> HeaderChange:
    """Compare two versions of the header ``path`` item by item."""
    old_items, new_items = cscan.scan(old), cscan.scan(new)
    before, after = _by_key(old_items), _by_key(new_items)
    change = HeaderChange()
    function_like = {i.name for i in (*old_items, *new_items) if i.function_like}
    for key in sorted(set(before) | set(after), key=lambda k: (k[0].value, k[1])):
        old_defs, new_defs = before.get(key, []), after.get(key, [])
        if sorted(old_defs) == sorted(new_defs):
            continue
        kind, name = key
        how = "added" if not old_defs else "removed" if not new_defs else "changed"
        change.changed.append(f"{path}: {kind.value} {name or '(unnamed)'} {how}")
        if kind in cscan.CODE_KINDS and name:
            change.names.add(name)
            if name in function_like:
                change.called.add(name)
        elif kind is Kind.DIRECTIVE or (how == "added" and kind is not Kind.TYPEDEF):
            continue  # an include or a new definition: nothing the kernel has changes
        elif kind in _WHAT:
            change.refused.append(f"{_WHAT[kind]} {name or '(unnamed)'} ({path}, {how})")
    return change


def refuse_unit_layouts(texts: dict[str, tuple[str, str]]) -> None:
    """Refuse a fix that changes a struct or union a C file defines for itself.

    Instances of such a type live in the running kernel (allocated by the
    file's code, often from its own slab cache), so a new field is the same
    change as in a header, only private. A new type is fine.

    Args:
        texts: each C file of the fix, before and after it.

    Raises:
        BuildError: such a layout changes (each one listed).
    """
    refused = []
    for path, (old, new) in texts.items():
        before, after = _by_key(cscan.scan(old)), _by_key(cscan.scan(new))
        for kind, name in sorted(set(before) & set(after), key=lambda k: (k[0].value, k[1])):
            layout = kind in (Kind.STRUCT, Kind.UNION) and name
            if layout and sorted(before[kind, name]) != sorted(after[kind, name]):
                refused.append(f"{_WHAT[kind]} {name} ({path}, changed)")
    if refused:
        raise BuildError(
            "the fix changes definitions of data the running kernel already has: "
            + "; ".join(refused),
            hint=_SHADOW_HINT,
        )


@dataclass
class Reach:
    """The units a header change reaches, and why the others were left out."""

    units: list[str]  # sources, in the catalog's order
    names: set[str]  # every changed name, spread
    including: int  # units that include a changed header at all


def _grep_words(root: Path, names: set[str], dirs: list[str]) -> list[str]:
    """Files (.c/.h) under ``dirs`` that use one of ``names`` as a whole word."""
    if not names:
        return []
    proc = subprocess.run(
        ["grep", "-rlwF", "--include=*.[ch]", "-f", "-", *dirs],
        cwd=root, input="\n".join(sorted(names)), capture_output=True, text=True,
        errors="replace", check=False,
    )  # fmt: skip
    return proc.stdout.split()


def reach(
    root: Path,
    catalog: Catalog,
    graph: IncludeGraph,
    headers: dict[str, HeaderChange],
) -> Reach:
    """The units of the build whose code the header changes can alter.

    Raises:
        BuildError: a changed name is used in a definition of data (refused),
            or the change reaches more than :data:`MAX_UNITS` units.
    """
    forced = {f for u in catalog.units.values() for f in u.forced}
    touched = set(headers)
    including = set(catalog.units) if touched & graph.closure(forced) else set()
    including |= graph.reaching(touched) & set(catalog.units)
    names = {n for h in headers.values() for n in h.names}
    called = {n for h in headers.values() for n in h.called}
    dirs = [*sorted({p.split("/", 1)[0] for p in graph.edges} - {"arch"}), "arch/x86"]
    users: set[str] = set()
    refused: list[str] = []
    new = set(names)
    for _ in range(_MAX_ROUNDS):
        if not new:
            break
        spread: set[str] = set()
        for rel in _grep_words(root, new, dirs):
            if rel.endswith(".c"):
                users.add(rel)
            elif graph.reaching([rel]) & including:  # a unit that sees the change includes it
                _spread(
                    rel,
                    root,
                    names=names,
                    called=called,
                    spread=spread,
                    users=users,
                    refused=refused,
                )
        new = spread - names
        names |= new
    if refused:
        raise BuildError(
            "the fix changes names that definitions of data use: " + "; ".join(sorted(refused)),
            hint=_SHADOW_HINT,
        )
    units = sorted(graph.reaching(users) & including)
    if len(units) > MAX_UNITS:
        raise BuildError(
            f"the header change reaches {len(units)} units of this build (at most {MAX_UNITS} "
            f"are compiled for one fix): {', '.join(sorted(names)[:12])} are used that widely",
            hint="port the fix to the callers that need it, or split it",
        )
    return Reach(units, names, len(including))


def _spread(
    rel: str,
    root: Path,
    *,
    names: set[str],
    called: set[str],
    spread: set[str],
    users: set[str],
    refused: list[str],
) -> None:
    """Read one header that uses changed names: what it defines with them."""
    text = (root / rel).read_text(errors="replace")
    for item in cscan.scan(text):
        used = (item.mentions & (names - called)) | (item.calls & called)
        if not used or item.name in names:
            continue
        if item.kind in cscan.CODE_KINDS and item.name:
            spread.add(item.name)
            if item.function_like:
                called.add(item.name)
        elif item.kind in cscan.LAYOUT_KINDS:
            what = f"{_WHAT[item.kind]} {item.name or '(unnamed)'}"
            refused.append(f"{what} ({rel}) uses {', '.join(sorted(used))}")
        else:
            users.add(rel)  # a use outside a definition: every unit including it


def refuse(changes: dict[str, HeaderChange]) -> None:
    """Refuse the header changes a live patch cannot take, listing each one.

    Raises:
        BuildError: one of the headers changes a layout, a value, a type or a declaration.
    """
    refused = [r for c in changes.values() for r in c.refused]
    if refused:
        raise BuildError(
            "the fix changes definitions of data the running kernel already has: "
            + "; ".join(refused),
            hint=_SHADOW_HINT,
        )
