"""Link the patch objects into a livepatch module with kbuild, then add the klp relocations.

A small generated C file holds the ``klp_patch`` (one ``klp_object`` per
patched object, one ``klp_func`` per function, atomic replace on: levels are
cumulative) and the module's info. kbuild links it with the extracted patch
objects (one per changed file) against the target build's headers, so vermagic and symbol CRCs are
that build's; modpost is told to let the unexported references through,
because :mod:`suture.builder.klp` turns them into klp relocations afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from suture.builder import klp
from suture.builder.kbuild import BUILD_JOBS
from suture.builder.prematch import Expected
from suture.errors import BuildError, KbuildError
from suture.packages.toolchain import Toolchain


@dataclass(frozen=True)
class PatchedFunction:
    """One ``klp_func``."""

    name: str  # in the kernel
    new_symbol: str  # global symbol of the new code in the patch object
    sympos: int = 0


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


CALLBACK_KINDS = ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")


@dataclass(frozen=True)
class KlpObject:
    """One ``klp_object``: vmlinux or a module, its functions and callbacks.

    ``expected`` runs beside ``functions``: each function's expected old
    bytes for the pre-match check (:mod:`suture.builder.prematch`), or None
    where it is not checked.
    """

    name: str  # vmlinux or the module's name
    functions: Sequence[PatchedFunction]
    callbacks: Mapping[str, str] = field(default_factory=dict)  # kind -> new code's symbol
    expected: Sequence[Expected | None] = ()
    # kind -> a C function of the stub's run-time part (patch_runtime.py), which
    # calls the fix's own callback of that kind, if any, itself.
    runtime_callbacks: Mapping[str, str] = field(default_factory=dict)


def _object_source(index: int, obj: KlpObject) -> tuple[str, str]:
    """The ``klp_func`` array of one object and its ``klp_object`` initializer."""
    funcs = "\n".join(
        f"\t{{ .old_name = {_c_string(f.name)}, .new_func = {f.new_symbol}, "
        f".old_sympos = {f.sympos} }},"
        for f in obj.functions
    )
    array = f"static struct klp_func suture_funcs{index}[] = {{\n{funcs}\n\t{{}}\n}};\n"
    wired = {kind: f"(void *){sym}" for kind, sym in obj.callbacks.items()}
    wired.update(obj.runtime_callbacks)
    if _checks(obj):
        # The check first; then the run-time part's pre-patch callback, or the fix's own.
        wired["pre_patch"] = f"suture_prematch_pre_patch{index}"
    cb_fields = "".join(f"\t\t.{kind} = {fn},\n" for kind, fn in sorted(wired.items()))
    cb_init = f", .callbacks = {{\n{cb_fields}\t}}" if wired else ""
    name = "NULL" if obj.name == "vmlinux" else _c_string(obj.name)
    return array, f"\t{{ .name = {name}, .funcs = suture_funcs{index}{cb_init} }},\n"


def _checks(obj: KlpObject) -> bool:
    return any(e is not None for e in obj.expected)


def _bytes(name: str, data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    body = ",\n\t".join(rows) or "0"
    return f"static const unsigned char {name}[] = {{\n\t{body}\n}};\n"


def _prematch_source(objects: Sequence[KlpObject]) -> str:
    """The expected bytes, their tables, the check, and each object's pre-patch callback."""
    checked = [(i, o) for i, o in enumerate(objects) if _checks(o)]
    if not checked:
        return ""
    parts = [_PREMATCH_TYPES]
    tables = []
    for i, obj in checked:
        rows = []
        for j, (f, e) in enumerate(zip(obj.functions, obj.expected, strict=True)):
            if e is None:
                rows.append(f"\t{{ {_c_string(f.name)}, 0, NULL, NULL }},")
                continue
            parts.append(_bytes(f"suture_code{i}_{j}", e.code))
            parts.append(_bytes(f"suture_mask{i}_{j}", e.mask))
            arrays = f"suture_code{i}_{j}, suture_mask{i}_{j}"
            rows.append(f"\t{{ {_c_string(f.name)}, {len(e.code)}, {arrays} }},")
        parts.append(
            f"static const struct suture_expect suture_expect{i}[] = {{\n"
            + "\n".join(rows)
            + "\n};\n"
        )
        tables.append(
            f"\t{{ suture_funcs{i}, suture_expect{i}, {len(rows)}, {_c_string(obj.name)} }},"
        )
    parts.append(
        "static const struct suture_table suture_tables[] = {\n" + "\n".join(tables) + "\n};\n"
    )
    parts.append(_PREMATCH_CHECK)
    for i, obj in checked:
        runtime, own = obj.runtime_callbacks.get("pre_patch"), obj.callbacks.get("pre_patch")
        if runtime:
            then = f"{runtime}(obj)"
        elif own:
            then = f"((int (*)(struct klp_object *))(void *){own})(obj)"
        else:
            then = "0"
        parts.append(
            f"static int suture_prematch_pre_patch{i}(struct klp_object *obj)\n{{\n"
            f"\tint ret = suture_prematch();\n\n\tif (ret)\n\t\treturn ret;\n"
            f"\treturn {then};\n}}\n"
        )
    return "\n".join(parts)


# Shared by every generated module that checks its functions (see prematch.py).
_PREMATCH_TYPES = """\
struct suture_expect {
\tconst char *name;
\tunsigned long size;\t/* 0: not checked */
\tconst unsigned char *code;
\tconst unsigned char *mask;\t/* 1: must match; 0: filled in or rewritten at run time */
};

struct suture_table {
\tstruct klp_func *funcs;
\tconst struct suture_expect *expect;
\tint count;
\tconst char *object;
};

/* The functions refused so far, "object:function ...": suture status reads it. */
static char suture_refused[512];
module_param_string(prematch, suture_refused, sizeof(suture_refused), 0444);
MODULE_PARM_DESC(prematch, "functions whose code was not what this patch was built for");
"""

_PREMATCH_CHECK = """\
/*
 * Every function of every object the kernel has resolved (vmlinux, and the
 * modules loaded now) must be the code this patch was built against, before
 * any task is switched to the new code. Run in each object's pre-patch
 * callback: at load for what is loaded, and again as each module loads.
 */
static int suture_prematch(void)
{
\tconst struct suture_table *tab;
\tconst struct suture_expect *e;
\tconst unsigned char *at;
\tunsigned char byte;
\tunsigned long k;
\tchar entry[200];
\tint t, i;

\tfor (t = 0; t < ARRAY_SIZE(suture_tables); t++) {
\t\ttab = &suture_tables[t];
\t\tfor (i = 0; i < tab->count; i++) {
\t\t\te = &tab->expect[i];
\t\t\tat = tab->funcs[i].old_func;
\t\t\tif (!at || !e->size)
\t\t\t\tcontinue;\t/* not loaded now, or not checked */
\t\t\tk = tab->funcs[i].old_size;
\t\t\tif (k < e->size)
\t\t\t\tgoto refused;
\t\t\tfor (k = 0; k < e->size; k++) {
\t\t\t\tif (!e->mask[k])
\t\t\t\t\tcontinue;
\t\t\t\tif (copy_from_kernel_nofault(&byte, at + k, 1) || byte != e->code[k])
\t\t\t\t\tgoto refused;
\t\t\t}
\t\t}
\t}
\treturn 0;

refused:
\tpr_err("suture: pre-match: %s: %s:%s is not the code this patch was built for "
\t       "(byte %lu of %lu): refused\\n", THIS_MODULE->name, tab->object, e->name, k, e->size);
\tsnprintf(entry, sizeof(entry), "%s:%s ", tab->object, e->name);
\tif (!strstr(suture_refused, entry))
\t\tstrlcat(suture_refused, entry, sizeof(suture_refused));
\treturn -EILSEQ;
}
"""


def stub_source(
    name: str, objects: Sequence[KlpObject], info: Mapping[str, str], runtime: str = ""
) -> str:
    """The C source of the module's livepatch structures: one ``klp_object`` per object.

    ``runtime`` is C placed before them: the functions ``runtime_callbacks`` name.

    Raises:
        BuildError: no object, or an object listed twice.
    """
    names = [o.name for o in objects]
    if not objects or len(set(names)) != len(names):
        raise BuildError(f"the patched objects {names} are none or repeat one")
    symbols = sorted(
        {f.new_symbol for o in objects for f in o.functions}
        | {s for o in objects for s in o.callbacks.values()}
    )
    externs = "\n".join(f"extern char {s}[];" for s in symbols)
    parts = [_object_source(i, o) for i, o in enumerate(objects)]
    arrays = "\n".join(a for a, _ in parts) + "\n" + _prematch_source(objects)
    objs = "".join(o for _, o in parts)
    infos = "\n".join(f"MODULE_INFO({k}, {_c_string(v)});" for k, v in sorted(info.items()))
    return f"""// SPDX-License-Identifier: GPL-2.0
/* Generated by Suture: the live patch {name}. */
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/string.h>
#include <linux/uaccess.h>

{externs}
{runtime}
{arrays}
static struct klp_object suture_objs[] = {{
{objs}\t{{}}
}};

static struct klp_patch suture_patch = {{
\t.mod = THIS_MODULE,
\t.objs = suture_objs,
\t.replace = true,
}};

static int __init suture_patch_init(void)
{{
\treturn klp_enable_patch(&suture_patch);
}}

static void __exit suture_patch_exit(void)
{{
}}

module_init(suture_patch_init);
module_exit(suture_patch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
{infos}
"""


def link(
    headers_dir: Path,
    work: Path,
    *,
    name: str,
    patch_objects: Sequence[bytes],
    stub: str,
    klp_symbols: Mapping[str, klp.KlpSymbol],
    toolchain: Toolchain | None = None,
) -> Path:
    """Build ``<work>/<name>.ko`` from the patch objects and convert its klp references.

    Returns the module's path. kbuild runs with ``toolchain`` (the build's
    compiler, in its build root), or on the host when None.

    Raises:
        KbuildError: kbuild failed (its messages are in the error).
    """
    work.mkdir(parents=True, exist_ok=True)
    objs = []
    for i, data in enumerate(patch_objects):
        obj = "suture_patch_obj.o" if i == 0 else f"suture_patch_obj{i}.o"
        (work / obj).write_bytes(data)
        # modpost reads every object's .cmd file (for the module's srcversion).
        (work / f".{obj}.cmd").write_text(f"cmd_{work}/{obj} := suture extract\n")
        objs.append(obj)
    (work / "suture_stub.c").write_text(stub)
    (work / "Kbuild").write_text(f"obj-m := {name}.o\n{name}-y := suture_stub.o {' '.join(objs)}\n")
    argv = ["make", "-s", f"-j{BUILD_JOBS}", "-C", str(headers_dir), f"M={work}",
            "KBUILD_MODPOST_WARN=1", "modules"]  # fmt: skip
    if toolchain is not None:
        # The build's own compiler, not whatever `gcc` is where it runs.
        argv = toolchain.wrap([*argv, f"CC={toolchain.cc}"], cwd=work, paths=(headers_dir,))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    ko = work / f"{name}.ko"
    if proc.returncode != 0 or not ko.exists():
        raise KbuildError(
            f"linking the live patch module failed:\n{proc.stderr.strip()[-3000:]}",
            hint="this is a Suture bug: please report it with the fix",
        )
    ko.write_bytes(klp.convert(ko.read_bytes(), klp_symbols))
    return ko
