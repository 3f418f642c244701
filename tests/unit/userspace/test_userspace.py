"""Userspace patching without a process: frames, restart codes, images, headers, manifests."""

from __future__ import annotations

import struct

import pytest

from suture.builder import elfwrite as ew
from suture.bundle.manifest import Manifest, UserFunction
from suture.errors import BundleError, UserspaceError
from suture.userspace import image, remote, safety, unwind
from suture.userspace import ptrace as pt


def _regs(**values: int) -> pt.Regs:
    regs = pt.Regs()
    for k, v in values.items():
        setattr(regs, k, v)
    return regs


def test_an_interrupted_call_is_wound_back_so_that_it_restarts() -> None:
    r = remote.resumable(_regs(orig_rax=35, rax=(1 << 64) - 512, rip=0x1002))
    assert (r.rax, r.rip) == (35, 0x1000)
    block = remote.resumable(_regs(orig_rax=230, rax=(1 << 64) - 516, rip=0x2002))
    assert (block.rax, block.rip) == (remote.NR_RESTART, 0x2000)
    plain = remote.resumable(_regs(orig_rax=(1 << 64) - 1, rax=7, rip=0x3000))
    assert (plain.rax, plain.rip) == (7, 0x3000)


def _xstate(xcr0: int, in_use: int, size: int) -> bytes:
    data = bytearray(size)
    struct.pack_into("<Q", data, 464, xcr0)
    struct.pack_into("<Q", data, 512, in_use)
    return bytes(data)


def test_the_signal_frame_carries_the_xsave_area_with_its_magic_words() -> None:
    xs = remote.signal_xstate(_xstate(0x600E7, 0xA6, 11008))
    magic1, ext, feats, size = struct.unpack_from("<IIQI", xs, 464)
    assert (magic1, size, ext, feats) == (0x46505853, 2816, 2820, 0x200E7)
    assert struct.unpack_from("<I", xs, size)[0] == 0x46505845
    with pytest.raises(UserspaceError, match="AMX"):
        remote.signal_xstate(_xstate(0x600E7, 1 << 18, 11008))


def test_the_frame_restores_every_register_and_the_mask() -> None:
    saved = _regs(rip=0x401000, rsp=0x7FFF0000, rax=1, r15=15, cs=0x33, ss=0x2B, eflags=0x246)
    frame = remote.sigframe(saved, _xstate(0x7, 0x3, 832), 0x5, 0xDEAD)
    assert struct.unpack_from("<Q", frame, 0)[0] == 0xDEAD  # pretcode: __restore_rt
    gregs = struct.unpack_from("<18Q", frame, 48)
    assert gregs[7] == 15 and gregs[13] == 1 and gregs[16] == 0x401000  # r15, rax, rip
    assert struct.unpack_from("<Q", frame, 8 + 40 + 256)[0] == 0x5  # uc_sigmask
    assert len(frame) >= 448 + 832


def test_a_return_address_counts_only_after_a_call() -> None:
    assert safety._follows_call(b"\x90\x90\xe8\x00\x00\x00\x00")  # call rel32
    assert safety._follows_call(b"\x90\x90\x90\x90\x90\xff\xd0")  # call *%rax
    assert not safety._follows_call(b"\x90" * 7)


def _patch_object() -> bytes:
    """A function calling ``helper`` (addr) and ``malloc`` (got), reading ``table`` via GOT."""
    code = bytes.fromhex("e800000000e800000000488b0500000000c3")
    strtab = ew.StringTable()
    syms = [
        ew.OutSymbol("", 3, 1),
        ew.OutSymbol("__suture_new_f", (1 << 4) | 2, 1, 0, len(code)),
        ew.OutSymbol("helper", 1 << 4, 0),
        ew.OutSymbol("malloc", 1 << 4, 0),
        ew.OutSymbol("table", 1 << 4, 0),
    ]
    relas = [ew.OutRela(1, 4, 3, -4), ew.OutRela(6, 4, 4, -4), ew.OutRela(13, 42, 5, -4)]
    return ew.write([
        ew.OutSection(".text.f", ew.SHT.PROGBITS, 6, code, 16),
        ew.OutSection(".symtab", ew.SHT.SYMTAB, 0, ew.pack_symbols(syms, strtab), 8, 24,
                      link=3, info=2),
        ew.OutSection(".strtab", ew.SHT.STRTAB, 0, bytes(strtab.data)),
        ew.OutSection(".rela.text.f", ew.SHT.RELA, 0x40, ew.pack_relas(relas), 8, 24,
                      link=2, info=1),
    ])  # fmt: skip


def test_the_image_is_relocated_against_the_library() -> None:
    obj = image.PatchObject.parse(_patch_object())
    res = {
        "helper": image.Resolution("addr", 0x1000),
        "malloc": image.Resolution("got", 0x8000),
        "table": image.Resolution("addr", 0x9000),
    }
    base, at = 0x7F0000000000, 0x7EFFF0000000
    img = image.layout(obj, at, base, res)
    text = img.section_addr[1]
    call = struct.unpack_from("<i", img.blob, text - at + 1)[0]
    assert text + 5 + call == base + 0x1000
    stub = text + 10 + struct.unpack_from("<i", img.blob, text - at + 6)[0]
    assert img.blob[stub - at : stub - at + 2] == b"\xff\x25"  # jmp *slot(%rip)
    slot = stub + 6 + struct.unpack_from("<i", img.blob, stub - at + 2)[0]
    assert slot == base + 0x8000  # the library's own GOT slot of malloc
    got = text + 17 + struct.unpack_from("<i", img.blob, text - at + 13)[0]
    assert struct.unpack_from("<Q", img.blob, got - at)[0] == base + 0x9000
    assert img.text_size % image.PAGE == 0


def test_a_name_without_a_place_is_refused() -> None:
    obj = image.PatchObject.parse(_patch_object())
    with pytest.raises(UserspaceError, match="does not place"):
        image.layout(obj, 0x10000000, 0x20000000, {})


def test_the_header_page_is_read_back() -> None:
    page = image.header({"name": "p", "level": 2})
    assert image.parse_header(page + bytes(10)) == (image.State.STAGED, {"name": "p", "level": 2})
    live = image.header({"name": "p"}, image.State.LIVE)
    assert image.parse_header(live) == (image.State.LIVE, {"name": "p"})
    assert image.parse_header(live[: image.STATE_AT] + b"?" + live[image.STATE_AT + 1 :]) is None
    assert image.parse_header(b"\0" * 64) is None


def _manifest(**kw: object) -> Manifest:
    base: dict[str, object] = {
        "name": "fix", "release": "libc.so.6", "build_id": "ab" * 20, "level": 1,
        "module_file": "fix.o", "module_sha256": "0" * 64, "module_size": 3,
        "kind": "userspace", "package": "glibc", "version": "2.36-9+deb12u14",
        "userspace_functions": (UserFunction("f", 16, 40, "1" * 64, "__suture_new_f"),),
        "userspace_symbols": {"g": ("got", 64)},
    }  # fmt: skip
    base.update(kw)
    return Manifest(**base)  # type: ignore[arg-type]


def test_a_userspace_manifest_round_trips() -> None:
    m = _manifest()
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert b'"kind": "userspace"' in m.to_json()


def test_a_userspace_manifest_names_its_object_and_functions() -> None:
    with pytest.raises(BundleError, match=r"fix\.o"):
        _manifest(module_file="fix.ko").validate()
    with pytest.raises(BundleError, match="no function"):
        _manifest(userspace_functions=()).validate()


def test_leb128_and_the_cfa_rows_of_a_function() -> None:
    assert unwind._uleb(bytes([0xE5, 0x8E, 0x26]), 0) == (624485, 3)
    assert unwind._sleb(bytes([0x7F]), 0) == (-1, 1)
    cie = unwind._Cie(1, -8, 16, 0x1B, False, bytes([0x0C, 7, 8, 0x90, 1]))  # cfa rsp+8, ra cfa-8
    # push %rbp (1 byte): cfa rsp+16, rbp at cfa-16; mov %rsp,%rbp (3): cfa rbp+16
    program = bytes([0x41, 0x0E, 16, 0x86, 2, 0x43, 0x0D, 6])
    first = unwind._row_at(cie, 0x1000, program, 0x1000)
    assert (first.cfa_reg, first.cfa_off, first.rules[16]) == (7, 8, ("o", -8))
    pushed = unwind._row_at(cie, 0x1000, program, 0x1001)
    assert (pushed.cfa_reg, pushed.cfa_off, pushed.rules[6]) == (7, 16, ("o", -16))
    framed = unwind._row_at(cie, 0x1000, program, 0x1010)
    assert (framed.cfa_reg, framed.cfa_off) == (6, 16)


def test_the_plt_cfa_expression_is_evaluated() -> None:
    # What ld writes for .plt: rsp + 8 + ((rip & 15) >= 11) << 3
    expr = bytes([0x77, 8, 0x80, 0, 0x3F, 0x1A, 0x3B, 0x2A, 0x33, 0x24, 0x22])
    mem = unwind._Memory(0, 0, b"")
    assert unwind._evaluate(expr, {7: 0x1000, 16: 0x4010}, mem, None) == 0x1008
    assert unwind._evaluate(expr, {7: 0x1000, 16: 0x401B}, mem, None) == 0x1010
    with pytest.raises(unwind.Unwindable):
        unwind._evaluate(bytes([0x96]), {}, mem, None)  # DW_OP_nop is not one .eh_frame uses


def test_publish_checks_a_userspace_patch_object_not_a_kernel_module() -> None:
    from suture.bundle import module  # noqa: PLC0415

    module.check(_manifest(), _patch_object())  # loads, defines __suture_new_f
    with pytest.raises(BundleError, match="does not define __suture_new_g"):
        fn = UserFunction("g", 16, 40, "1" * 64, "__suture_new_g")
        module.check(_manifest(userspace_functions=(fn,)), _patch_object())
    with pytest.raises(BundleError, match="not the userspace patch"):
        module.check(_manifest(), b"\x7fELF" + bytes(60))
