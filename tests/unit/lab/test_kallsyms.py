"""suture.lab.kallsyms: kallsyms at the image's own addresses, never those of a KASLR boot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.errors import LabError
from suture.lab import guest, kallsyms
from suture.packages.kernels import KernelTree

LINKED = 0x1000000  # where the fake image's .text is linked


def kallsyms_at(text: int) -> str:
    return (
        "0000000000000000 A fixed_percpu_data\n"
        f"{text:016x} T _stext\n{text:016x} T _text\n{text + 0x40:016x} t cmdline_proc_show\n"
    )


@pytest.fixture
def image(tmp_path: Path) -> KernelTree:
    """A build whose vmlinux is a small ELF with .text at LINKED."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to link the fake image")
    tree = KernelTree("6.12.118+deb13-amd64", "6.12.118-1", tmp_path / "k")
    tree.vmlinux.parent.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "start.c"
    src.write_text("void _start(void) { for (;;) ; }\n")
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-no-pie", f"-Wl,-Ttext={LINKED:#x}", "-o",
         str(tree.vmlinux), str(src)],
        check=True,
    )  # fmt: skip
    return tree


def test_text_address() -> None:
    assert kallsyms.text_address(kallsyms_at(0xFFFFFFFF9A200000)) == 0xFFFFFFFF9A200000
    assert kallsyms.text_address("ffffffff81000000 T _stext\n") is None


def test_the_boot_is_without_kaslr_and_a_moved_cache_is_read_again(
    image: KernelTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file written from a bzImage boot that KASLR moved (6.12.118 on a build host).
    cached = kallsyms.cache_path(image.release)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(kallsyms_at(0xFFFFFFFF9A200000))
    boots: list[str] = []

    def fake_run(tree: KernelTree, argv: list[str], cfg: guest.GuestConfig, **kw: object) -> object:
        boots.append(cfg.extra_cmdline)
        assert cfg.output_dir is not None
        (cfg.output_dir / "kallsyms").write_text(kallsyms_at(LINKED))
        return guest.GuestResult(returncode=0, seconds=1.0, console="")

    monkeypatch.setattr(guest, "run", fake_run)
    assert kallsyms.text_address(kallsyms.GuestKallsyms().kallsyms_text(image)) == LINKED
    assert boots == ["nokaslr"]
    assert kallsyms.text_address(cached.read_text()) == LINKED
    kallsyms.GuestKallsyms().kallsyms_text(image)  # from the cache now
    assert boots == ["nokaslr"]


def test_a_boot_that_is_still_moved_is_refused_and_not_cached(
    image: KernelTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(tree: KernelTree, argv: list[str], cfg: guest.GuestConfig, **kw: object) -> object:
        assert cfg.output_dir is not None
        (cfg.output_dir / "kallsyms").write_text(kallsyms_at(0xFFFFFFFF9A200000))
        return guest.GuestResult(returncode=0, seconds=1.0, console="")

    monkeypatch.setattr(guest, "run", fake_run)
    with pytest.raises(LabError, match="not at the image's addresses"):
        kallsyms.GuestKallsyms().kallsyms_text(image)
    assert not kallsyms.cache_path(image.release).exists()
