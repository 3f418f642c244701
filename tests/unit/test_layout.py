"""The test suite's own shape: tests/unit mirrors the package, and no test module imports another.

Shared fakes and helpers live in tests/support (and tests/builds.py,
tests/kmod.py, tests/fleet_sim.py); a test module that imported another
would run that module's tests' set-up and couple their fixtures.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_test_module_imports_another_or_a_conftest() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in _imported(path):
            last = name.rsplit(".", 1)[-1]
            if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_unit_tests_mirror_the_package_layout() -> None:
    packages = {p.name for p in (ROOT / "suture").iterdir() if (p / "__init__.py").exists()}
    folders = {p.name for p in (TESTS / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= packages, folders - packages
    modules = {p.stem for p in (ROOT / "suture").glob("*.py")}
    loose = {p.stem.removeprefix("test_") for p in (TESTS / "unit").glob("test_*.py")}
    # Top-level modules (suture/errors.py) are tested at the top, and so are the
    # repository's own files (the layout, packaging/).
    assert loose - modules <= {"layout", "packaging"}, loose - modules


def test_package_fetching_stays_apart_from_the_qemu_runner() -> None:
    # suture.lab (QEMU) uses suture.packages (apt, kernels, sources); never the other way.
    offenders = [
        f"{path.name} imports {name}"
        for path in sorted((ROOT / "suture" / "packages").glob("*.py"))
        for name in _imported(path)
        if name == "suture.lab" or name.startswith("suture.lab.")
    ]
    assert not offenders, offenders
