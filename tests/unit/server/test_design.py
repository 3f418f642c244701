"""The server package's shape, checked: the rules a newcomer may rely on.

- no import cycle between the server's modules (routes register nowhere
  behind anyone's back);
- no underscore name imported across modules;
- SQL only in suture/server/db (the store and the queries);
- wall-clock time only from the injected clock (durations may use monotonic clocks);
- the agent never loads the server's stack.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import suture

PACKAGE = Path(suture.__file__).parent
SERVER = PACKAGE / "server"
SQL = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|CREATE TABLE|ALTER TABLE)\b")


def modules(root: Path) -> dict[str, ast.Module]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = ast.parse(path.read_text())
    return found


def imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_no_import_cycle_in_the_server() -> None:
    mods = modules(SERVER)
    graph: dict[str, set[str]] = {}
    for name, tree in mods.items():
        deps = set()
        for module, names in imports(tree):
            for target in (module, *(f"{module}.{n}" for n in names)):
                if target in mods and target != name:
                    deps.add(target)
        graph[name] = deps
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph[node]):
            assert seen.get(dep) != 1, f"import cycle: {' -> '.join([*path, node, dep])}"
            if dep not in seen:
                visit(dep, [*path, node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def test_no_underscore_name_is_imported_across_modules() -> None:
    for name, tree in modules(PACKAGE).items():
        for module, names in imports(tree):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not (module.startswith("suture") and private), f"{name}: {module} {private}"


def _strings(tree: ast.Module) -> list[str]:
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_sql_is_only_in_the_store() -> None:
    for name, tree in modules(SERVER).items():
        if name.startswith("suture.server.db"):
            continue
        found = [s for s in _strings(tree) if SQL.search(s) and not s.startswith(("\n", " "))]
        # Docstrings may name a statement; code may not hold one.
        code = [s for s in found if not _is_docstring(tree, s)]
        assert not code, f"{name} holds SQL: {code[0][:80]}"


def _is_docstring(tree: ast.Module, text: str) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and ast.get_docstring(node, clean=False) == text
        ):
            return True
    return False


def test_wall_clock_time_comes_from_the_injected_clock() -> None:
    reads = {("time", "time"), ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}
    for name, tree in modules(SERVER).items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in reads
            ):
                raise AssertionError(f"{name}:{node.lineno} reads the wall clock itself")


def test_the_agent_loads_no_server_stack() -> None:
    code = (
        "import sys\n"
        "import suture.agent.cycle, suture.agent.daemon, suture.agent.report, suture.cli.main\n"
        "from suture.cli.main import build_parser\n"
        "build_parser().parse_args(['update'])\n"
        "heavy = ('starlette', 'uvicorn', 'pydantic', 'jinja2', 'psycopg', 'anyio', 'httptools')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
        " or m.startswith('suture.server')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
