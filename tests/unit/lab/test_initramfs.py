"""suture.lab.initramfs: the newc cpio writer, read back by GNU cpio and by hand."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from suture.lab.initramfs import CpioWriter

HEADER = 110  # "070701" and 13 fields of 8 hex digits
FIELDS = (
    "ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
    "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check",
)  # fmt: skip
INIT = b"#!/bin/sh\necho hello from init\n"


def archive() -> bytes:
    cpio = CpioWriter()
    cpio.directory("bin")
    cpio.directory("dev")
    cpio.chardev("dev/console", 5, 1)
    cpio.file("init", INIT, 0o755)
    cpio.file("bin/a", b"x")  # name and data lengths that need padding
    cpio.file("bin/empty", b"")
    return cpio.finish()


def entries(data: bytes) -> list[tuple[int, str, dict[str, int], bytes]]:
    """(offset, name, header fields, data) of every entry, checking alignment on the way."""
    out = []
    offset = 0
    while True:
        assert offset % 4 == 0, f"entry at {offset} is not 4-byte aligned"
        assert data[offset : offset + 6] == b"070701"
        fields = {
            k: int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i, k in enumerate(FIELDS)
        }
        name_end = offset + HEADER + fields["namesize"]
        name = data[offset + HEADER : name_end - 1].decode()
        assert data[name_end - 1] == 0
        start = (name_end + 3) & ~3
        assert data[name_end:start] == b"\0" * (start - name_end)
        body = data[start : start + fields["filesize"]]
        out.append((offset, name, fields, body))
        offset = (start + fields["filesize"] + 3) & ~3
        if name == "TRAILER!!!":
            assert offset == len(data)
            return out


def cpio_tool() -> str:
    tool = shutil.which("cpio")
    if tool is None:
        pytest.skip("cpio is not installed")
    return tool


def test_layout_and_alignment() -> None:
    data = archive()
    assert len(data) % 4 == 0
    parsed = entries(data)
    assert [name for _, name, _, _ in parsed] == [
        "bin",
        "dev",
        "dev/console",
        "init",
        "bin/a",
        "bin/empty",
        "TRAILER!!!",
    ]
    by_name = {name: (fields, body) for _, name, fields, body in parsed}
    assert stat.S_ISDIR(by_name["bin"][0]["mode"])
    console = by_name["dev/console"][0]
    assert stat.S_ISCHR(console["mode"])
    assert (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    assert by_name["init"] == (by_name["init"][0], INIT)
    assert stat.S_IMODE(by_name["init"][0]["mode"]) == 0o755
    assert stat.S_IMODE(by_name["bin/a"][0]["mode"]) == 0o644
    assert by_name["bin/a"][1] == b"x"
    inodes = [fields["ino"] for _, _, fields, _ in parsed]
    assert len(set(inodes)) == len(inodes)


def test_gnu_cpio_lists_it(tmp_path: Path) -> None:
    path = tmp_path / "initramfs.cpio"
    path.write_bytes(archive())
    listing = subprocess.run(
        [cpio_tool(), "-itv", "-F", str(path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    by_name = {line.split()[-1]: line for line in listing}
    assert sorted(by_name) == ["bin", "bin/a", "bin/empty", "dev", "dev/console", "init"]
    assert by_name["dev/console"].startswith("crw-------")
    assert re.search(r" 5,\s+1 ", by_name["dev/console"])  # major, minor
    assert by_name["bin"].startswith("drwxr-xr-x")
    assert by_name["init"].startswith("-rwxr-xr-x")


def test_gnu_cpio_extracts_it(tmp_path: Path) -> None:
    path = tmp_path / "initramfs.cpio"
    path.write_bytes(archive())
    out = tmp_path / "out"
    out.mkdir()
    # The device node is left out: making it needs root.
    subprocess.run(
        [cpio_tool(), "-idm", "--no-absolute-filenames", "-F", str(path), "bin", "bin/*", "init"],
        cwd=out,
        check=True,
        capture_output=True,
    )
    assert (out / "init").read_bytes() == INIT
    assert stat.S_IMODE((out / "init").stat().st_mode) == 0o755
    assert (out / "bin/a").read_bytes() == b"x"
    assert (out / "bin/empty").read_bytes() == b""
    assert (out / "bin").is_dir()
    assert not (out / "dev/console").exists()
