"""The x86-64 special sections of kernel objects: one table for the differ, extractor and scan.

Special sections hold entries that *describe* code (where it may fault, where
its bug and warning sites are, how to unwind it, which of its instructions
are patched at boot) rather than data that code uses or pointers that code
calls through. Three parts of the builder need to know them:

- the extractor keeps the entries that describe the functions it carries
  (entry size, and the relocation that says which code an entry is for);
- the caller graph of an object ignores their relocations: an exception
  table entry is not a caller;
- the scan of the vmlinux image ignores them too (in vmlinux some tables are
  merged into ``.rodata``/``.data``: their bounds come from kallsyms).

Entry sizes are those of Linux 6.1 and 6.12 on x86-64 (arch/x86/include/asm/*.h:
``struct exception_table_entry``, ``struct bug_entry`` with
``CONFIG_GENERIC_BUG_RELATIVE_POINTERS``, ``struct alt_instr``,
``struct jump_entry``, ``struct static_call_site``, ``struct orc_entry``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EntryTable:
    """A special section made of fixed-size entries, each about one place in the code.

    Attributes:
        name: the section's name in a relocatable object.
        entry_size: bytes per entry.
        anchor: offset in an entry of the relocation naming the code it describes.
        key: offset of the relocation naming a key the module loader resolves
            (static keys and static calls), or None.
        parallel: a section whose entry ``i`` belongs with our entry ``i``, and
            its entry size (ORC: ``.orc_unwind_ip`` addresses, ``.orc_unwind`` data).
        sized_by_code: the entry size differs between kernel versions and is read
            from the object: each entry refers to code once, at its start
            (references into the replacement sections, ``WHOLE``, not counted).
        by_objtool: objtool writes it. Where objtool runs on the linked module
            (IBT or Clang LTO builds), it writes none for any object of the module
            when one already has it: the patch objects then carry none, and
            objtool writes it for the whole module.
    """

    name: str
    entry_size: int
    anchor: int = 0
    key: int | None = None
    parallel: tuple[str, int] | None = None
    sized_by_code: bool = False
    by_objtool: bool = False


ENTRY_TABLES: dict[str, EntryTable] = {
    t.name: t
    for t in (
        EntryTable("__bug_table", 12, sized_by_code=True),  # 16 bytes from 7.x on
        EntryTable("__ex_table", 12),
        EntryTable(".orc_unwind_ip", 4, parallel=(".orc_unwind", 6), by_objtool=True),
        EntryTable(".altinstructions", 12, sized_by_code=True),  # 14 bytes after 6.1
        EntryTable(".return_sites", 4, by_objtool=True),
        EntryTable(".retpoline_sites", 4, by_objtool=True),
        EntryTable(".call_sites", 4, by_objtool=True),
        EntryTable(".ibt_endbr_seal", 4, by_objtool=True),
        EntryTable(".smp_locks", 4),
        EntryTable("__mcount_loc", 8),
        EntryTable(".parainstructions", 16),
        EntryTable("__jump_table", 16, key=8),
        EntryTable(".static_call_sites", 8, key=4),
    )
}

# Carried whole when a kept entry points into them: the replacement code of
# alternatives, which has no symbols of its own.
WHOLE = (".altinstr_replacement", ".altinstr_aux")

# Sections whose relocations never make a caller or a pointer anything calls
# through: the entry tables above, what they run in parallel with, and
# metadata (debug info, notes, BTF, the strings of the export table, objtool's
# annotations, the ORC lookup table of vmlinux). Matched as name prefixes.
_DESCRIPTIVE = (
    *ENTRY_TABLES,
    ".orc_unwind",
    ".orc_lookup",
    "__patchable_function_entries",
    ".discard",
    ".debug",
    ".eh_frame",
    ".note",
    ".notes",
    ".BTF",
    ".rela",
    "__ksymtab_strings",
    "__kcrctab",
    ".init.scratch",
    ".vvar",
)

# Export tables: an entry there means modules may call the function (6.1 and
# 6.5+ layouts).
EXPORT_TABLES = ("___ksymtab", "__ksymtab", ".export_symbol")

# Tables that vmlinux's linker script merges into ``.rodata``/``.data``:
# found by the kallsyms symbols that bound them.
VMLINUX_TABLE_BOUNDS = (
    ("__start___jump_table", "__stop___jump_table"),
    ("__start_static_call_sites", "__stop_static_call_sites"),
    ("__start_mcount_loc", "__stop_mcount_loc"),
)


def describes_code(section: str) -> bool:
    """True for a section whose contents describe code or are metadata, never a caller."""
    return section.startswith(_DESCRIPTIVE)


def is_export_table(section: str) -> bool:
    """True for an export table: its entries let modules call or read what they name."""
    return section.startswith(EXPORT_TABLES) and not section.startswith("__ksymtab_strings")
