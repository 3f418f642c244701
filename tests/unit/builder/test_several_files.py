"""A fix of several files: one patch object per file, linked into one module.

The objects come from small C sources compiled here with gcc (kbuild's flags
in short: ``-O2 -fno-pie -pg -mfentry -ffunction-sections -fdata-sections -c``),
linked with ``ld -r`` as kbuild links a module's objects.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from suture.builder import klp, module, shared, units
from suture.builder.compile import ObjectPair
from suture.builder.differ import diff_objects
from suture.builder.elfobj import ObjectFile
from suture.builder.extract import extract
from suture.builder.pipeline import _klp_objects, _klp_symbol, _UnitPatch
from suture.builder.symbols import Kallsyms
from suture.builder.target import Target
from suture.errors import BuildError

CFLAGS = ["-O2", "-fno-pie", "-pg", "-mfentry", "-ffunction-sections", "-fdata-sections", "-c"]
# Two files with a same-named static helper: the kernel has two `helper`s.
SOURCE = """\
static __attribute__((noipa)) int helper(int x) {{ return x + {n}; }}
int show_{n}(int x) {{ return helper(x) * {n}{change}; }}
"""


def _compile(tmp_path: Path, n: int) -> ObjectFile:
    src = tmp_path / f"f{n}.c"
    src.write_text(SOURCE.format(n=n, change=" + 1"))
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(tmp_path / f"f{n}.o")], check=True)
    return ObjectFile.load(tmp_path / f"f{n}.o")


def _symbols(path: Path) -> str:
    return subprocess.run(
        ["readelf", "-W", "-s", "-r", str(path)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None, reason="gcc, ld")
def test_tagged_patch_objects_link_and_keep_their_statics_apart(tmp_path: Path) -> None:
    patches = [
        extract(_compile(tmp_path, n), {f"show_{n}": f"show_{n}"}, renames={},
                exported={"__fentry__"}, tag=f"{i}_")
        for i, n in enumerate((2, 3))
    ]  # fmt: skip
    assert patches[0].functions == {"show_2": "__suture_new_0_show_2"}
    assert patches[0].klp_symbols == {"__suture_klp_0_helper": "helper"}
    assert patches[1].klp_symbols == {"__suture_klp_1_helper": "helper"}
    for i, p in enumerate(patches):
        (tmp_path / f"p{i}.o").write_bytes(p.data)
    linked = tmp_path / "both.o"
    subprocess.run(
        ["ld", "-r", str(tmp_path / "p0.o"), str(tmp_path / "p1.o"), "-o", str(linked)],
        check=True,
    )
    converted = tmp_path / "both.ko"
    converted.write_bytes(
        klp.convert(
            linked.read_bytes(),
            {
                "__suture_klp_0_helper": klp.KlpSymbol("vmlinux", "helper", 1),
                "__suture_klp_1_helper": klp.KlpSymbol("vmlinux", "helper", 2),
            },
        )
    )
    out = _symbols(converted)
    assert ".klp.sym.vmlinux.helper,1" in out and ".klp.sym.vmlinux.helper,2" in out
    assert "__suture_new_0_show_2" in out and "__suture_new_1_show_3" in out
    assert "__suture_klp_" not in out


def _part(source: str, objname: str, funcs: list[str], callbacks: dict[str, str]) -> _UnitPatch:
    unit = SimpleNamespace(pair=SimpleNamespace(source=source), objname=objname)
    return cast(
        _UnitPatch,
        SimpleNamespace(
            unit=unit,
            klp_funcs=[module.PatchedFunction(f, f"__suture_new_{f}") for f in funcs],
            callbacks=callbacks,
            expected=[None] * len(funcs),
        ),
    )


def test_one_klp_object_per_patched_object_vmlinux_first() -> None:
    objects = _klp_objects(
        [
            _part("net/802/mrp.c", "mrp", ["mrp_rcv"], {"pre_patch": "__suture_new_1_pre"}),
            _part("fs/proc/cmdline.c", "vmlinux", ["cmdline_proc_show"], {}),
            _part("fs/proc/version.c", "vmlinux", ["version_proc_show"], {"post_patch": "p"}),
        ]
    )
    assert [o.name for o in objects] == ["vmlinux", "mrp"]
    assert [f.name for f in objects[0].functions] == ["cmdline_proc_show", "version_proc_show"]
    assert objects[0].callbacks == {"post_patch": "p"}
    assert objects[1].callbacks == {"pre_patch": "__suture_new_1_pre"}


def test_a_callback_kind_twice_in_one_object_is_refused() -> None:
    with pytest.raises(BuildError, match="more than one pre_patch callback for vmlinux"):
        _klp_objects(
            [
                _part("fs/proc/cmdline.c", "vmlinux", ["a"], {"pre_patch": "x"}),
                _part("fs/proc/version.c", "vmlinux", ["b"], {"pre_patch": "y"}),
            ]
        )


def test_stub_has_one_klp_object_per_object() -> None:
    stub = module.stub_source(
        "suture_x",
        [
            module.KlpObject("vmlinux", [module.PatchedFunction("cmdline_proc_show", "n0", 0)]),
            module.KlpObject(
                "mrp", [module.PatchedFunction("mrp_rcv", "n1", 1)], {"pre_patch": "cb1"}
            ),
        ],
        {"suture_build_id": "ab"},
    )
    assert "extern char cb1[];\nextern char n0[];\nextern char n1[];" in stub
    assert '.old_name = "cmdline_proc_show", .new_func = n0, .old_sympos = 0' in stub
    objs = stub.split("static struct klp_object suture_objs[] = {")[1].split("};")[0]
    assert "{ .name = NULL, .funcs = suture_funcs0 }," in objs
    assert '{ .name = "mrp", .funcs = suture_funcs1, .callbacks = {' in objs
    assert ".pre_patch = (void *)cb1," in objs
    funcs1 = stub.split("static struct klp_func suture_funcs1[] = {")[1].split("};")[0]
    assert '"mrp_rcv"' in funcs1 and "cmdline_proc_show" not in funcs1


def test_stub_refuses_an_object_twice() -> None:
    obj = module.KlpObject("vmlinux", [module.PatchedFunction("f", "n")])
    with pytest.raises(BuildError, match="repeat"):
        module.stub_source("suture_x", [obj, obj], {})


def test_a_modules_references_are_looked_up_where_they_live() -> None:
    raid456 = Kallsyms({"raid5d": [(7, "t")], "conf_lock": [(9, "d")]})
    owners = {"md_check_recovery": "md_mod", "printk": "vmlinux", "raid5_set_cache_size": "raid456"}
    vmlinux = Kallsyms({"printk": [(1, "T")], "hidden_key": [(2, "d")]})
    where = Target(cast(Any, None), cast(Any, None), cast(Any, None))
    where.__dict__.update(export_owners=owners, kallsyms=vmlinux)  # read once, as cached
    assert _klp_symbol("conf_lock", "raid456", raid456, raid456.sympos, where) == klp.KlpSymbol(
        "raid456", "conf_lock", 0
    )
    assert _klp_symbol(
        "md_check_recovery", "raid456", raid456, raid456.sympos, where
    ) == klp.KlpSymbol("md_mod", "md_check_recovery", 0, applied_with="raid456")
    # An unexported vmlinux key read by a module's code: applied with vmlinux.
    assert _klp_symbol("hidden_key", "raid456", raid456, raid456.sympos, where) == klp.KlpSymbol(
        "vmlinux", "hidden_key", 0
    )
    with pytest.raises(BuildError, match="neither raid456 defines nor another module exports"):
        _klp_symbol("printk", "raid456", raid456, raid456.sympos, where)


def test_compiler_constants_named_by_local_labels_are_carried(tmp_path: Path) -> None:
    # gas keeps .LC0 in the symbol table for a reference into a mergeable
    # constant section (.rodata.cst8): it is the patch's data, not the kernel's.
    src = tmp_path / "lc.c"
    src.write_text("double g(double);\ndouble f(double x) { return g(x * 1.2345); }\n")
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(tmp_path / "lc.o")], check=True)
    obj = ObjectFile.load(tmp_path / "lc.o")
    assert any(s.name == ".LC0" for s in obj.symbols)
    patch = extract(obj, {"f": "f"}, renames={}, exported={"g", "__fentry__"})
    assert patch.klp_symbols == {}
    (tmp_path / "p.o").write_bytes(patch.data)
    listing = _symbols(tmp_path / "p.o")
    assert (
        ".rodata.cst8"
        in subprocess.run(
            ["readelf", "-W", "-S", str(tmp_path / "p.o")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert "UND .LC0" not in listing


def test_unexported_references_get_names_the_modules_link_cannot_take(tmp_path: Path) -> None:
    # THIS_MODULE in a module's patched code means that module's __this_module,
    # not the one modpost gives the livepatch module itself.
    src = tmp_path / "m.c"
    src.write_text("extern char __this_module[];\nvoid *owner(void) { return __this_module; }\n")
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(tmp_path / "m.o")], check=True)
    obj = ObjectFile.load(tmp_path / "m.o")
    patch = extract(obj, {"owner": "owner"}, renames={}, exported={"__fentry__"}, objname="m")
    assert patch.klp_symbols == {"__suture_klp___this_module": "__this_module"}


# New code one file adds and another file of the same fix uses (shared.py).
SHARED_BEFORE = {
    "a.c": "int show_a(int x) { return x + 1; }\n",
    "b.c": "extern int sink(int);\nint show_b(int x) { return sink(x); }\n",
}
SHARED_AFTER = {
    "a.c": "int shared_data = 5;\n"
    "__attribute__((noipa)) int shared_fn(int x) { return x * 7 + shared_data; }\n"
    "static __attribute__((noipa)) int private_fn(int x) { return x - 1; }\n"
    "int show_a(int x) { return private_fn(x) + 1; }\n",
    "b.c": "extern int sink(int);\nextern int shared_fn(int);\nextern int shared_data;\n"
    "int show_b(int x) { return sink(shared_fn(x) + shared_data); }\n",
}


def _unit(tmp_path: Path, name: str, objname: str) -> units.Unit:
    objs = []
    for side, text in (("orig", SHARED_BEFORE[name]), ("patched", SHARED_AFTER[name])):
        src = tmp_path / side / name
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(text)
        subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(src.with_suffix(".o"))], check=True)
        objs.append(ObjectFile.load(src.with_suffix(".o")))
    pair = ObjectPair(name, objs[0].path, objs[1].path)
    return units.Unit(pair, objs[0], objs[1], diff_objects(objs[0], objs[1]), objname)


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("ld") is None, reason="gcc, ld")
def test_new_code_of_one_file_is_linked_into_another(tmp_path: Path) -> None:
    a, b = _unit(tmp_path, "a.c", "vmlinux"), _unit(tmp_path, "b.c", "ext4")
    sharing = shared.plan([a, b], ["0_", "1_"])
    names = {"shared_fn": "__suture_new_0_shared_fn", "shared_data": "__suture_new_0_shared_data"}
    assert sharing.redirects == [{}, names]
    assert sharing.exports == [{"shared_data"}, set()]
    patches = []
    for i, unit in enumerate((a, b)):
        funcs = {c.name: c.name for c in unit.diff.changed + unit.diff.new}
        patches.append(
            extract(unit.patched, funcs, renames={}, exported={"__fentry__", "sink"},
                    new_data=set(unit.diff.new_data), objname=unit.objname, tag=f"{i}_",
                    redirects=sharing.redirects[i], shared_data=sharing.exports[i])
        )  # fmt: skip
        (tmp_path / f"p{i}.o").write_bytes(patches[-1].data)
    assert patches[1].klp_symbols == {}  # nothing left for the kernel to resolve
    linked = tmp_path / "both.o"
    subprocess.run(
        ["ld", "-r", str(tmp_path / "p0.o"), str(tmp_path / "p1.o"), "-o", str(linked)],
        check=True,
    )
    listing = _symbols(linked)
    undefined = [line for line in listing.splitlines() if " UND " in line]
    assert not [u for u in undefined if "__suture_new_" in u], undefined
    assert re.search(r"FUNC +GLOBAL DEFAULT +\d+ __suture_new_0_shared_fn", listing)
    assert re.search(r"OBJECT +GLOBAL DEFAULT +\d+ __suture_new_0_shared_data", listing)
    # A new static is the file's own: nothing else links to it (its name is tagged).
    assert "private_fn" not in sharing.redirects[1]
    assert "__suture_new_0_private_fn" in listing


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_new_code_of_a_module_is_not_linked_into_vmlinux_code(tmp_path: Path) -> None:
    a, b = _unit(tmp_path, "a.c", "mrp"), _unit(tmp_path, "b.c", "vmlinux")
    with pytest.raises(BuildError, match=r"b.c \(vmlinux\) uses shared_data, which the fix adds"):
        shared.plan([a, b], ["0_", "1_"])
    assert shared.plan([a, _unit(tmp_path / "m", "b.c", "mrp")], ["0_", "1_"]).exports == [
        {"shared_data"},
        set(),
    ]


# A function with a return site and an exception entry, as objtool and the
# kernel's asm write them: .return_sites is objtool's, __ex_table the compiler's.
TABLES = """\
int show(int x) {
    asm volatile("1: nop\\n.pushsection .return_sites, \\"a\\"\\n.long 1b - .\\n.popsection\\n"
                 "2: nop\\n.pushsection __ex_table, \\"a\\"\\n.long 2b - ., 2b - ., 0\\n"
                 ".popsection");
    return x + 1;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc")
@pytest.mark.parametrize("at_link", [False, True])
def test_objtools_tables_are_left_to_the_modules_objtool_on_ibt_builds(
    tmp_path: Path, at_link: bool
) -> None:
    # On 6.12/7.x objtool runs on the linked module and writes no .return_sites
    # when an object already has one: the stub's returns would stay unpatched.
    src = tmp_path / "t.c"
    src.write_text(TABLES)
    subprocess.run(["gcc", *CFLAGS, str(src), "-o", str(tmp_path / "t.o")], check=True)
    part = extract(ObjectFile.load(tmp_path / "t.o"), {"show": "show"}, renames={},
                   exported={"__fentry__"}, objtool_at_link=at_link)  # fmt: skip
    out = tmp_path / "part.o"
    out.write_bytes(part.data)
    names = {s.name for s in ObjectFile.load(out).sections}
    assert "__ex_table" in names
    assert (".return_sites" in names) is not at_link
