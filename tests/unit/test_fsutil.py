"""suture.fsutil: atomic writes that a user who can write the folder cannot turn against root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from suture import fsutil


def test_the_mode_is_set_on_the_file_written_never_through_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user swaps the temporary file for a symlink to a root-only file
    # while it is written; a chmod by name would follow the link (finding 10).
    victim = tmp_path / "victim"
    victim.write_text("root secret\n")
    victim.chmod(0o600)
    folder = tmp_path / "prom"
    folder.mkdir()
    real_fsync = os.fsync

    def swap_then_fsync(fd: int) -> None:
        real_fsync(fd)
        for entry in folder.iterdir():
            if entry.name.startswith(".suture.prom."):
                entry.unlink()
                entry.symlink_to(victim)

    monkeypatch.setattr(os, "fsync", swap_then_fsync)
    fsutil.atomic_write(folder / "suture.prom", b"x 1\n", mode=0o644)
    assert victim.stat().st_mode & 0o777 == 0o600


def test_written_files_have_the_mode_asked_for(tmp_path: Path) -> None:
    fsutil.atomic_write(tmp_path / "token", b"sht_x\n", mode=0o600)
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() != 0, reason="the check is for root")
def test_root_refuses_folders_other_users_control(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        fsutil.check_trusted_folder(theirs)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by its group or by others"):
        fsutil.check_trusted_folder(shared)
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace our files
    fsutil.check_trusted_folder(shared)
    fsutil.check_trusted_folder(tmp_path / "not" / "yet")  # its nearest parent is checked
