"""Changed read-only data carried as a new copy, its users patched; other data refused.

The objects come from small C sources compiled here with gcc, flags as
kbuild's in short (``-O2 -fno-pie -mcmodel=kernel -pg -mfentry
-ffunction-sections -fdata-sections -c``), so references to data are the
kernel's absolute 32-bit ones. The vmlinux image is stood in for by the
original object's data placed at made-up addresses.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from suture.builder import data_copies
from suture.builder.compile import ObjectPair
from suture.builder.data_objects import data_objects, refuse_changed_data
from suture.builder.differ import diff_objects
from suture.builder.elfobj import ObjectFile
from suture.builder.extract import extract
from suture.builder.image_refs import ImageIndex, LoadedSection
from suture.builder.symbols import Kallsyms
from suture.builder.target import Target
from suture.builder.units import Unit
from suture.errors import BuildError

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CFLAGS = ["-O2", "-fno-pie", "-mcmodel=kernel", "-pg", "-mfentry", "-ffunction-sections",
          "-fdata-sections", "-fno-asynchronous-unwind-tables", "-c"]  # fmt: skip
PRELUDE = """\
#define notrace __attribute__((no_instrument_function))
#define noipa __attribute__((noipa))
#define __init __attribute__((section(".init.text")))
extern int sink(const char *);
extern void keep(const void *);
struct ops { int (*fn)(int); int (*other)(int); };
int one(int x) { return x + 1; }
int two(int x) { return x + 2; }
"""
DATA = 0xFFFFFFFF82000000  # where the made-up image puts the original's data


def _compile(tmp_path: Path, name: str, code: str) -> ObjectFile:
    src = tmp_path / name / "x.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(PRELUDE + code)
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(src.with_suffix(".o"))], check=True)
    return ObjectFile.load(src.with_suffix(".o"))


def _unit(tmp_path: Path, before: str, after: str, objname: str = "vmlinux") -> tuple[Unit, Target]:
    orig, patched = _compile(tmp_path, "orig", before), _compile(tmp_path, "patched", after)
    diff = diff_objects(orig, patched)
    unit = Unit(ObjectPair("x.c", orig.path, patched.path), orig, patched, diff, objname)
    return unit, _image_of(orig)


def _image_of(orig: ObjectFile, *, spoil: str = "") -> Target:
    """A target whose vmlinux holds ``orig``'s data objects (``spoil``'s bytes changed)."""
    by_name: dict[str, list[tuple[int, str]]] = {"_sdata": [(DATA - 0x1000, "D")]}
    image = bytearray()
    for name, obj in data_objects(orig).items():
        raw, _ = obj.code()
        by_name[name] = [(DATA + len(image), "d")]
        image += bytes(b ^ 0xFF for b in raw) if name == spoil else raw
        image += bytes(-len(image) % 8)
    for i, name in enumerate(orig.functions()):
        by_name[name] = [(0xFFFFFFFF81000000 + 0x100 * i, "t")]
    ksyms = Kallsyms(by_name)
    index = ImageIndex([LoadedSection(".rodata", DATA, bytes(image), False)], ksyms)
    return cast(Target, SimpleNamespace(kallsyms=ksyms, image_index=index))


STATES = 'static const char *const states[] = { "R (running)", "S (sleeping)" };\n'
SHOW = "int show(int i) { return sink(states[i & 1]); }\n"


def test_a_changed_string_table_is_copied_and_its_readers_patched(tmp_path: Path) -> None:
    unit, target = _unit(tmp_path, STATES + SHOW, STATES.replace("running", "run") + SHOW)
    assert unit.diff.changed == [] and unit.diff.changed_data == ["states"]
    plan = data_copies.plan_copies(unit, target=target)
    assert plan.copied == ["states"]
    assert plan.users == {"show": "states"}
    assert plan.unpatched == []
    assert plan.pins == []  # read through, and holding strings only: the module can go
    patched = data_copies.with_copies(unit, plan)
    assert [(c.name, c.has_fentry) for c in patched.diff.changed] == [("show", True)]
    assert patched.diff.new_data == ["states"] and patched.diff.changed_data == []
    # The patch carries the new table, and show's copy reads it, not the kernel's.
    obj = extract(unit.patched, {"show": "show"}, renames={}, exported={"sink", "__fentry__"},
                  new_data=set(patched.diff.new_data))  # fmt: skip
    assert obj.klp_symbols == {}
    (tmp_path / "patch.o").write_bytes(obj.data)
    readelf = subprocess.run(
        ["readelf", "-W", "-S", "-p", ".rodata.str1.1", str(tmp_path / "patch.o")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ".rodata.states" in readelf and "R (run)" in readelf


def test_a_copy_other_files_use_is_carried_under_a_global_name(tmp_path: Path) -> None:
    table = 'const char *const names[] = { "Unmovable*", "Movable" };\n'
    obj = _compile(tmp_path, "patched", table)
    patch = extract(obj, {}, renames={}, exported=set(), new_data={"names"}, tag="0_",
                    shared_data={"names"})  # fmt: skip
    (tmp_path / "patch.o").write_bytes(patch.data)
    symbols = subprocess.run(
        ["readelf", "-W", "-s", str(tmp_path / "patch.o")], capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    assert "OBJECT  GLOBAL DEFAULT" in symbols and "__suture_new_0_names" in symbols


OPS = "static const struct ops ops = { .fn = one, .other = two };\n"
REGISTER = "void setup(void) { keep(&ops); }\n"


def test_a_copied_ops_struct_whose_address_is_handed_out_pins_the_module(
    tmp_path: Path,
) -> None:
    new = "static int three(int x) { return x + 3; }\n" + OPS.replace("two", "three")
    unit, target = _unit(tmp_path, OPS + REGISTER, new + REGISTER)
    plan = data_copies.plan_copies(unit, target=target)
    assert plan.users == {"setup": "ops"}
    assert plan.pins == [
        "setup hands out the address of the copy of ops",
        "the copy of ops points to three, which the patch holds",
    ]


def test_a_changed_function_handing_out_a_copy_pins_the_module_too(tmp_path: Path) -> None:
    after = OPS.replace("two", "one") + 'void setup(void) { keep(&ops); sink("x"); }\n'
    unit, target = _unit(tmp_path, OPS + REGISTER, after)
    assert [c.name for c in unit.diff.changed] == ["setup"]
    plan = data_copies.plan_copies(unit, target=target)
    assert plan.users == {}  # already patched: it changed
    assert plan.pins == ["setup hands out the address of the copy of ops"]


def test_read_only_data_pointing_to_a_copy_is_copied_too(tmp_path: Path) -> None:
    tables = (
        "static const struct ops spare = { .fn = two };\n"
        "static const struct ops *const tables[] = { &ops, &spare };\n"
    )
    user = "int call(int i, int x) { return tables[i & 1]->fn(x); }\n"
    unit, target = _unit(tmp_path, OPS + tables + user, OPS.replace("two", "one") + tables + user)
    plan = data_copies.plan_copies(unit, target=target)
    assert plan.copied == ["ops", "tables"]
    assert plan.users == {"call": "tables"}


def test_users_that_keep_the_old_copy_are_noted(tmp_path: Path) -> None:
    code = (
        OPS + "struct holder { const struct ops *ops; } holder = { &ops };\n"
        "int __init boot(void) { keep(&ops); return 0; }\n"
        "noipa notrace void quiet(void) { keep(&ops); }\n"
    )
    unit, target = _unit(tmp_path, code, code.replace(".other = two", ".other = one"))
    plan = data_copies.plan_copies(unit, target=target)
    assert plan.users == {"quiet": "ops"}  # without an ftrace entry: carried, callers patched
    assert sorted(plan.unpatched) == [
        "ops: a pointer to it is stored in holder (writable data), which keeps pointing to "
        "the old copy",
        "ops: boot (boot code) used the old copy, and what it did with it stays",
    ]
    changed = data_copies.with_copies(unit, plan).diff.changed
    assert [(c.name, c.has_fentry) for c in changed] == [("quiet", False)]


def test_a_copy_nothing_patched_uses_is_refused(tmp_path: Path) -> None:
    code = OPS + "struct holder { const struct ops *ops; } holder = { &ops };\n"
    unit, target = _unit(tmp_path, code, code.replace(".other = two", ".other = one"))
    plan = data_copies.plan_copies(unit, target=target)
    with pytest.raises(BuildError, match=r"changes ops, read-only data .* stored in holder"):
        data_copies.refuse_uncovered([unit], [plan], [], [], complete=False)


def test_complete_refuses_a_partial_copy(tmp_path: Path) -> None:
    code = (
        OPS + "struct holder { const struct ops *ops; } holder = { &ops };\n"
        "void call(void) { keep(&ops); }\n"
    )
    unit, target = _unit(tmp_path, code, code.replace(".other = two", ".other = one"))
    plan = data_copies.plan_copies(unit, target=target)
    data_copies.refuse_uncovered([unit], [plan], [], [], complete=False)
    with pytest.raises(BuildError, match="some users keep the old copy"):
        data_copies.refuse_uncovered([unit], [plan], [], [], complete=True)


def test_data_the_kernel_changed_since_it_was_built_is_refused(tmp_path: Path) -> None:
    limits = (
        "static const int limits[4] = { 1, 2, 3, 4 };\nint get(int i) { return limits[i & 3]; }\n"
    )
    unit, _ = _unit(tmp_path, limits, limits.replace("3, 4", "3, 5"))
    spoiled = _image_of(unit.orig, spoil="limits")
    with pytest.raises(BuildError, match="not what its source compiles to"):
        data_copies.plan_copies(unit, target=spoiled)


def test_read_only_data_sharing_its_section_is_refused(tmp_path: Path) -> None:
    shared = (
        'static const int __attribute__((section(".rodata.shared"), used)) a[2] = { 1, 2 };\n'
        'static const int __attribute__((section(".rodata.shared"), used)) b[2] = { 3, 4 };\n'
        "int get(int i) { return a[i & 1] + b[i & 1]; }\n"
    )
    unit, target = _unit(tmp_path, shared, shared.replace("{ 1, 2 }", "{ 1, 5 }"))
    assert unit.diff.changed_data == ["a"]  # found although it has no section of its own
    with pytest.raises(BuildError, match=r"shares its section \.rodata\.shared"):
        data_copies.plan_copies(unit, target=target)


@pytest.mark.parametrize(
    ("declaration", "why"),
    [
        ("int limits[2] = { 1, 2 };", "writable data"),
        ('int limits[2] __attribute__((section(".data..read_mostly"))) = { 1, 2 };',
         "writable data"),
        ('int limits[2] __attribute__((section(".data..ro_after_init"))) = { 1, 2 };',
         "__ro_after_init: the kernel wrote it at boot"),
        ('int limits[2] __attribute__((section(".init.data"))) = { 1, 2 };', "boot-time data"),
    ],
)  # fmt: skip
def test_changed_data_that_is_not_read_only_is_refused(
    tmp_path: Path, declaration: str, why: str
) -> None:
    use = "\nint get(int i) { return limits[i & 1]; }\n"
    orig = _compile(tmp_path, "orig", declaration + use)
    patched = _compile(tmp_path, "patched", declaration.replace("{ 1, 2 }", "{ 1, 3 }") + use)
    diff = diff_objects(orig, patched)
    assert diff.changed_data == ["limits"]
    with pytest.raises(BuildError, match=f"changes existing data \\(limits\\); it is {why}") as e:
        refuse_changed_data("x.c", orig, diff)
    assert "shadow variables" in e.value.hint


def test_taking_an_address_and_reading_through_it_are_told_apart(tmp_path: Path) -> None:
    code = (
        OPS + "int by_value(int x) { return ops.fn(x); }\n"
        "void by_address(void) { keep(&ops); }\n"
        "void by_store(const struct ops **slot) { *slot = &ops; }\n"
    )
    obj = _compile(tmp_path, "o", code)
    funcs = {n: n for n in ("by_value", "by_address", "by_store")}
    reasons = data_copies._address_uses(obj, funcs, {"ops"})
    assert reasons == [
        "by_address hands out the address of the copy of ops",
        "by_store hands out the address of the copy of ops",
    ]
