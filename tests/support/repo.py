"""Helpers for the repository and update tests (no tests here).

Bundles are made around stand-in modules: tiny relocatable ELF files whose
``.modinfo`` says what a live patch's says (publish checks that), with no
code, never loaded. Repositories are real ones on disk, and agents reach them
through :class:`ServingFetcher`: python-tuf's fetcher interface over the
repository folder, where a test can replace or remove any file it serves,
the way a hostile mirror would (python-tuf's tests/repository_simulator.py
idea, on top of the real files).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata

from suture import bundle
from suture.agent import trust
from suture.bundle import LabStep, LabTest, Manifest
from suture.repo.keys import Keyring
from suture.repo.layout import Layout
from suture.repo.metadata import load, sign

RELEASE = "6.1.0-56-amd64"
BUILD_A = "0123456789abcdef0123456789abcdef01234567"
BUILD_B = "fedcba9876543210fedcba9876543210fedcba98"
NAME = "suture_fix_1"


def make_bundle(
    folder: Path,
    level: int,
    *,
    build_id: str = BUILD_A,
    release: str = RELEASE,
    name: str = NAME,
    unpatched: tuple[str, ...] = (),
    test: LabTest | str | None = "passed",
) -> Path:
    """A valid bundle of ``level`` for that build, around a fake module.

    ``test``: the lab test result it carries; by default a pass on its own
    build (publish requires one), "failed" a failure there, None no result.
    """
    module = module_bytes(name, release, build_id, note=f"L{level}")
    manifest = Manifest(
        name=name,
        release=release,
        build_id=build_id,
        level=level,
        module_file=f"{name}.ko",
        module_sha256=hashlib.sha256(module).hexdigest(),
        module_size=len(module),
        cves=(f"CVE-2026-{1000 + level}",),
        unpatched=unpatched,
        test=lab_test(release, build_id, test) if isinstance(test, str) else test,
    )
    path = folder / f"{name}-{release}-{build_id[:8]}-L{level}.bundle"
    bundle.write(path, manifest, module)
    return path


def module_bytes(name: str, release: str, build_id: str, *, note: str = "") -> bytes:
    """A stand-in live patch module: an ELF64 relocatable file with only ``.modinfo``.

    What publish checks is there (``livepatch=Y``, the name, the vermagic's
    release, ``suture_build_id``); ``note`` makes modules of different levels
    differ.
    """
    entries = [
        f"vermagic={release} SMP preempt mod_unload modversions ",
        f"name={name}",
        "livepatch=Y",
        f"suture_build_id={build_id}",
        f"description=stand-in {note}",
    ]
    modinfo = b"".join(e.encode() + b"\0" for e in entries)
    names = b"\0.modinfo\0.shstrtab\0"
    body = modinfo + names
    shoff = (64 + len(body) + 7) & ~7
    # e_ident, type REL, machine x86-64, version, entry, phoff, shoff, flags,
    # ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    header = struct.pack(
        "<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 1, 62, 1, 0, 0, shoff, 0,
        64, 0, 0, 64, 3, 2,
    )  # fmt: skip
    # name, type, flags, addr, offset, size, link, info, align, entsize
    section = struct.Struct("<IIQQQQIIQQ")
    sections = (
        bytes(64)
        + section.pack(1, 1, 2, 0, 64, len(modinfo), 0, 0, 1, 0)  # .modinfo, PROGBITS, ALLOC
        + section.pack(10, 3, 0, 0, 64 + len(modinfo), len(names), 0, 0, 1, 0)  # .shstrtab
    )
    return (header + body).ljust(shoff, b"\0") + sections


def user_object(*names: str, note: str = "") -> bytes:
    """A stand-in userspace patch object: an ELF64 ``ET_REL`` whose code defines ``names``.

    What publish checks of a userspace bundle is there (the patcher can parse
    it, and it defines the manifest's functions); ``note`` makes levels differ.
    """
    from suture.builder import elfwrite as ew  # noqa: PLC0415 - only the tests that need it

    code = b"\xc3" + note.encode()
    strtab = ew.StringTable()
    syms = [ew.OutSymbol("", 3, 1)]
    syms += [ew.OutSymbol(n, (1 << 4) | 2, 1, 0, 1) for n in names]  # global functions
    return ew.write([
        ew.OutSection(".text", ew.SHT.PROGBITS, 6, code, 16),
        ew.OutSection(".symtab", ew.SHT.SYMTAB, 0, ew.pack_symbols(syms, strtab), 8, 24,
                      link=3, info=2),
        ew.OutSection(".strtab", ew.SHT.STRTAB, 0, bytes(strtab.data)),
    ])  # fmt: skip


def lab_test(release: str, build_id: str, result: str = "passed") -> LabTest:
    """A ``suture test`` result on that build, as the tester writes it."""
    passed = result == "passed"
    return LabTest(
        result=result,
        release=release,
        build_id=build_id,
        at="2026-12-03T10:00:00Z",
        tester="suture 0.1.0",
        steps=(
            LabStep("before", ok=True, expect="fail", exit=1),
            LabStep("apply", ok=True),
            LabStep("patched", ok=passed, expect="pass", exit=0 if passed else 1),
            LabStep("unload", ok=True),
            LabStep("after", ok=True, expect="fail", exit=1),
            LabStep("kernel-log", ok=True),
        ),
        script="check.sh",
        script_sha256="cd" * 32,
        kernel_log_sha256="ef" * 32,
        kernel_log=("livepatch: enabling patch 'x'",),
        taint="OEK",
        reason="" if passed else "patched: the test script exited 1, it must pass",
    )


def signed_as(repo: Path, md: Metadata[Any], role: str) -> bytes:
    """``md`` re-signed with the repository's own key for ``role`` (an insider's forgery)."""
    layout = Layout(repo)
    return sign(md, role, load(layout).root.signed, Keyring(layout))


def metadata_file(repo: Path, role: str, version: int | None = None) -> Path:
    """A metadata file of the repository."""
    return Layout(repo).role_file(role, version)


def remote(repo: Path, root_version: int = 1) -> trust.Remote:
    """The repository as an agent knows it: a URL and its trusted root of that version."""
    return trust.Remote(
        url=repo.as_uri(), trusted_root=metadata_file(repo, "root", root_version).read_bytes()
    )


class ServingFetcher(trust.FileFetcher):
    """Serves the repository folder; ``replace`` substitutes files, None answers 404.

    Keys of ``replace`` are paths relative to the repository, e.g.
    ``metadata/timestamp.json``. Every URL asked for is kept in ``asked``.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.replace: dict[str, bytes | None] = {}
        self.asked: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = url.removeprefix(self.repo.as_uri() + "/")
        self.asked.append(rel)
        if rel in self.replace:
            data = self.replace[rel]
            if data is None:
                raise tuf_errors.DownloadHTTPError(f"{rel} withheld", 404)
            return iter([data])
        return super()._fetch(url)
