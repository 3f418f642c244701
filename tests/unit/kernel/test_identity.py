"""suture.kernel.identity: build id notes, the fake sysroot reader, taint and signing policy."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from suture.kernel.identity import NT_GNU_BUILD_ID, parse_build_id, read_identity
from tests.support.kernel import BUILD_ID, identity, note, put

DESC = bytes.fromhex(BUILD_ID)


def test_parse_build_id_skips_other_notes() -> None:
    notes = (
        note(b"Xen", 5, b"\x01\x02\x03")  # odd sizes: name and desc both padded
        + note(b"Linux", NT_GNU_BUILD_ID, b"not-a-build-id")  # right type, wrong owner
        + note(b"GNU", 1, b"\0" * 16)  # GNU ABI tag: right owner, wrong type
        + note(b"GNU", NT_GNU_BUILD_ID, DESC)
    )
    assert parse_build_id(notes) == BUILD_ID


def test_parse_build_id_odd_desc_length() -> None:
    desc = b"\xaa\xbb\xcc\xdd\xee"  # 5 bytes: padded to 8 on disk, but only 5 are the id
    notes = note(b"GNU", NT_GNU_BUILD_ID, desc) + note(b"GNU", NT_GNU_BUILD_ID, DESC)
    assert parse_build_id(notes) == "aabbccddee"


def test_note_layout_is_what_the_kernel_writes() -> None:
    raw = note(b"GNU", NT_GNU_BUILD_ID, DESC)
    assert struct.unpack_from("<III", raw) == (4, 20, NT_GNU_BUILD_ID)
    assert raw[12:16] == b"GNU\0"
    assert raw[16:] == DESC
    assert len(note(b"Linux", 1, b"abc")) == 12 + 8 + 4


@pytest.mark.parametrize(
    "notes",
    [
        b"",
        b"\x04\x00\x00",  # shorter than a note header
        note(b"Xen", 5, b"abc"),  # no GNU note
        note(b"GNU", NT_GNU_BUILD_ID, DESC)[:11],  # cut inside the first header
    ],
)
def test_parse_build_id_without_one(notes: bytes) -> None:
    assert parse_build_id(notes) == ""


def test_read_identity_from_fake_sysroot(tmp_path: Path) -> None:
    put(tmp_path, "proc/sys/kernel/osrelease", "6.1.0-56-amd64\n")
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/notes").write_bytes(
        note(b"Xen", 6, b"x86_64") + note(b"GNU", NT_GNU_BUILD_ID, DESC)
    )
    (tmp_path / "sys/kernel/livepatch").mkdir()
    put(tmp_path, "sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    put(tmp_path, "sys/module/module/parameters/sig_enforce", "Y\n")
    put(tmp_path, "proc/sys/kernel/tainted", "32769\n")
    put(tmp_path, "etc/os-release", 'NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')

    ident = read_identity(tmp_path)

    assert ident.release == "6.1.0-56-amd64"
    assert ident.build_id == BUILD_ID
    assert ident.arch == os.uname().machine
    assert ident.distro == "Debian GNU/Linux 12 (bookworm)"
    assert ident.livepatch is True
    assert ident.lockdown == "integrity"
    assert ident.sig_enforce is True
    assert ident.taint == 32769
    assert ident.taint_flags == "PK"  # bit 0 proprietary, bit 15 live patch
    assert ident.needs_signed_modules
    assert ident.to_dict()["taint_flags"] == "PK"
    assert ident.to_dict()["build_id"] == BUILD_ID


def test_read_identity_on_an_empty_sysroot(tmp_path: Path) -> None:
    ident = read_identity(tmp_path)
    assert ident.release == os.uname().release
    assert ident.build_id == ""
    assert ident.distro == ""
    assert ident.livepatch is False
    assert ident.lockdown == ""
    assert ident.sig_enforce is False
    assert ident.taint == 0
    assert ident.taint_flags == ""
    assert not ident.needs_signed_modules


def test_read_identity_sig_enforce_n(tmp_path: Path) -> None:
    put(tmp_path, "sys/module/module/parameters/sig_enforce", "N\n")
    put(tmp_path, "sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    put(tmp_path, "proc/sys/kernel/tainted", "\n")
    ident = read_identity(tmp_path)
    assert ident.sig_enforce is False
    assert ident.lockdown == "none"
    assert ident.taint == 0
    assert not ident.needs_signed_modules


@pytest.mark.parametrize(
    ("taint", "flags"),
    [
        (0, ""),
        (1, "P"),
        (1 << 12 | 1 << 13, "OE"),  # out-of-tree, unsigned
        (1 << 12 | 1 << 13 | 1 << 15, "OEK"),
        (1 << 9, "W"),
        (1 << 17, "T"),
    ],
)
def test_taint_flags(taint: int, flags: str) -> None:
    assert identity(taint=taint).taint_flags == flags


@pytest.mark.parametrize(
    ("lockdown", "sig_enforce", "needed"),
    [
        ("", False, False),
        ("none", False, False),
        ("none", True, True),
        ("integrity", False, True),
        ("confidentiality", False, True),
        ("", True, True),
    ],
)
def test_needs_signed_modules(lockdown: str, sig_enforce: bool, needed: bool) -> None:
    ident = identity(lockdown=lockdown, sig_enforce=sig_enforce)
    assert ident.needs_signed_modules is needed
