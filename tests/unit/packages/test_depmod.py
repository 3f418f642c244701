"""modules.dep written for images whose modules are under usr/lib/modules (Debian 13)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from suture.packages.kernels import ensure_depmod
from tests.support.kernel import RELEASE, VERMAGIC, compile_module

pytestmark = pytest.mark.skipif(shutil.which("depmod") is None, reason="needs depmod (kmod)")


def _tree(root: Path, where: str) -> Any:
    modules = root / where / RELEASE
    (modules / "kernel" / "net").mkdir(parents=True)
    compile_module(modules / "kernel" / "net" / "foo.ko", [f"vermagic={VERMAGIC}", "name=foo"])
    return SimpleNamespace(root=root, release=RELEASE, modules_dir=modules)


@pytest.mark.parametrize("where", ["lib/modules", "usr/lib/modules"], ids=["debian12", "debian13"])
def test_modules_dep_written(tmp_path: Path, where: str) -> None:
    tree = _tree(tmp_path, where)
    ensure_depmod(tree)
    dep = tree.modules_dir / "modules.dep"
    assert dep.exists()
    assert "kernel/net/foo.ko:" in dep.read_text()
    assert not (tmp_path / "lib" / "modules" / RELEASE / "modules.dep").is_symlink()
