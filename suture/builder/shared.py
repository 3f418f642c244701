"""New code one file of a fix adds and another file of the same fix uses.

Every file of a fix becomes a patch object of its own, and all of them are
linked into the one livepatch module (ADR 8). A new global function or
object of one file is therefore in the module, and another file's use of it
can be linked there by name, as kpatch does: the defining object gives it a
module-wide name (``__suture_new_<tag><name>``), and the using object's
reference is an undefined symbol of that name, which kbuild's link resolves.
New *static* functions and data stay private to their file, as in C.

Code patched into a module is linked with the livepatch module, but its
relocations against that module are only applied when that module loads.
So new code of a module's file may only be used from the same module's
files; new code of vmlinux's files may be used from anywhere (vmlinux is
patched as soon as the patch loads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from suture.builder.elfobj import SymBind
from suture.builder.extract import new_symbol_name
from suture.builder.units import Unit
from suture.errors import BuildError


@dataclass
class Sharing:
    """What each unit's patch object links to in the others, and what it must define for them."""

    # Per unit: a name it uses -> the module-wide name of another unit's new code.
    redirects: list[dict[str, str]] = field(default_factory=list)
    # Per unit: its new global data other units use (defined under a module-wide name).
    exports: list[set[str]] = field(default_factory=list)


def _new_globals(unit: Unit) -> set[str]:
    """New functions and data of a unit that other files can name: its new non-static ones."""
    new = {n.name for n in unit.diff.new} | set(unit.diff.new_data)
    obj = unit.patched
    return {
        s.name
        for s in obj.symbols
        if s.name in new and obj.symbol_section(s) is not None and s.bind != SymBind.LOCAL
    }


def _undefined(unit: Unit) -> set[str]:
    """Names a unit's patched object uses and does not define."""
    obj = unit.patched
    return {
        s.name
        for s in obj.symbols
        if s.name and obj.symbol_section(s) is None and s.bind != SymBind.LOCAL
    }


def plan(units: Sequence[Unit], tags: Sequence[str]) -> Sharing:
    """Link each use of a new global of another unit of the fix to that unit's definition.

    Raises:
        BuildError: two files add the same global, or a file uses new code of a
            module's file from vmlinux or from another module.
    """
    owners: dict[str, int] = {}
    for i, unit in enumerate(units):
        for name in sorted(_new_globals(unit)):
            if name in owners:
                other = units[owners[name]].pair.source
                raise BuildError(
                    f"{name} is added both in {other} and in {unit.pair.source}",
                    hint="define it once",
                )
            owners[name] = i
    sharing = Sharing([{} for _ in units], [set() for _ in units])
    for j, unit in enumerate(units):
        for name in sorted(_undefined(unit) & set(owners)):
            i = owners[name]
            owner = units[i]
            if owner.objname not in ("vmlinux", unit.objname):
                raise BuildError(
                    f"{unit.pair.source} ({unit.objname}) uses {name}, which the fix adds in "
                    f"{owner.pair.source}, part of the module {owner.objname}: the patch "
                    f"resolves that code's references only when {owner.objname} loads",
                    hint=f"define {name} in a file of vmlinux or of {unit.objname}, "
                    "or split the fix",
                )
            sharing.redirects[j][name] = new_symbol_name(name, tags[i])
            if name in owner.diff.new_data:
                sharing.exports[i].add(name)
    return sharing
