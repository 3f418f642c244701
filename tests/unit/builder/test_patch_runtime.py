"""The run-time C of a patch: slot tables, chained callbacks, the vmlinux handover.

The C itself is compiled and run by the guest tests (tests/kernel/test_data.py);
here its shape is checked: what each object's callbacks call, and which
symbols the livepatch core resolves for the slot table.
"""

from __future__ import annotations

import re

from suture.builder import module, patch_runtime
from suture.builder.klp import KlpSymbol
from suture.builder.slots import Home, Slot

NOP = patch_runtime.SlotRedirect(
    Slot("nop_trace", 0x70, ".data..read_mostly", Home.WRITABLE),
    KlpSymbol("vmlinux", "nop_trace", 0),
    KlpSymbol("vmlinux", "nop_set_flag", 0),
    "__suture_new_nop_set_flag",
)
NB = patch_runtime.SlotRedirect(
    Slot("crc_t10dif_nb", 0, ".data", Home.WRITABLE),
    KlpSymbol("crc_t10dif", "crc_t10dif_nb", 0),
    KlpSymbol("crc_t10dif", "crc_t10dif_notify", 0),
    "__suture_new_1_crc_t10dif_notify",
)


def _body(source: str, function: str) -> str:
    match = re.search(rf"\n\w[^\n]* {function}\(struct klp_object \*obj\)\n\{{\n(.*?)\n\}}\n",
                      source, re.DOTALL)  # fmt: skip
    assert match, function
    return match.group(1)


def test_slots_are_named_to_the_core_by_symbol_and_offset() -> None:
    rt = patch_runtime.runtime(
        [
            patch_runtime.ObjectRuntime("vmlinux", [NOP]),
            patch_runtime.ObjectRuntime("crc_t10dif", [NB]),
        ]
    )
    assert rt.klp_symbols == {
        "__suture_slot_0_0": KlpSymbol("vmlinux", "nop_trace", 0),
        "__suture_slotfn_0_0": KlpSymbol("vmlinux", "nop_set_flag", 0),
        "__suture_slot_1_0": KlpSymbol("crc_t10dif", "crc_t10dif_nb", 0),
        "__suture_slotfn_1_0": KlpSymbol("crc_t10dif", "crc_t10dif_notify", 0),
    }
    assert (
        "{ .obj = 0, .where = (unsigned long *)(__suture_slot_0_0 + 112), "
        ".old = (unsigned long)__suture_slotfn_0_0, "
        '.new = (unsigned long)__suture_new_nop_set_flag, .name = "nop_trace+0x70" },'
    ) in rt.source
    assert "#define SUTURE_SLOT_RECORD 0x5375747572650001UL" in rt.source


def test_vmlinux_hands_over_and_a_module_forgets_its_relocations() -> None:
    rt = patch_runtime.runtime(
        [patch_runtime.ObjectRuntime("vmlinux"), patch_runtime.ObjectRuntime("crc_t10dif", [NB])]
    )
    assert _body(rt.source, "suture_post_patch_0").split() == [
        "suture_slots_handover();", "suture_slots_set(0);",
    ]  # fmt: skip
    assert "handover" not in _body(rt.source, "suture_post_patch_1")
    assert "suture_slots_forget(1);" in _body(rt.source, "suture_post_unpatch_1")
    assert "forget" not in _body(rt.source, "suture_post_unpatch_0")
    assert rt.callbacks["crc_t10dif"] == {
        "pre_patch": "suture_pre_patch_1",
        "post_patch": "suture_post_patch_1",
        "pre_unpatch": "suture_pre_unpatch_1",
        "post_unpatch": "suture_post_unpatch_1",
    }


def test_the_fixs_own_callbacks_are_chained_and_pins_taken_after_its_pre_patch() -> None:
    obj = patch_runtime.ObjectRuntime(
        "vmlinux", [NOP], pins=["show hands out the address of the copy of ops"],
        callbacks={"pre_patch": "__suture_new_my_pre", "pre_unpatch": "__suture_new_my_down"},
    )  # fmt: skip
    rt = patch_runtime.runtime([obj])
    pre = _body(rt.source, "suture_pre_patch_0")
    check, fix, pin = (pre.index(s) for s in ("slots_check", "__suture_new_my_pre", "hold"))
    assert check < fix < pin  # nothing pinned when the fix's own pre-patch refuses
    assert 'suture_hold("show hands out the address of the copy of ops");' in pre
    down = _body(rt.source, "suture_pre_unpatch_0")
    assert down.index("__suture_new_my_down") < down.index("suture_slots_restore(0)")


def test_the_stub_wires_the_run_time_callbacks() -> None:
    rt = patch_runtime.runtime([patch_runtime.ObjectRuntime("vmlinux", [NOP])])
    stub = module.stub_source(
        "suture_x",
        [module.KlpObject("vmlinux", [], runtime_callbacks=rt.callbacks["vmlinux"])],
        {},
        runtime=rt.source,
    )
    assert "static struct klp_func suture_funcs0[] = {\n\n\t{}\n};" in stub
    assert ".pre_patch = suture_pre_patch_0," in stub
    assert stub.index("struct suture_slot {") < stub.index("static struct klp_object suture_objs")
    assert "module_param_named(kept, suture_kept, bool, 0444);" in stub
