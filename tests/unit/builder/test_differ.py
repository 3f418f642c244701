"""The object differ on small objects compiled here with gcc (flags as kbuild's, in short).

Each case is a C source before and after a change; the objects come from
``gcc -O2 -fno-pie -pg -mfentry -ffunction-sections -fdata-sections -c``.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder.differ import DiffResult, diff_objects, mangle
from suture.builder.elfobj import ObjectFile
from suture.builder.fix import Fix

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CFLAGS = ["-O2", "-fno-pie", "-pg", "-mfentry", "-ffunction-sections", "-fdata-sections", "-c"]

BASE = """\
extern void report(const char *func, int line, int value);
extern int sink(const char *s);
#define __init __attribute__((section(".init.text")))

static int helper(int x)
{
	return x * 3;
}

int user(int x)
{
	return helper(x) + 1;
}

int show(void)
{
	return sink("original");
}

int warner(int v)
{
	report(__func__, __LINE__, v);
	return v;
}

int flags(void)
{
	report("flags", 3, 0);
	return 0;
}

int __init setup(void)
{
	return sink("setup");
}
"""


def _diff(tmp_path: Path, before: str, after: str, *flags: str) -> DiffResult:
    objs = []
    for name, text in (("orig", before), ("patched", after)):
        src = tmp_path / name / "x.c"
        src.parent.mkdir(parents=True)
        src.write_text(text)
        # As kbuild does: the same relative path on both sides (__FILE__, UBSAN's places).
        subprocess.run(["gcc", *CFLAGS, *flags, "x.c", "-o", "x.o"], check=True, cwd=src.parent)
        objs.append(ObjectFile.load(src.with_suffix(".o")))
    udiff = "".join(
        difflib.unified_diff(before.splitlines(True), after.splitlines(True), "a/x.c", "b/x.c", n=3)
    )
    return diff_objects(objs[0], objs[1], Fix.parse(udiff).files["x.c"])


def changed(result: DiffResult) -> list[str]:
    return sorted(c.name for c in result.changed)


def test_string_change(tmp_path: Path) -> None:
    result = _diff(tmp_path, BASE, BASE.replace('"original"', '"patched"'))
    assert changed(result) == ["show"]
    assert result.changed[0].has_fentry


def test_identical(tmp_path: Path) -> None:
    result = _diff(tmp_path, BASE, BASE + "\n")
    assert result.no_change


def test_inlined_static_changes_its_caller(tmp_path: Path) -> None:
    result = _diff(tmp_path, BASE, BASE.replace("x * 3", "x * 5"))
    assert "user" in changed(result)


def test_new_function(tmp_path: Path) -> None:
    after = BASE + '\nint added(void)\n{\n\treturn sink("new");\n}\n'
    result = _diff(tmp_path, BASE, after)
    assert [n.name for n in result.new] == ["added"]
    assert result.changed == []


def test_moved_line_is_not_a_change(tmp_path: Path) -> None:
    after = BASE.replace("int user(int x)", "/* a comment\n * two lines */\nint user(int x)")
    result = _diff(tmp_path, BASE, after)
    assert result.changed == []
    assert result.line_only == ["warner"]


def test_changed_constant_is_a_change(tmp_path: Path) -> None:
    # Same instruction shape as a __LINE__ argument, but the fix did not move line 3.
    result = _diff(tmp_path, BASE, BASE.replace('report("flags", 3, 0)', 'report("flags", 4, 0)'))
    assert changed(result) == ["flags"]


def test_init_code_is_unpatchable(tmp_path: Path) -> None:
    result = _diff(tmp_path, BASE, BASE.replace('"setup"', '"setup2"'))
    assert [name for name, _ in result.unpatchable] == ["setup"]
    assert "__init" in result.unpatchable[0][1]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("foo.isra.0", "foo.isra"),
        ("foo.isra.35.part.36", "foo.isra.part"),
        ("__key.264", "__key"),
        ("__UNIQUE_ID_ddebug372", "__UNIQUE_ID_ddebug"),
        ("__UNIQUE_ID_ddebug473.50", "__UNIQUE_ID_ddebug"),  # a static local's descriptor
        ("plain", "plain"),
    ],
)
def test_mangle(name: str, key: str) -> None:
    assert mangle(name) == key


# Per-site statics as the kernel makes them: a dynamic debug descriptor named
# by __COUNTER__ (include/linux/dynamic_debug.h) with __LINE__ in a bit field,
# and a ratelimit state (include/linux/ratelimit_types.h).
SITES = """\
struct site { const char *func; const char *file; unsigned int line:18, cls:6, flags:8; };
struct rs { int interval, burst; };
extern void dbg(struct site *s, const char *fmt, int v);
extern int limited(struct rs *rs);
#define __PASTE(a, b) a##b
#define PASTE(a, b) __PASTE(a, b)
#define UNIQUE_ID(p) PASTE(PASTE(__UNIQUE_ID_, p), __COUNTER__)
#define __DBG(id, fmt, v) do {\\
	static struct site id __attribute__((section("__dyndbg"), used, aligned(8))) =\\
		{ __func__, "x.c", __LINE__, 63, 0 };\\
	dbg(&id, fmt, v);\\
} while (0)
#define DBG(fmt, v) __DBG(UNIQUE_ID(ddebug), fmt, v)

int first(int v)
{
	DBG("first %d", v);
	return v + 1;
}

int second(int v)
{
	static struct rs _rs = { 5, 10 };

	DBG("second %d", v);
	if (limited(&_rs))
		DBG("limited %d", v);
	return v;
}
"""


def test_lines_and_counters_moved_in_descriptors_are_no_change(tmp_path: Path) -> None:
    # Two lines and a __COUNTER__ use above both functions: every descriptor
    # gets another name (__UNIQUE_ID_ddebug1.2 -> __UNIQUE_ID_ddebug2.2) and line.
    after = SITES.replace(
        "int first(int v)", "enum { PASTE(counted, __COUNTER__) };\n/* moved */\nint first(int v)"
    )
    result = _diff(tmp_path, SITES, after)
    assert result.changed == [] and result.new == []


def test_a_changed_per_site_static_changes_its_function(tmp_path: Path) -> None:
    result = _diff(tmp_path, SITES, SITES.replace("{ 5, 10 }", "{ 5, 20 }"))
    assert changed(result) == ["second"]
    assert "_rs" in result.changed[0].reason


def test_a_changed_descriptor_format_changes_its_function(tmp_path: Path) -> None:
    result = _diff(tmp_path, SITES, SITES.replace('"x.c", __LINE__, 63', '"x.c", __LINE__, 62'))
    assert changed(result) == ["first", "second"]


def test_pooled_constants_compare_by_value_not_label(tmp_path: Path) -> None:
    # GCC names pooled constants .LC<n> in one sequence with strings: a constant
    # the fix adds above renumbers every later one (.LC0 -> .LC1), same bytes.
    before = "double g(double);\ndouble f(double x) { return g(x * 1.2345); }\n"
    after = (
        "double g(double);\ndouble e(double x) { return g(x * 7.5); }\n" + before.split("\n", 1)[1]
    )
    result = _diff(tmp_path, before, after)
    assert result.changed == [] and [n.name for n in result.new] == ["e"]
    changed_value = _diff(tmp_path / "v", before, before.replace("1.2345", "1.2346"))
    assert changed(changed_value) == ["f"]


def test_a_line_moved_in_existing_data_is_no_change(tmp_path: Path) -> None:
    # A table of sites (file, line) keeps the line of the code it describes.
    before = (
        "struct site { const char *file; unsigned int line:20, kind:12; };\n"
        'static const struct site here = { "x.c", __LINE__, 7 };\n'
        "const struct site *where(void) { return &here; }\n"
    )
    result = _diff(tmp_path, before, "/* moved\n * down */\n" + before)
    assert result.no_change
    changed_kind = _diff(tmp_path / "k", before, before.replace("__LINE__, 7", "__LINE__, 8"))
    assert changed_kind.changed_data == ["here"]


# Netlink's error messages: each use defines a static string (__msg.N, in order).
MESSAGES = """\
extern void set_msg(const char *m);
#define SET_MSG(s) do { static const char __msg[] = s; set_msg(__msg); } while (0)

int check(int a, int b)
{
	if (a < 0) {
		SET_MSG("negative a");
		return -1;
	}
	if (b < 0) {
		SET_MSG("negative b");
		return -2;
	}
	return 0;
}
"""


def test_a_new_numbered_static_does_not_change_the_ones_after_it(tmp_path: Path) -> None:
    same = '\tif (a == b) {\n\t\tSET_MSG("same");\n\t\treturn -3;\n\t}\n'
    after = MESSAGES.replace("\tif (b < 0) {", same + "\tif (b < 0) {")
    result = _diff(tmp_path, MESSAGES, after)
    assert changed(result) == ["check"]
    # "negative b" moved from __msg.1 to __msg.2: the same object, renamed.
    assert result.changed_data == []
    assert result.new_data == ["__msg.1"]
    assert result.renames["__msg.2"] == "__msg.1"


# The kernel's ``inline`` is notrace; GCC may still emit the function out of line.
INLINE = """\
extern void put(void *p);
static inline __attribute__((no_instrument_function, noinline)) void release(void **p)
{
\tput(p[0]);
\tput(p[1]);
}

void drop(void **p, int last)
{
\tif (last)
\t\trelease(p);
}
"""


@pytest.mark.parametrize("padding", [False, True], ids=["6.1", "call-padding"])
def test_a_static_inline_made_a_plain_function_is_no_change(tmp_path: Path, padding: bool) -> None:
    # The fix exports it to another file: it gains an ftrace entry, and its
    # callers reach it by name (PLT32) rather than through its section (PC32).
    # With 6.2+'s call padding the function starts 16 bytes into its section.
    after = INLINE.replace(
        "static inline __attribute__((no_instrument_function, noinline)) void",
        "__attribute__((noinline)) void",
    )
    flags = ["-fpatchable-function-entry=16,16"] if padding else []
    result = _diff(tmp_path, INLINE, after, *flags)
    assert result.changed == [] and result.new == []


# UBSAN's bounds checks (7.x): each check has a descriptor, .data..Lubsan_data<N>.
BOUNDS = """\
struct table { int v[8]; int n; };

int first(struct table *t, int i)
{
\treturn t->v[i];
}

int second(struct table *t, int i)
{
\treturn t->v[i + 1];
}
"""


def test_a_new_bounds_check_does_not_change_the_checks_after_it(tmp_path: Path) -> None:
    after = BOUNDS.replace("return t->v[i];", "return t->v[i] + t->v[t->n];")
    result = _diff(tmp_path, BOUNDS, after, "-fsanitize=bounds")
    assert changed(result) == ["first"]
    # A check that only moved down keeps its descriptor but for the line.
    moved = BOUNDS.replace("return t->v[i];", "int j = t->v[i];\n\treturn j;")
    result = _diff(tmp_path / "moved", BOUNDS, moved, "-fsanitize=bounds")
    assert changed(result) == []
