"""Strings the image's .rodata already holds: the patch refers to them instead of copies."""

from __future__ import annotations

from suture.builder.image_refs import ImageIndex, KernelStrings, LoadedSection
from suture.builder.symbols import parse_kallsyms

BASE = 0xFFFFFFFF82000000
#       0 1 2  3 4 5 6 7 8  9...
DATA = b"xx\0__u64\0u64\0abcdefgh\0\0\0abcdefgh\0"


def strings(kallsyms: str = f"{BASE:x} D __start_rodata\n") -> KernelStrings:
    ksyms = parse_kallsyms(kallsyms)
    return KernelStrings(ImageIndex([LoadedSection(".rodata", BASE, DATA, False)], ksyms), ksyms)


def test_a_string_the_kernel_holds_is_found_by_its_bytes() -> None:
    found = strings()
    assert found.find(b"u64\0", 1) == ("__start_rodata", 5)  # the tail of "__u64" will do
    assert found.find(b"abcdefgh\0", 1) == ("__start_rodata", 13)
    assert found.find(b"abcdefgh\0", 8) == ("__start_rodata", 24)  # its section's alignment
    assert found.find(b"=%lu\0", 1) is None  # a new string stays in the patch


def test_without_the_anchor_nothing_is_found() -> None:
    assert strings("").find(b"u64\0", 1) is None
