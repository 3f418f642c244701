"""The C a patch runs around its transitions: redirected slots, their handover, keeping the module.

Generated into the module's stub (module.py) as the callbacks of every
``klp_object``, chained with the callbacks the fix registers itself:

- ``pre_patch``: each slot of the object must hold the kernel's function, or
  the copy an older Suture level stored there (its record says so), and be
  8-byte aligned; otherwise the callback fails with -EINVAL and the kernel
  stays unpatched (a module whose slot is wrong refuses to load). An object
  whose patched code hands out addresses of the patch's data pins the
  module here, before any of that code can run.
- ``post_patch`` (after the transition): vmlinux's first hands over from the
  level this patch replaced, whose own callbacks the core never calls
  (Documentation/livepatch/cumulative-patches.rst): every slot an older
  level redirected has a shadow variable keyed on the slot's address
  (``klp_shadow_*``) recording the kernel's function and the copy stored;
  ``klp_shadow_free_all()`` with a destructor puts the original back in
  each slot this patch does not redirect, and notes the older copy in each
  it does. Then each slot gets the carried copy's address (one aligned
  ``cmpxchg``, so a slot that changed meanwhile is left alone, with a
  warning), a record of its own, and the module is pinned for good.
- ``pre_unpatch`` (before the transition back): each slot this patch set is
  put back to the kernel's function, if it still holds our copy, and its
  record freed.
- ``post_unpatch``: a module's slot addresses (klp relocations applied when
  it loaded) are cleared, so they apply again if it loads again.

Why the module stays loaded once a slot pointed into it (ADR 14): a task may
have loaded the pointer and not yet called it, or be running (or sleeping
in) the carried copy it reached through the slot. The livepatch core's
stack checks only look for the patch's ``klp_func`` code, and nothing tells
when such a task is done, so no point in time makes freeing the copy safe.
The module takes a reference on itself instead, says so in
``/sys/module/<name>/parameters/kept``, and ``suture unload`` disables the
patch and leaves the module loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from suture.builder.klp import KlpSymbol
from suture.builder.slots import Slot

# The klp shadow id of a slot record: "Suture" and the record's layout version.
SLOT_RECORD_ID = 0x5375747572650001
# Why a module that redirected a slot stays loaded (the kernel log and build report say it).
SLOT_PIN = "a pointer stored in the kernel leads into it"


@dataclass(frozen=True)
class SlotRedirect:
    """One stored pointer the patch redirects to a carried copy."""

    slot: Slot
    owner: KlpSymbol  # the data object that holds the pointer
    old: KlpSymbol  # the kernel's function the slot must hold
    new_symbol: str  # the carried copy's global symbol in the module

    @property
    def name(self) -> str:
        """How messages name the slot: ``nop_trace+0x70``."""
        return f"{self.slot.symbol}+{self.slot.offset:#x}"


@dataclass(frozen=True)
class ObjectRuntime:
    """What one ``klp_object`` runs: its slots, whether it pins, the fix's own callbacks."""

    name: str  # vmlinux or a module
    slots: Sequence[SlotRedirect] = ()
    pins: Sequence[str] = ()  # why the object's patched code makes the module stay
    callbacks: Mapping[str, str] = field(default_factory=dict)  # the fix's: kind -> symbol


@dataclass(frozen=True)
class Runtime:
    """The generated C and how the stub wires it."""

    source: str
    callbacks: dict[str, dict[str, str]]  # object -> kind -> C function of ``source``
    klp_symbols: dict[str, KlpSymbol]  # undefined symbols of ``source`` -> klp symbols


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEAD = r"""
/*
 * Suture's run-time part (ADR 14): pointers stored in data redirected to the
 * carried copies, handed over between cumulative levels, and the module kept
 * loaded once anything may point into it.
 */
#include <linux/moduleparam.h>
#include <linux/printk.h>

#define SUTURE_SLOT_RECORD @RECORD@UL

struct suture_slot {
	int obj;			/* index of its klp_object */
	unsigned long *where;		/* symbol + offset: a klp relocation */
	unsigned long old;		/* the kernel's function: a klp relocation */
	unsigned long new;		/* the carried copy in this module */
	const char *name;		/* symbol+offset, for messages; NULL ends the table */
	unsigned long prev;		/* an older level's copy found there */
	bool set;			/* this patch stored its copy there */
};

/* Kept per slot in a klp shadow variable keyed on the slot's address. */
struct suture_slot_record {
	unsigned long orig;		/* the kernel's own function */
	unsigned long installed;	/* the copy the live patch stored */
};

static bool suture_held;
static bool suture_kept;
module_param_named(kept, suture_kept, bool, 0444);
MODULE_PARM_DESC(kept, "Y once the kernel may point into this module: it then stays loaded");

"""

# After the slot table: what the callbacks do with it.
_FUNCTIONS = r"""
/* Take a reference on ourselves that is never dropped (see ADR 14). */
static void suture_hold(const char *why)
{
	if (suture_held)
		return;
	__module_get(THIS_MODULE);
	suture_held = true;
	WRITE_ONCE(suture_kept, true);
	pr_info("%s: the module stays loaded: %s\n", KBUILD_MODNAME, why);
}

static int suture_slots_check(int obj)
{
	struct suture_slot *s;

	for (s = suture_slots; s->name; s++) {
		struct suture_slot_record *rec;
		unsigned long now, want;

		if (s->obj != obj)
			continue;
		if (!IS_ALIGNED((unsigned long)s->where, sizeof(unsigned long))) {
			pr_err("%s: %s is not 8-byte aligned: not patching\n",
				KBUILD_MODNAME, s->name);
			return -EINVAL;
		}
		now = READ_ONCE(*s->where);
		rec = klp_shadow_get(s->where, SUTURE_SLOT_RECORD);
		want = rec && rec->orig == s->old ? rec->installed : s->old;
		if (now != want) {
			pr_err("%s: %s holds %pS, not %pS: not patching\n",
				KBUILD_MODNAME, s->name, (void *)now, (void *)want);
			return -EINVAL;
		}
	}
	return 0;
}

static bool suture_slot_ours(unsigned long *where)
{
	struct suture_slot *s;

	for (s = suture_slots; s->name; s++)
		if (s->where && s->where == where)
			return true;
	return false;
}

/* Destructor of an older level's record: put the original back unless we take over. */
static void suture_slot_release(void *obj, void *data)
{
	struct suture_slot_record *rec = data;
	unsigned long *where = obj;

	if (suture_slot_ours(where))
		return;
	if (cmpxchg(where, rec->installed, rec->orig) != rec->installed)
		pr_warn("%s: a slot at %px no longer holds %pS: left as it is\n",
			KBUILD_MODNAME, where, (void *)rec->installed);
}

/* After the transition: take over or undo what the replaced level redirected. */
static void suture_slots_handover(void)
{
	struct suture_slot *s;

	for (s = suture_slots; s->name; s++) {
		struct suture_slot_record *rec;

		if (!s->where)
			continue;	/* a module that is not loaded */
		rec = klp_shadow_get(s->where, SUTURE_SLOT_RECORD);
		s->prev = rec && rec->orig == s->old ? rec->installed : 0;
	}
	klp_shadow_free_all(SUTURE_SLOT_RECORD, suture_slot_release);
}

static void suture_slots_set(int obj)
{
	struct suture_slot *s;

	for (s = suture_slots; s->name; s++) {
		struct suture_slot_record *rec;
		unsigned long want = s->prev ? s->prev : s->old;

		if (s->obj != obj)
			continue;
		s->prev = 0;
		rec = klp_shadow_get_or_alloc(s->where, SUTURE_SLOT_RECORD,
				sizeof(*rec), GFP_KERNEL, NULL, NULL);
		if (!rec) {
			pr_warn("%s: no memory to record %s: it keeps %pS\n", KBUILD_MODNAME,
				s->name, (void *)want);
			continue;
		}
		rec->orig = s->old;
		rec->installed = s->new;
		suture_hold(@SLOT_PIN@);
		if (cmpxchg(s->where, want, s->new) != want) {
			pr_warn("%s: %s changed since it was checked: left as it is\n",
				KBUILD_MODNAME, s->name);
			klp_shadow_free(s->where, SUTURE_SLOT_RECORD, NULL);
			continue;
		}
		s->set = true;
	}
}

static void suture_slots_restore(int obj)
{
	struct suture_slot *s;

	for (s = suture_slots; s->name; s++) {
		if (s->obj != obj || !s->set)
			continue;
		s->set = false;
		if (cmpxchg(s->where, s->new, s->old) != s->new)
			pr_warn("%s: %s no longer holds our copy: left as it is\n",
				KBUILD_MODNAME, s->name);
		klp_shadow_free(s->where, SUTURE_SLOT_RECORD, NULL);
	}
}

/* A module went: its relocated fields go back to zero, so they apply again on its next load. */
static void suture_slots_forget(int obj)
{
	struct suture_slot *s;

	for (s = suture_slots; s->name; s++) {
		if (s->obj != obj)
			continue;
		WRITE_ONCE(s->where, NULL);
		WRITE_ONCE(s->old, 0);
	}
}
"""


def _slot_table(objects: Sequence[ObjectRuntime]) -> tuple[str, dict[str, KlpSymbol], list[str]]:
    rows, klp, externs = [], {}, []
    for index, obj in enumerate(objects):
        for k, r in enumerate(obj.slots):
            where, old = f"__suture_slot_{index}_{k}", f"__suture_slotfn_{index}_{k}"
            klp[where], klp[old] = r.owner, r.old
            externs += [where, old, r.new_symbol]
            rows.append(
                f"\t{{ .obj = {index}, .where = (unsigned long *)({where} + {r.slot.offset}), "
                f".old = (unsigned long){old}, .new = (unsigned long){r.new_symbol}, "
                f".name = {_c_string(r.name)} }},"
            )
    rows.append("\t{ }")
    decls = "".join(f"extern char {s}[];\n" for s in sorted(set(externs)))
    table = "static struct suture_slot suture_slots[] = {\n" + "\n".join(rows) + "\n};\n"
    return decls + "\n" + table, klp, externs


def _call(kind: str, obj: ObjectRuntime) -> str:
    """A call of the fix's own callback of ``kind``, or nothing."""
    sym = obj.callbacks.get(kind)
    if sym is None:
        return ""
    if kind == "pre_patch":
        return (
            f"\tret = ((int (*)(struct klp_object *))(void *){sym})(obj);\n"
            "\tif (ret)\n\t\treturn ret;\n"
        )
    return f"\t((void (*)(struct klp_object *))(void *){sym})(obj);\n"


def _callbacks(index: int, obj: ObjectRuntime) -> str:
    pin = ""
    if obj.pins:
        pin = f"\tsuture_hold({_c_string('; '.join(obj.pins))});\n"
    handover = "\tsuture_slots_handover();\n" if obj.name == "vmlinux" else ""
    forget = "" if obj.name == "vmlinux" else f"\tsuture_slots_forget({index});\n"
    return f"""
static int suture_pre_patch_{index}(struct klp_object *obj)
{{
\tint ret = suture_slots_check({index});

\tif (ret)
\t\treturn ret;
{_call("pre_patch", obj)}{pin}\treturn 0;
}}

static void suture_post_patch_{index}(struct klp_object *obj)
{{
{handover}\tsuture_slots_set({index});
{_call("post_patch", obj)}}}

static void suture_pre_unpatch_{index}(struct klp_object *obj)
{{
{_call("pre_unpatch", obj)}\tsuture_slots_restore({index});
}}

static void suture_post_unpatch_{index}(struct klp_object *obj)
{{
{_call("post_unpatch", obj)}{forget}}}
"""


def runtime(objects: Sequence[ObjectRuntime]) -> Runtime:
    """The run-time C for a patch's objects (vmlinux first, as in its ``klp_patch``)."""
    table, klp, _ = _slot_table(objects)
    head = _HEAD.replace("@RECORD@", f"{SLOT_RECORD_ID:#x}")
    source = head + "\n" + table + _FUNCTIONS.replace("@SLOT_PIN@", _c_string(SLOT_PIN))
    source += "".join(_callbacks(i, o) for i, o in enumerate(objects))
    kinds = ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")
    wired = {o.name: {k: f"suture_{k}_{i}" for k in kinds} for i, o in enumerate(objects)}
    return Runtime(source, wired, klp)
