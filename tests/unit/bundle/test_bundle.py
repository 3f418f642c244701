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
        ({"level": 0}, "is not from 1"),
        ({"build_id": "xyz"}, "is not 16 to 128 hex digits"),
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


# --- the `test` field: the result of `suture test` -------------------------------


def lab_test(**changes: object) -> bundle.LabTest:
    base = bundle.LabTest(
        result="passed",
        release="6.1.0-47-amd64",
        build_id="ab" * 20,
        at="2026-12-03T10:00:00Z",
        tester="suture 0.1.0",
        steps=(
            bundle.LabStep("before", ok=True, expect="fail", exit=1, seconds=0.5),
            bundle.LabStep("apply", ok=True, seconds=2.0),
            bundle.LabStep("patched", ok=True, expect="pass", exit=0, detail="ok\n"),
            bundle.LabStep("after", ok=True, expect="fail", exit=1),
        ),
        seconds=61.5,
        script="check.sh",
        script_sha256="cd" * 32,
        load="stress-ng --cpu 1",
        kernel_log_sha256="ef" * 32,
        kernel_log=("livepatch: enabling patch 'suture_fix_1'",),
        taint="OEK",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_test_result_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    bundle.write(path, manifest(test=lab_test()), MODULE)
    got = bundle.read_manifest(path)
    assert got.test == lab_test()
    assert got == manifest(test=lab_test())
    data = json.loads(got.to_json())
    assert data["format"] == 1 and data["test"]["format"] == 1
    assert data["test"]["kernel"] == {"release": "6.1.0-47-amd64", "build_id": "ab" * 20}
    assert data["test"]["script"] == {"name": "check.sh", "sha256": "cd" * 32}
    without_script = manifest(test=lab_test(script="", script_sha256=""))
    assert json.loads(without_script.to_json())["test"]["script"] is None


def test_an_untested_manifest_has_no_test_field() -> None:
    # Bundles built before tests were recorded keep their bytes.
    assert "test" not in json.loads(manifest().to_json())


def test_a_newer_test_format_is_ignored_not_refused(tmp_path: Path) -> None:
    # Agents never need the result: a newer one must not make them refuse the bundle.
    data = json.loads(manifest(test=lab_test()).to_json())
    data["test"]["format"] = 2
    path = tmp_path / "b.bundle"
    _tar(path, [("manifest.json", json.dumps(data).encode()), ("suture_fix_1.ko", MODULE)])
    assert bundle.read_manifest(path).test is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"result": "maybe"}, "not one of passed, failed"),
        ({"build_id": ""}, "names no kernel build"),
        ({"kernel_log_sha256": "xyz"}, "not 64 hex digits"),
        ({"reason": "patched: exit 1"}, "says passed, but a step failed"),
    ],
)
def test_invalid_test_result(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(BundleError, match=message):
        bundle.write(tmp_path / "b", manifest(test=lab_test(**change)), MODULE)


def test_a_malformed_test_result_is_refused(tmp_path: Path) -> None:
    data = json.loads(manifest(test=lab_test()).to_json())
    del data["test"]["kernel"]
    path = tmp_path / "b.bundle"
    _tar(path, [("manifest.json", json.dumps(data).encode()), ("suture_fix_1.ko", MODULE)])
    with pytest.raises(BundleError, match="test result is malformed"):
        bundle.read_manifest(path)


def test_record_test_rewrites_the_manifest_with_the_same_module(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    bundle.write(path, manifest(), MODULE)
    failed = lab_test(result="failed", reason="patched: exit 1")
    new = bundle.record_test(path, failed, module_sha256=manifest().module_sha256)
    assert new == manifest(test=failed) == bundle.read_manifest(path)
    with bundle.opened(path) as (_, ko):
        assert ko.read_bytes() == MODULE
    # A new result replaces the old one.
    bundle.record_test(path, lab_test(), module_sha256=manifest().module_sha256)
    assert bundle.read_manifest(path).test == lab_test()
    assert [p.name for p in tmp_path.iterdir()] == ["b.bundle"]  # no temporary file left


def test_record_test_refuses_a_bundle_that_changed_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    bundle.write(path, manifest(), MODULE)
    before = path.read_bytes()
    with pytest.raises(BundleError, match="changed while it was tested"):
        bundle.record_test(path, lab_test(), module_sha256="00" * 32)
    assert path.read_bytes() == before


def test_a_pass_holds_only_for_its_own_build() -> None:
    test = lab_test()
    assert test.holds_for("6.1.0-47-amd64", "ab" * 20)
    assert not test.holds_for("6.1.0-47-amd64", "cd" * 20)
    assert not test.holds_for("6.1.0-48-amd64", "ab" * 20)
    assert not lab_test(result="failed", reason="x").holds_for("6.1.0-47-amd64", "ab" * 20)
