from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from suture import bundle
from suture.errors import BundleError

MODULE = b"\x7fELF fake module bytes"


def manifest(**changes: object) -> bundle.Manifest:
    base = bundle.Manifest(
        name="suture_fix_1",
        release="6.1.0-47-amd64",
        build_id="ab" * 20,
        level=1,
        module_file="suture_fix_1.ko",
        module_sha256=hashlib.sha256(MODULE).hexdigest(),
        module_size=len(MODULE),
        objects=(bundle.PatchedObject("vmlinux", (bundle.Function("cmdline_proc_show", 0, 49),)),),
        cves=("CVE-2026-1",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    bundle.write(path, manifest(), MODULE)
    assert bundle.is_bundle(path)
    got = bundle.read_manifest(path)
    assert got == manifest()
    assert got.functions == ("cmdline_proc_show",)
    with bundle.opened(path) as (man, ko):
        assert ko.read_bytes() == MODULE and ko.name == man.module_file
    assert not ko.exists()


def test_several_objects_round_trip(tmp_path: Path) -> None:
    objects = (
        bundle.PatchedObject(
            "vmlinux",
            (bundle.Function("cmdline_proc_show", 0, 49), bundle.Function("version_proc_show")),
        ),
        bundle.PatchedObject("mrp", (bundle.Function("mrp_rcv", 0, 300, "ab" * 32),)),
    )
    path = tmp_path / "b.bundle"
    bundle.write(path, manifest(objects=objects), MODULE)
    got = bundle.read_manifest(path)
    assert got.objects == objects
    assert got.functions == ("cmdline_proc_show", "version_proc_show", "mrp_rcv")


def test_object_listed_twice_is_refused(tmp_path: Path) -> None:
    twice = manifest().objects * 2
    with pytest.raises(BundleError, match="list one twice"):
        bundle.write(tmp_path / "b", manifest(objects=twice), MODULE)


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    bundle.write(tmp_path / "a", manifest(), MODULE)
    bundle.write(tmp_path / "b", manifest(), MODULE)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_manifest_must_describe_module(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not describe"):
        bundle.write(tmp_path / "b", manifest(), MODULE + b"x")
    assert not (tmp_path / "b").exists()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tampered_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    _tar(path, [("manifest.json", manifest().to_json()), ("suture_fix_1.ko", b"evil" + MODULE)])
    with pytest.raises(BundleError, match="does not match"):
        bundle.read_manifest(path)


def test_extra_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    _tar(
        path,
        [("manifest.json", manifest().to_json()), ("suture_fix_1.ko", MODULE), ("x", b"")],
    )
    with pytest.raises(BundleError, match="one module"):
        bundle.read_manifest(path)


def test_other_format_is_refused(tmp_path: Path) -> None:
    data = json.loads(manifest().to_json())
    data["format"] = 99
    path = tmp_path / "b.bundle"
    _tar(path, [("manifest.json", json.dumps(data).encode()), ("suture_fix_1.ko", MODULE)])
    with pytest.raises(BundleError, match="format 99"):
        bundle.read_manifest(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad-Name"}, "not a kernel module name"),
        ({"level": 0}, "below 1"),
        ({"build_id": "xyz"}, "not hex"),
        ({"module_file": "other.ko"}, "is not suture_fix_1.ko"),
    ],
)
def test_invalid_manifest(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(BundleError, match=message):
        bundle.write(tmp_path / "b", manifest(**change), MODULE)


def test_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "x.ko"
    path.write_bytes(MODULE)
    assert not bundle.is_bundle(path)
    with pytest.raises(BundleError):
        bundle.read_manifest(path)
