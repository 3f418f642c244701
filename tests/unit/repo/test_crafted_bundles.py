"""``suture publish`` of crafted bundles: each refused as a bad bundle (exit 50), none signed in.

A manifest is read strictly (deep nesting, NaN and Infinity, huge or
fractional or quoted levels, names and releases with a newline), and the
module must be a live patch ELF of the manifest's release, build id and name.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from suture.cli.main import main
from suture.repo import create
from tests.support.repo import BUILD_A, RELEASE, module_bytes

NAME = "suture_fix_x"


def manifest(ko: bytes, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": 1,
        "name": NAME,
        "level": 5,
        "replace": True,
        "kernel": {"release": RELEASE, "build_id": BUILD_A},
        "objects": [],
        "module": {
            "file": f"{NAME}.ko",
            "sha256": hashlib.sha256(ko).hexdigest(),
            "size": len(ko),
        },
        "cves": ["CVE-2026-9999"],
    }
    data.update(changes)
    return data


def tar(path: Path, manifest_bytes: bytes, module: bytes, ko_name: str = f"{NAME}.ko") -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in (("manifest.json", manifest_bytes), (ko_name, module)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


GOOD = module_bytes(NAME, RELEASE, BUILD_A)


def crafted() -> dict[str, tuple[bytes, bytes]]:
    """name -> (manifest bytes, module bytes)."""

    def doc(**changes: Any) -> bytes:
        return json.dumps(manifest(GOOD, **changes)).encode()

    def other(module: bytes) -> tuple[bytes, bytes]:
        return json.dumps(manifest(module)).encode(), module

    return {
        "deep": (b"[" * 200_000, GOOD),
        "infinity": (doc().replace(b'"level": 5', b'"level": Infinity'), GOOD),
        "nan": (doc().replace(b'"level": 5', b'"level": NaN'), GOOD),
        "float-overflow": (doc().replace(b'"level": 5', b'"level": 1e400'), GOOD),
        "huge-level": (doc(level=10**300), GOOD),
        "float-level": (doc(level=7.9), GOOD),
        "string-level": (doc(level="8"), GOOD),
        "newline-name": (doc(name=NAME + "\n"), GOOD),
        "newline-release": (doc(kernel={"release": RELEASE + "\n", "build_id": BUILD_A}), GOOD),
        "newline-build": (doc(kernel={"release": RELEASE, "build_id": BUILD_A + "\n"}), GOOD),
        "size-string": (doc(module={"file": f"{NAME}.ko", "sha256": "0" * 64, "size": "3"}), GOOD),
        "not-elf": other(b"not a module at all"),
        "not-livepatch": other(GOOD.replace(b"livepatch=Y", b"livepatch=N")),
        "other-release": other(module_bytes(NAME, "6.1.0-57-amd64", BUILD_A)),
        "other-build": other(module_bytes(NAME, RELEASE, "ab" * 20)),
        "other-name": other(module_bytes("suture_fix_y", RELEASE, BUILD_A)),
        "executable": other(GOOD[:16] + b"\x02" + GOOD[17:]),  # e_type EXEC
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crafted") / "repo"
    create.init(root)
    return root


def test_a_well_formed_bundle_is_published(repo: Path, tmp_path: Path) -> None:
    good = tar(tmp_path / "good.bundle", json.dumps(manifest(GOOD)).encode(), GOOD)
    assert (
        main(["publish", str(good), "--repo", str(repo), "--untested", "--channel", "testing"]) == 0
    )


@pytest.mark.parametrize("name", sorted(crafted()))
def test_a_crafted_bundle_is_refused_cleanly(
    name: str, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, module = crafted()[name]
    path = tar(tmp_path / f"{name}.bundle", raw, module)
    before = sorted(p.name for p in (repo / "metadata").iterdir())
    assert main(["--json", "publish", str(path), "--repo", str(repo), "--untested"]) == 50
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == "bundle"
    assert "Traceback" not in err
    assert sorted(p.name for p in (repo / "metadata").iterdir()) == before  # nothing signed
