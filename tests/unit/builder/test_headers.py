"""Header fixes: the C item scanner, header comparison, and the units a change reaches.

A small tree made here stands in for a kernel tree; the catalog is parsed
from a ``make -n`` line as kbuild prints it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.builder import catalog, cscan, headers, includes
from suture.builder.cscan import Kind
from suture.errors import BuildError

HEADER = """\
/* SPDX */
#ifndef _X_H
#define _X_H
#include <linux/types.h>
#define FOO 1
#define BAR(x) ((x) + \\
\tFOO)
struct foo {
\tint a; /* comment { */
\tchar *b;
};
enum { ONE, TWO = 2 };
typedef int (*cb_t)(int);
extern int global_x;
int some_func(int a, struct foo *f);
DECLARE_PER_CPU(int, pcpu);
#ifdef CONFIG_X
static inline __attribute__((always_inline)) int helper(struct foo *f)
{
#ifdef CONFIG_Y
\treturn 1;
#endif
\tif (f->a > 1) { return BAR(f->a); }
\treturn 0;
}
#else
static inline int helper(struct foo *f) { return 0; }
#endif
static __always_inline void *__skb_put(struct sk_buff *skb, unsigned int len) __must_hold(x)
{
\treturn NULL;
}
static struct sk_buff *dequeue(void *ctx)
{
\treturn NULL;
}
struct bar { int x; } bar_instance;
#endif
"""


def test_scanner_kinds_names_and_contexts() -> None:
    items = [(i.kind, i.name, i.context[1:]) for i in cscan.scan(HEADER)]
    assert items == [
        (Kind.MACRO, "_X_H", ()),
        (Kind.DIRECTIVE, "#include <linux/types.h>", ()),
        (Kind.MACRO, "FOO", ()),
        (Kind.MACRO, "BAR", ()),
        (Kind.STRUCT, "foo", ()),
        (Kind.ENUM, "ONE", ()),
        (Kind.TYPEDEF, "cb_t", ()),
        (Kind.DECLARATION, "global_x", ()),
        (Kind.DECLARATION, "some_func", ()),
        (Kind.INVOCATION, "DECLARE_PER_CPU", ()),
        (Kind.FUNCTION, "helper", ("ifdef CONFIG_X",)),
        (Kind.FUNCTION, "helper", ("ifdef CONFIG_X / else",)),
        (Kind.FUNCTION, "__skb_put", ()),
        (Kind.FUNCTION, "dequeue", ()),  # returns a struct pointer: not a struct
        (Kind.STRUCT, "bar", ()),
    ]
    helper = next(i for i in cscan.scan(HEADER) if i.name == "helper")
    assert "BAR" in helper.mentions and "#ifdef CONFIG_Y" in helper.text


@pytest.mark.parametrize(
    ("old", "new", "names", "refused"),
    [
        ("return 0; }", "return 2; }", {"helper"}, ""),  # an inline body
        ("#define FOO 1", "#define FOO 3", {"FOO"}, ""),  # a macro
        ("\tchar *b;\n};", "\tchar *b;\n\tint c;\n};", set(), "the layout of struct foo"),
        ("TWO = 2", "TWO = 3", set(), "the values of enum ONE"),
        ("int some_func(int a,", "long some_func(int a,", set(), "declaration of some_func"),
        ("extern int global_x;", "extern long global_x;", set(), "declaration of global_x"),
        ("#else\n", "#elif defined(CONFIG_Z)\n", {"helper"}, ""),  # its condition changed
        (
            "bar_instance;\n",
            "bar_instance;\nint new_func(void);\n#define NEW(x) (x)\n",
            {"NEW"},
            "",
        ),
        ("/* comment { */", "/* another comment */", set(), ""),  # no change at all
    ],
)
def test_compare(old: str, new: str, names: set[str], refused: str) -> None:
    assert old in HEADER
    change = headers.compare("include/x.h", HEADER, HEADER.replace(old, new, 1))
    assert change.names == names
    if refused:
        assert any(refused in r for r in change.refused), change.refused
    else:
        assert change.refused == []


def make_tree(root: Path) -> catalog.Catalog:
    files = {
        "include/linux/a.h": "static inline int foo(int x) { return x; }\n",
        "include/linux/b.h": "#include <linux/a.h>\n#define BAR(x) foo(x)\n",
        "include/linux/c.h": "#include <linux/a.h>\nstruct s { char buf[FOOLEN]; };\n",
        "drivers/d/x.c": "#include <linux/b.h>\nint x(void) { return BAR(1); }\n",
        "drivers/d/y.c": "#include <linux/a.h>\nint y(void) { return 2; }\n",
        "drivers/d/z.c": "int z(void) { return foo(3); }\n",  # uses the name, includes nothing
        "kernel/w.c": '#include "w.h"\nint w(void) { return 4; }\n',
        "kernel/w.h": "#include <linux/b.h>\nstatic const int w_table[] = { BAR(2) };\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    dry_run = "".join(
        f"set -e; gcc-12 -nostdinc -I./include -include ./include/linux/kconfig.h "
        f"{'-DMODULE ' if src.startswith('drivers') else ''}"
        f"-DKBUILD_MODNAME='\"{Path(src).stem}\"' -c -o {src[:-2]}.o {src}   ; true\n"
        for src in ("drivers/d/x.c", "drivers/d/y.c", "drivers/d/z.c", "kernel/w.c")
    )
    return catalog.parse_dry_run(dry_run)


def test_catalog_reads_kbuilds_commands(tmp_path: Path) -> None:
    cat = make_tree(tmp_path)
    assert cat.units["drivers/d/x.c"].objname == "x"
    assert cat.units["kernel/w.c"].objname == "vmlinux"
    assert cat.units["kernel/w.c"].include_dirs == ("include",)
    assert cat.units["kernel/w.c"].forced == ("include/linux/kconfig.h",)
    assert catalog.Catalog.from_json(cat.to_json()) == cat


def test_reach_follows_includes_and_names(tmp_path: Path) -> None:
    cat = make_tree(tmp_path)
    graph = includes.compute(tmp_path, cat)
    assert graph.edges["kernel/w.h"] == ["include/linux/b.h"]
    change = {"include/linux/a.h": headers.HeaderChange(names={"foo"})}
    found = headers.reach(tmp_path, cat, graph, change)
    # x.c uses BAR, which uses foo; w.c through its own header's table (a use outside
    # a definition); y.c includes a.h but uses nothing of it; z.c names foo but
    # cannot see the header.
    assert found.units == ["drivers/d/x.c", "kernel/w.c"]
    assert found.names >= {"foo", "BAR"}
    assert found.including == 3


def test_a_changed_name_in_a_struct_is_refused(tmp_path: Path) -> None:
    cat = make_tree(tmp_path)
    graph = includes.compute(tmp_path, cat)
    (tmp_path / "include/linux/a.h").write_text("#define FOOLEN 8\n")
    (tmp_path / "drivers/d/y.c").write_text("#include <linux/c.h>\nint y(void) { return 2; }\n")
    graph = includes.compute(tmp_path, cat)
    change = {"include/linux/a.h": headers.HeaderChange(names={"FOOLEN"})}
    with pytest.raises(
        BuildError, match=r"the layout of struct s \(include/linux/c.h\) uses FOOLEN"
    ):
        headers.reach(tmp_path, cat, graph, change)


def test_a_comment_inside_a_macro_does_not_end_it() -> None:
    # rcuwait.h: a multi-line comment between continued lines of a #define.
    text = (
        "#define wait_event(w, cond)\t\\\n({\t\\\n\tfor (;;) {\t\\\n\t\t/*\t\\\n"
        "\t\t * a barrier\t\\\n\t\t */\t\\\n\t\tcheck(w);\t\\\n\t}\t\\\n})\n"
        "static inline int after(void) { return 1; }\n"
    )
    items = [(i.kind, i.name) for i in cscan.scan(text)]
    assert items == [(Kind.MACRO, "wait_event"), (Kind.FUNCTION, "after")]


def test_a_macro_used_without_a_semicolon_ends_at_its_parenthesis() -> None:
    text = (
        "DEFINE_LOCK_GUARD_0(irq, local_irq_disable(), _T = 1)\n"
        "static inline int signal_pending(void)\n{\n\treturn 1;\n}\n"
        "SYSCALL_DEFINE1(foo, int, a)\n{\n\treturn a;\n}\n"
    )
    items = [(i.kind, i.name) for i in cscan.scan(text)]
    assert items == [
        (Kind.INVOCATION, "DEFINE_LOCK_GUARD_0"),
        (Kind.FUNCTION, "signal_pending"),
        (Kind.FUNCTION, "SYSCALL_DEFINE1"),  # a body follows: one item
    ]


def test_a_field_named_like_a_function_like_macro_is_no_use(tmp_path: Path) -> None:
    cat = make_tree(tmp_path)
    (tmp_path / "include/linux/c.h").write_text(
        "#include <linux/a.h>\nstruct s { int signalled; };\n"
    )
    (tmp_path / "drivers/d/y.c").write_text("#include <linux/c.h>\nint y(void) { return 2; }\n")
    graph = includes.compute(tmp_path, cat)
    old = "#define signalled() (1)\n"
    change = headers.compare("include/linux/a.h", old, "#define signalled() (2)\n")
    assert change.called == {"signalled"}
    found = headers.reach(tmp_path, cat, graph, {"include/linux/a.h": change})
    assert found.units == []  # struct s only has a field of that name: nothing refused


UNIT = """\
struct ctx {
\tstruct super *sb;
\tunsigned int pages;
};
static const struct ops table = { .open = ctx_open };
static int ctx_open(struct ctx *c) { return c->pages; }
"""


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        # A field added to a type the file defines for itself: its instances live on.
        (UNIT, UNIT.replace("\tunsigned int pages;", "\tvoid *copy;\n\tunsigned int pages;"),
         "the layout of struct ctx (drivers/x.c, changed)"),
        # Code, a const table, a comment and a new type are no layout change.
        (UNIT, UNIT.replace("return c->pages;", "return c->pages + 1;"), ""),
        (UNIT, UNIT.replace(".open = ctx_open", ".open = NULL"), ""),
        (UNIT, UNIT.replace("struct super *sb;", "struct super *sb; /* the superblock */"), ""),
        (UNIT, "struct more { int x; };\n" + UNIT, ""),
    ],
)  # fmt: skip
def test_a_c_files_own_types(old: str, new: str, refused: str) -> None:
    if not refused:
        headers.refuse_unit_layouts({"drivers/x.c": (old, new)})
        return
    with pytest.raises(BuildError) as e:
        headers.refuse_unit_layouts({"drivers/x.c": (old, new)})
    assert refused in e.value.message
    assert "shadow variables" in (e.value.hint or "")
